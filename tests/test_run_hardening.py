"""A run against a real (embedded) Ray: an unreachable cluster is refused in seconds,
the embedded Ray listens on loopback only, and Ctrl-C on a sweep tells the truth and
leaves a store that validates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from study.store import Store

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "search_spaces" / "quickstart.yaml")


def cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "study.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_address_is_refused_within_20_seconds_and_creates_no_store(tmp_path, address):
    store = tmp_path / "results"
    started = time.monotonic()
    result = cli("run", QUICKSTART, "--store", str(store), "--address", address, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"oodstudy: --address {address}: no Ray cluster answers there")
    assert "ray start --head" in lines[0] and "Traceback" not in result.stderr
    assert elapsed < 20, elapsed
    assert not store.exists()


@pytest.mark.slow
def test_an_address_that_answers_but_is_no_ray_cluster_is_refused_within_20_seconds(tmp_path):
    """A port that accepts TCP but does not speak gRPC (here a plain HTTP server) would
    hang ray.init for minutes; the gRPC handshake is checked first."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        started = time.monotonic()
        result = cli("run", QUICKSTART, "--store", str(tmp_path / "results"), "--address", address, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr
    assert last.startswith(f"oodstudy: --address {address}: something answers there, but not gRPC"), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "results").exists()
    assert elapsed < 20, elapsed


PORTS_SCRIPT = textwrap.dedent(
    """
    import json, urllib.error, urllib.request
    from study.tune.runner import connect_ray
    dashboard = connect_ray(None)
    import ray, psutil  # psutil ships with ray (ray/thirdparty_files)
    me = psutil.Process()
    pids = {p.pid for p in [me] + me.children(recursive=True)}
    listening = sorted({(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
                        if c.status == psutil.CONN_LISTEN and c.pid in pids})
    try:
        code = urllib.request.urlopen(f"http://{dashboard}/api/cluster_status", timeout=10).status
    except urllib.error.HTTPError as err:
        code = err.code
    print(json.dumps({"listening": listening, "dashboard": dashboard, "dashboard_unauthenticated": code}))
    ray.shutdown()
    """
)


@pytest.mark.slow
def test_no_socket_of_the_embedded_ray_listens_beyond_loopback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", PORTS_SCRIPT], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    listening = report["listening"]
    assert len(listening) >= 5  # GCS, raylet, object manager, agents, dashboard, workers
    wide = [(ip, port) for ip, port in listening if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert wide == [], wide
    assert report["dashboard"].startswith("127.0.0.1:")
    assert report["dashboard_unauthenticated"] in (401, 403)  # token authentication on the loopback dashboard


def sweep_spec(tmp_path: Path) -> Path:
    spec = {
        "name": "interrupted",
        "base": {
            "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32, "train_fraction": 0.3},
            "model": {"size": "nano", "n_layer": 1},
            "train": {"steps": 3000, "eval_every": 20, "checkpoint_every": 20, "batch_size": 16, "log_every": 20},
        },
        "grid": {"task.digits": [1, 2]},
        "tune": {"metric": "id_exact_match", "mode": "max", "trials_per_grid_point": 2},
        "resources": {"cpus": 1},
        "max_concurrent": 1,
        "store": str(tmp_path / "results"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_ctrl_c_on_a_sweep_says_what_is_stored_and_how_to_resume(tmp_path):
    spec = sweep_spec(tmp_path)
    store = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "run", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not list((store / "curves").glob("study=*/*.parquet")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        assert list((store / "curves").glob("study=*/*.parquet")), "no trial reported in time"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "oodstudy: interrupted: study interrupted has " in err
    assert f"oodstudy resume interrupted --store {store}" in err
    assert "results in" not in out  # nothing claims the study is complete
    finished = int(err.split("interrupted: study interrupted has ")[1].split("/")[0])
    assert finished < 4
    # what is in the store is whole: validate passes, and the rows are there
    assert cli("store", "validate", "--store", str(store), timeout=60).returncode == 0
    assert len(Store(str(store), create=False).frame("curves", study="interrupted")) > 0


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_during_a_trial_exits_with_one_line_and_no_traceback(tmp_path, stop):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "trial", "--set", "train.steps=1000000", "--set", "train.log_every=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        first = b""
        while b"step " not in first:  # training has started
            chunk = proc.stderr.read1(256)
            assert chunk, proc.communicate()
            first += chunk
        proc.send_signal(stop)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = (first + rest).decode()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("oodstudy: interrupted (Ctrl-C or SIGTERM) during `trial`")
