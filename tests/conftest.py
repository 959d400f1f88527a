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
