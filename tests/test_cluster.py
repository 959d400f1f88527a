"""A real Ray cluster on this machine (cluster/local.sh: a head and a worker node, token auth on):
the dashboard refuses requests without the token, the nodes export metrics on their known ports,
`oodstudy submit --wait` runs a study to success while its gauges reach the head's metrics
endpoint, the Prometheus `local.sh up` starts answers every panel of the Grafana dashboard with
the study's series, a real browser finds the job on the dashboard's Jobs page, and `local.sh down`
leaves no process of the cluster behind. One cluster serves the whole module; the last test
stops it."""

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from study.config import grid_point_id, load_sweep_spec
from study.store import Store

REPO = Path(__file__).resolve().parents[1]
LOCAL_SH = REPO / "cluster" / "local.sh"
GRAFANA_DASHBOARD = REPO / "cluster" / "grafana" / "oodstudy.json"
PROMETHEUS = "/usr/bin/prometheus"  # Debian's (apt-get install prometheus); local.sh up starts it

pytestmark = pytest.mark.slow


@dataclass
class LocalCluster:
    state: Path
    env: dict[str, str]  # what local.sh reads: the state dir and the ports
    dashboard: str
    gcs_port: int
    metrics_ports: list[int]
    s3_endpoint: str  # an S3-compatible server (moto) every node reaches, with a bucket "bucket"
    prometheus: str  # where `local.sh up` starts Prometheus (when one is installed)
    submitted: list[str] = field(default_factory=list)  # submission ids of the studies run here
    stores: dict[str, Path] = field(default_factory=dict)  # study -> its store, once it succeeded

    @property
    def token(self) -> str:
        return (self.state / "auth_token").read_text().strip()

    def client_env(self) -> dict[str, str]:
        """The environment of a client of this cluster (what `source $(local.sh env)` gives)."""
        env = {k: v for k, v in self.env.items() if not k.startswith(("RAY_", "OODSTUDY_"))}
        env.update(
            RAY_ADDRESS=self.dashboard, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.state / "auth_token")
        )
        env["PYTHONPATH"] = str(REPO)
        return env

    def local_sh(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(LOCAL_SH), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )


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


