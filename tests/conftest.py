"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray (2 CPUs, no dashboard) shared by every test that asks for it:
    ``address="local"`` so that it never attaches to a cluster someone else started."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray


@pytest.fixture
def s3_endpoint(monkeypatch):
    """An S3-compatible server (moto) on loopback with a bucket named 'bucket'."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bucket")
        yield endpoint
    finally:
        server.stop()
