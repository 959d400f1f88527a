"""A real Ray cluster on this machine (cluster/local.sh: a head and a worker node, token auth on):
the dashboard refuses requests without the token, the nodes export metrics on their known ports,
and `local.sh down` leaves no process of the cluster behind. One cluster serves the whole module;
the last test stops it."""

import json
import os
import random
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL_SH = REPO / "cluster" / "local.sh"

pytestmark = pytest.mark.slow


@dataclass
class LocalCluster:
    state: Path
    env: dict[str, str]  # what local.sh reads: the state dir and the ports
    dashboard: str
    gcs_port: int
    metrics_ports: list[int]

    @property
    def token(self) -> str:
        return (self.state / "auth_token").read_text().strip()

    def client_env(self) -> dict[str, str]:
        """The environment of a client of this cluster (what `source $(local.sh env)` gives)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_ADDRESS=self.dashboard, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.state / "auth_token"))
        env["PYTHONPATH"] = str(REPO)
        return env

    def local_sh(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(LOCAL_SH), *args], env=self.env, capture_output=True, text=True, timeout=timeout)


def free_port_block(size: int) -> int:
    """The first port of `size` consecutive ports nobody listens on (checked, then used at once)."""
    for _ in range(50):
        base = random.randrange(20000, 30000 - size)
        try:
            for port in range(base, base + size, 7):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports")


def marked_pids(state: Path) -> list[int]:
    """PIDs of live processes that carry the cluster's marker variable (what local.sh down stops)."""
    marker = f"OODSTUDY_LOCAL_CLUSTER={state}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


def pids_using(path: Path) -> list[int]:
    """PIDs of live processes whose command line names a path under `path` (Ray's temp dirs)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(path).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def http_status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def cluster():
    state = Path(tempfile.mkdtemp(prefix="ood-", dir="/tmp"))  # short: Ray's unix sockets live under it
    base = free_port_block(1400)
    env = dict(os.environ, OODSTUDY_CLUSTER_DIR=str(state), OODSTUDY_PORT_BASE=str(base),
               OODSTUDY_GCS_PORT=str(base + 1300), OODSTUDY_DASHBOARD_PORT=str(base + 1301),
               OODSTUDY_METRICS_PORT=str(base + 1310), PYTHONPATH=str(REPO))
    handle = LocalCluster(state, env, f"http://127.0.0.1:{base + 1301}", base + 1300, [base + 1310, base + 1311])
    up = handle.local_sh("up", "1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield handle
    finally:
        handle.local_sh("down")


def test_dashboard_answers_401_without_the_token_403_with_a_wrong_one_200_with_it(cluster):
    jobs_api = cluster.dashboard + "/api/jobs/"
    assert http_status(jobs_api) == 401
    assert http_status(jobs_api, token="0" * 64) == 403
    assert http_status(jobs_api, token=cluster.token) == 200
    assert oct((cluster.state / "auth_token").stat().st_mode & 0o777) == "0o600"


def test_cluster_has_a_head_and_a_worker_each_with_its_own_cpus(cluster):
    request = urllib.request.Request(cluster.dashboard + "/nodes?view=summary", headers={"Authorization": f"Bearer {cluster.token}"})
    nodes = json.load(urllib.request.urlopen(request, timeout=10))["data"]["summary"]
    alive = [n for n in nodes if n["raylet"]["state"] == "ALIVE"]
    assert len(alive) == 2
    assert sorted(n["raylet"]["isHeadNode"] for n in alive) == [False, True]
    assert [n["raylet"]["resourcesTotal"]["CPU"] for n in alive] == [1.0, 1.0]


def test_every_node_exports_prometheus_metrics_on_its_known_port(cluster):
    for port in cluster.metrics_ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert b"# TYPE" in response.read()


def test_the_cluster_address_is_written_only_under_its_own_temp_dir(cluster):
    # a plain ray.init() reads /tmp/ray/ray_current_cluster; this cluster never writes there
    assert (cluster.state / "node0" / "ray_current_cluster").read_text().endswith(f":{cluster.gcs_port}")
    default = Path("/tmp/ray/ray_current_cluster")
    assert not default.exists() or not default.read_text().endswith(f":{cluster.gcs_port}")


def test_status_lists_the_nodes_and_a_second_up_is_refused(cluster):
    status = cluster.local_sh("status")
    assert status.returncode == 0
    assert "node0: running" in status.stdout and "node1: running" in status.stdout
    again = cluster.local_sh("up", "1")
    assert again.returncode == 2 and "already running" in again.stderr


def test_down_leaves_no_process_of_the_cluster_behind(cluster):
    assert len(marked_pids(cluster.state)) >= 8  # gcs, raylets, dashboard, agents, ...
    down = cluster.local_sh("down", timeout=90)
    assert down.returncode == 0, down.stderr
    assert marked_pids(cluster.state) == []
    assert pids_using(cluster.state) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(cluster.dashboard, timeout=5)
    assert "no local cluster running" in cluster.local_sh("status").stdout