def get_json(url: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def cluster():
    import boto3
    from moto.server import ThreadedMotoServer

    state = Path(tempfile.mkdtemp(prefix="ood-", dir="/tmp"))  # short: Ray's unix sockets live under it
    base = free_port_block(1400)
    # every node, worker and job driver inherits the environment of `local.sh up`
    env = dict(
        os.environ,
        OODSTUDY_CLUSTER_DIR=str(state),
        OODSTUDY_PORT_BASE=str(base),
        OODSTUDY_GCS_PORT=str(base + 1300),
        OODSTUDY_DASHBOARD_PORT=str(base + 1301),
        OODSTUDY_METRICS_PORT=str(base + 1310),
        OODSTUDY_PROMETHEUS_PORT=str(base + 1320),  # past the head's and the worker's ports (base + 1311)
        OODSTUDY_METRICS_INTERVAL_MS="1000",
        PYTHONPATH=str(REPO),  # the job drivers import this checkout
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RAY_ADDRESS"):
        env.pop(key, None)
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket="bucket")
    handle = LocalCluster(
        state,
        env,
        f"http://127.0.0.1:{base + 1301}",
        base + 1300,
        [base + 1310, base + 1311],
        endpoint,
        prometheus=f"http://127.0.0.1:{base + 1320}",
    )
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({k: env[k] for k in saved})  # this process reads the S3 store too
    try:
        up = handle.local_sh("up", "1")
        assert up.returncode == 0, up.stdout + up.stderr
        yield handle
    finally:
        down = handle.local_sh("down")
        s3.stop()
        if down.returncode == 0:  # keep the nodes' logs only when something was left running
            shutil.rmtree(state, ignore_errors=True)
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def test_dashboard_answers_401_without_the_token_403_with_a_wrong_one_200_with_it(cluster):
    jobs_api = cluster.dashboard + "/api/jobs/"
    assert http_status(jobs_api) == 401
    assert http_status(jobs_api, token="0" * 64) == 403
    assert http_status(jobs_api, token=cluster.token) == 200
    assert oct((cluster.state / "auth_token").stat().st_mode & 0o777) == "0o600"


def test_cluster_has_a_head_and_a_worker_each_with_its_own_cpus(cluster):
    request = urllib.request.Request(
        cluster.dashboard + "/nodes?view=summary", headers={"Authorization": f"Bearer {cluster.token}"}
    )
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
    if Path(PROMETHEUS).exists():
        assert f"  Prometheus: {cluster.prometheus} (pid " in status.stdout
    again = cluster.local_sh("up", "1")
    assert again.returncode == 2 and "already running" in again.stderr


TINY_STUDY = {
    "name": "cluster_e2e",
    "base": {
        "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32, "train_fraction": 0.3},
        "model": {"size": "nano", "n_layer": 1},
        "train": {"steps": 300, "eval_every": 50, "checkpoint_every": 150, "batch_size": 16, "log_every": 30},
    },
    "grid": {"task.digits": [1, 2]},
    "tune": {
        "metric": "id_exact_match",
        "mode": "max",
        "trials_per_grid_point": 1,
        "params": {"train.lr": {"type": "loguniform", "low": 1e-3, "high": 3e-3}},
    },
    "resources": {"cpus": 1},
    "max_concurrent": 2,
}
GAUGE_LINE = re.compile(r"^ray_(oodstudy_\w+)\{(.*)\} (\S+)$", re.M)


def oodstudy(
    cluster: LocalCluster, *args: str, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study.cli", *args],
        env=env or cluster.client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def study_gauges(metrics_url: str, study: str) -> list[tuple[str, dict[str, str], float]]:
    """The study's gauges on a node's Prometheus endpoint: (name, tags, value)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    found = []
    for name, labels, value in GAUGE_LINE.findall(text):
        tags = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if tags.get("study") == study:
            found.append((name, tags, float(value)))
    return found


def test_submit_wait_runs_a_study_to_success_with_its_gauges_on_the_metrics_endpoint(cluster, tmp_path):
    spec_path = tmp_path / "cluster_e2e.yaml"
    spec_path.write_text(yaml.safe_dump(TINY_STUDY))
    store = tmp_path / "store"
    submit = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "study.cli",
            "submit",
            str(spec_path),
            "--address",
            cluster.dashboard,
            "--store",
            str(store),
            "--wait",
        ],
        env=cluster.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    gauges: dict[tuple, list[float]] = {}  # (name, tags) -> every value seen, in order
    refused = None
    deadline = time.monotonic() + 240
    while submit.poll() is None and time.monotonic() < deadline:
        for name, tags, value in study_gauges(f"http://127.0.0.1:{cluster.metrics_ports[0]}/metrics", "cluster_e2e"):
            gauges.setdefault((name, tuple(sorted(tags.items()))), []).append(value)
        if refused is None and gauges:  # the study runs: a second submit of it is refused
            refused = oodstudy(cluster, "submit", str(spec_path), "--address", cluster.dashboard, "--store", str(store))
        time.sleep(0.5)
    out, err = submit.communicate(timeout=30)
    assert submit.returncode == 0, err[-3000:]
    job_id = re.search(r"as job (\S+) to", err).group(1)
    assert re.fullmatch(r"cluster_e2e-\d{8}T\d{6}Z", job_id)
    cluster.submitted.append(job_id)
    cluster.stores["cluster_e2e"] = store
    assert f"job {job_id}: SUCCEEDED" in err
    assert "results in" in out  # the job's own log, streamed
    assert "[cluster_e2e] trials 2 done, 0 running, 0 pending of 2 | grid points 2/2 done" in out  # its progress

    # the same study was refused while it ran: one line, exit 2
    assert refused is not None and refused.returncode == 2
    assert refused.stderr.strip() == (
        f"oodstudy: study 'cluster_e2e' is already running on {cluster.dashboard} as job {job_id}; "
        f"wait for it, stop it (ray job stop {job_id}), or submit with another --name"
    )

    # every planned trial reached the store, completed, in its cell
    spec = load_sweep_spec(spec_path)
    trials = Store(str(store), create=False).frame("trials", study="cluster_e2e")
    assert sorted(trials["cell"]) == sorted(
        grid_point_id(p) for p in spec.grid_points() for _ in range(spec.tune.trials_per_grid_point)
    )
    assert set(trials["status"]) == {"completed"}
    # Tune's trial directories carry the cell
    run_dirs = sorted(p.name for p in (store / "_runs" / "cluster_e2e").iterdir() if p.is_dir())
    assert [d.split("_")[0] for d in run_dirs] == ["task.digits=1", "task.digits=2"]
    # ... and each trial's first line in its worker's log names it and its cell
    worker_logs = "".join(
        p.read_text(errors="replace") for p in cluster.state.glob("node*/session_latest/logs/worker-*.out")
    )
    for cell in ("task.digits=1", "task.digits=2"):
        assert re.search(rf"^\[cluster_e2e {re.escape(cell)} trial \S+\] starting, ", worker_logs, re.M)

    # the gauges, read while the study ran: two cells in total, trials by status, speeds
    def seen(name: str, **tags: str) -> list[float]:
        return [v for (n, t), vs in gauges.items() if n == name and all((k, tags[k]) in t for k in tags) for v in vs]

    assert set(seen("oodstudy_cells", state="total")) == {2.0}
    assert {dict(t)["state"] for (n, t) in gauges if n == "oodstudy_cells"} == {"total", "done", "running", "pending"}
    assert {dict(t)["status"] for (n, t) in gauges if n == "oodstudy_trials"} >= {"RUNNING", "TERMINATED"}
    assert max(seen("oodstudy_trials", status="RUNNING")) >= 1
    assert any(v > 0 for v in seen("oodstudy_examples_per_second"))


def promql(cluster: LocalCluster, query: str) -> list[dict]:
    """The series of an instant query (at now) to the cluster's Prometheus."""
    answer = get_json(f"{cluster.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="needs Debian's prometheus (apt-get install prometheus)")
def test_prometheus_scraped_every_node_and_answers_every_grafana_panel_with_the_study(cluster):
    assert "cluster_e2e" in cluster.stores, "runs after the submit test"
    # `up` started it on loopback, scraping every node (service discovery) once per metrics interval
    targets = get_json(cluster.prometheus + "/api/v1/targets?state=active")["data"]["activeTargets"]
    scraped = {int(t["labels"]["instance"].rsplit(":", 1)[1]) for t in targets if t["health"] == "up"}
    assert set(cluster.metrics_ports) <= scraped, targets
    assert {t["scrapeInterval"] for t in targets} == {"1s"}

    # every panel's query, with the dashboard's $study set to the study, over the study's run (it has
    # ended: its gauges may be stale now), grouped by the gauge it plots
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    over_run: dict[str, list[dict]] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$study", "cluster_e2e")
            series = promql(cluster, f"max_over_time(({expr})[15m:1s])")
            assert series, f"panel {panel['title']!r}: no series for {expr}"
            assert {s["metric"]["study"] for s in series} == {"cluster_e2e"}
            over_run[re.search(r"ray_oodstudy_\w+", expr).group()] = series

    def peak(gauge: str, label: str) -> dict[str, float]:
        """The gauge's highest value during the run, by the value of one of its labels."""
        found: dict[str, float] = {}
        for s in over_run[gauge]:
            key = s["metric"][label]
            found[key] = max(found.get(key, float("-inf")), float(s["value"][1]))
        return found

    cells = peak("ray_oodstudy_cells", "state")
    assert set(cells) == {"total", "done", "running", "pending"}
    assert cells["total"] == 2  # two grid points
    assert 1 <= cells["running"] <= 2 and cells["pending"] <= 2 and cells["done"] <= 2
    trials = peak("ray_oodstudy_trials", "status")
    assert set(trials) == {"PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR"}
    assert 1 <= trials["RUNNING"] <= 2 and trials["ERROR"] == 0
    best = peak("ray_oodstudy_best_score", "cell")
    assert set(best) == {"task.digits=1", "task.digits=2"}
    assert all(0 <= v <= 1 for v in best.values())
    assert {s["metric"]["metric"] for s in over_run["ray_oodstudy_best_score"]} == {"id_exact_match"}
    speeds = peak("ray_oodstudy_examples_per_second", "trial")
    assert len(speeds) == 2 and all(v > 0 for v in speeds.values())  # each of the two trials ran
    assert {s["metric"]["cell"] for s in over_run["ray_oodstudy_examples_per_second"]} == set(best)
    # the trials of all statuses together: the two planned ones, never more
    (planned,) = promql(
        cluster, 'max_over_time(sum(max by (status) (ray_oodstudy_trials{study="cluster_e2e"}))[15m:1s])'
    )
    assert float(planned["value"][1]) == 2

    # the dashboard's study selector, label_values(ray_oodstudy_cells, study), lists the study
    query = urllib.parse.urlencode({"match[]": "ray_oodstudy_cells"})
    studies = get_json(f"{cluster.prometheus}/api/v1/label/study/values?{query}")
    assert studies["status"] == "success" and "cluster_e2e" in studies["data"]

    # Ray's dashboard finds this Prometheus (RAY_PROMETHEUS_HOST on the head)
    health = get_json(cluster.dashboard + "/api/prometheus_health", token=cluster.token)
    assert health["result"] is True, health


def jobs_of(cluster: LocalCluster) -> list[dict]:
    """Every job the cluster knows, through the Jobs API with the token."""
    request = urllib.request.Request(
        cluster.dashboard + "/api/jobs/", headers={"Authorization": f"Bearer {cluster.token}"}
    )
    return json.load(urllib.request.urlopen(request, timeout=10))


def test_jobs_lists_the_study_as_succeeded(cluster):
    assert cluster.submitted, "runs after the submit test"
    result = oodstudy(cluster, "jobs", "--address", cluster.dashboard)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(cluster.submitted[0])]
    assert line.split()[1:3] == ["cluster_e2e", "SUCCEEDED"]
    # the Jobs page shows one short command; the spec's text rides in the job's runtime_env
    (job,) = [job for job in jobs_of(cluster) if job["submission_id"] == cluster.submitted[0]]
    store = cluster.stores["cluster_e2e"]
    assert job["entrypoint"] == f"oodstudy run env:OODSTUDY_SPEC --name cluster_e2e --store {store}"
    assert yaml.safe_load(job["runtime_env"]["env_vars"]["OODSTUDY_SPEC"]) == TINY_STUDY


def test_submit_with_a_wrong_or_no_token_is_one_line_exit_2(cluster, tmp_path):
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump(TINY_STUDY))
    wrong = {**cluster.client_env(), "RAY_AUTH_TOKEN": "0" * 64}
    missing = {k: v for k, v in cluster.client_env().items() if k != "RAY_AUTH_TOKEN_PATH"}
    missing["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    expected = {"refused the token from RAY_AUTH_TOKEN": wrong, "requires its token: set RAY_AUTH_MODE=token": missing}
    runs = {
        message: subprocess.Popen(  # both at once: most of their time is Python starting
            [
                sys.executable,
                "-m",
                "study.cli",
                "submit",
                str(spec_path),
                "--address",
                cluster.dashboard,
                "--store",
                str(tmp_path / "st"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for message, env in expected.items()
    }
    for message, run in runs.items():
        _, err = run.communicate(timeout=120)
        assert run.returncode == 2
        assert err.startswith(f"oodstudy: the cluster at {cluster.dashboard} ") and message in err
        assert len(err.strip().splitlines()) == 1
    assert cluster.submitted == [job["submission_id"] for job in jobs_of(cluster)]  # nothing was sent


def test_a_study_with_its_run_directory_on_s3_stopped_midway_resumes_to_its_planned_trials(cluster, tmp_path):
    # checkpoints on S3 and Optuna in a database: what a cluster of several machines needs
    store = f"s3://bucket/resumable?endpoint_override={cluster.s3_endpoint}&region=us-east-1"
    study = {
        **TINY_STUDY,
        "name": "s3_resume",  # two trials, one at a time: stopped after the first
        "optuna_storage": f"sqlite:///{tmp_path}/optuna.db",
        "max_concurrent": 1,
    }
    # ~12 s a trial, so that the first trial's end is seen before the second's (150-step trials of about
    # a second each both ended between two looks at the store on idle cores)
    study["base"] = {
        **TINY_STUDY["base"],
        "train": {**TINY_STUDY["base"]["train"], "steps": 3000, "eval_every": 1000, "checkpoint_every": 1000},
    }
    spec_path = tmp_path / "s3_resume.yaml"
    spec_path.write_text(yaml.safe_dump(study))
    submitted = oodstudy(cluster, "submit", str(spec_path), "--address", cluster.dashboard, "--store", store)
    assert submitted.returncode == 0, submitted.stderr
    job_id = re.search(r"as job (\S+) to", submitted.stderr).group(1)

    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(cluster.dashboard, headers={"Authorization": f"Bearer {cluster.token}"})
    deadline, done = time.monotonic() + 180, 0
    while time.monotonic() < deadline and done == 0:  # stop it once a trial finished, before all did
        assert str(jobs.get_job_status(job_id)) in ("PENDING", "RUNNING"), jobs.get_job_logs(job_id)[-3000:]
        try:
            trials = Store(store, create=False).frame("trials", study="s3_resume")
            done = int((trials["status"] == "completed").sum())
        except Exception:  # the store has no trials table yet
            pass
        time.sleep(1.5)  # reading the store through moto competes with moto serving the nodes
    assert done == 1
    jobs.stop_job(job_id)
    while str(jobs.get_job_status(job_id)) not in ("STOPPED", "FAILED", "SUCCEEDED"):
        time.sleep(0.5)

    resumed = oodstudy(
        cluster, "resume", "s3_resume", "--store", store, "--address", f"127.0.0.1:{cluster.gcs_port}", timeout=240
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = Store(store, create=False).frame("trials", study="s3_resume")
    completed = trials[trials["status"] == "completed"]
    assert completed.groupby("cell").size().to_dict() == {"task.digits=1": 1, "task.digits=2": 1}
    assert set(trials["status"]) <= {"completed", "abandoned"}
    evals = Store(store, create=False).frame("evals", study="s3_resume")
    steps = (
        evals[evals["trial_id"].isin(completed["trial_id"])].groupby("trial_id")["step"].apply(lambda s: sorted(set(s)))
    )
    assert all(s == [1000, 2000, 3000] for s in steps)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_the_dashboard_opened_with_the_token_shows_the_study_job_on_its_jobs_page(cluster):
    from playwright.sync_api import sync_playwright

    assert cluster.submitted, "runs after the submit test"
    job_id = cluster.submitted[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(cluster.dashboard + "/#/jobs")
            # without the token the dashboard shows nothing but its token dialog
            page.get_by_role("dialog", name="Authentication Token Required").wait_for(timeout=30_000)
            page.get_by_placeholder("Enter your authentication token").fill(cluster.token)
            page.get_by_role("button", name="Submit").click()
            row = page.locator("tr", has_text=job_id)
            row.first.wait_for(timeout=30_000)
            assert "SUCCEEDED" in row.first.inner_text()
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["ray-authentication-token"]["value"] == cluster.token
            assert cookies["ray-authentication-token"]["httpOnly"]
            # the job's page: its one-line entrypoint, and the driver's log with the study's progress
            page.goto(f"{cluster.dashboard}/#/jobs/{job_id}")
            page.get_by_text("oodstudy run env:OODSTUDY_SPEC --name cluster_e2e").first.wait_for(timeout=30_000)
            page.get_by_text("[cluster_e2e] trials 2 done, 0 running, 0 pending of 2").first.wait_for(timeout=30_000)
        finally:
            browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_the_html_report_of_the_study_loads_every_figure_and_logs_no_error(cluster, tmp_path):
    from playwright.sync_api import sync_playwright

    assert "cluster_e2e" in cluster.stores, "runs after the submit test"
    report = oodstudy(
        cluster,
        "report",
        "--store",
        str(cluster.stores["cluster_e2e"]),
        "--study",
        "cluster_e2e",
        "--out",
        str(tmp_path / "report"),
        timeout=120,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    index = Path(report.stdout.strip().splitlines()[-1])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            problems = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(index.as_uri())
            page.wait_for_load_state("load")
            figures = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
            assert figures and all(loaded for _, loaded in figures), figures
            assert page.locator("table").count() >= 1
            assert problems == []
        finally:
            browser.close()


def test_down_leaves_no_process_of_the_cluster_behind(cluster):
    assert len(marked_pids(cluster.state)) >= 8  # gcs, raylets, dashboard, agents, ...
    down = cluster.local_sh("down", timeout=90)
    assert down.returncode == 0, down.stderr
    assert marked_pids(cluster.state) == []
    assert pids_using(cluster.state) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(cluster.dashboard, timeout=5)
    assert "no local cluster running" in cluster.local_sh("status").stdout
