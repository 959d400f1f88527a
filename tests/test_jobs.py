"""Studies on a cluster, the parts that need no cluster: what `oodstudy submit` sends, the
storage rule for clusters of several machines, the trial names, the study gauges' arithmetic."""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from study.cli import build_parser, main
from study.config import SweepSpec, load_sweep_spec
from study.errors import ClusterError, ConfigError
from study.tune.callbacks import best_scores, grid_point_progress
from study.tune.jobs import build_submission, cluster_store, connect, submission_id
from study.tune.runner import check_storage_on_cluster, filesystem_type, trial_dirname, trial_name

NOW = datetime(2026, 12, 1, 18, 30, 12, tzinfo=timezone.utc)
SPEC = {
    "name": "tiny",
    "base": {
        "task": {"digits": 1, "width": 3, "eval_max_len": 3},
        "model": {"size": "nano", "n_layer": 1},
        "train": {"steps": 40, "eval_every": 10},
    },
    "grid": {"task.digits": [1, 2]},
    "store": "./results",
}


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("# a comment survives\n" + yaml.safe_dump(SPEC))
    return path


def test_submission_id_is_the_study_and_the_utc_time():
    assert submission_id("quickstart", NOW) == "quickstart-20261201T183012Z"


def test_a_local_store_is_made_absolute_for_a_local_cluster_and_refused_for_a_remote_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cluster_store("./results", "http://127.0.0.1:8265") == str(tmp_path / "results")
    assert cluster_store("s3://bucket/x", "http://head:8265") == "s3://bucket/x"
    with pytest.raises(ConfigError, match="give --store s3://"):
        cluster_store("./results", "http://10.0.0.5:8265")


def test_the_job_is_one_short_command_that_runs_the_exact_spec_text_with_the_same_overrides(
    spec_file, tmp_path, monkeypatch
):
    overrides = ["train.steps=20", "grid.task.digits=[1, 2]"]
    sub = build_submission(spec_file, overrides, "http://127.0.0.1:8265", NOW, name="mine", store=str(tmp_path / "st"))
    assert sub.submission_id == "mine-20261201T183012Z"
    assert sub.metadata == {"study": "mine", "spec": str(spec_file.resolve()), "store": str(tmp_path / "st")}
    assert sub.spec.base["train"]["steps"] == 20
    # what the dashboard's Jobs page shows: one line, the command a user would type
    args = shlex.split(sub.entrypoint)
    assert "\n" not in sub.entrypoint
    assert args == [
        "oodstudy",
        "run",
        "env:OODSTUDY_SPEC",
        "--name",
        "mine",
        "--store",
        str(tmp_path / "st"),
        "--set",
        "train.steps=20",
        "--set",
        "grid.task.digits=[1, 2]",
    ]
    # the spec's text travels in the job's environment, byte for byte (comments included) ...
    assert sub.runtime_env == {"env_vars": {"OODSTUDY_SPEC": spec_file.read_text()}}
    # ... and the job's driver, parsing its entrypoint with the real CLI, reads the study validated here
    monkeypatch.setenv("OODSTUDY_SPEC", sub.runtime_env["env_vars"]["OODSTUDY_SPEC"])
    run = build_parser().parse_args(args[1:])
    assert load_sweep_spec(run.spec, [*run.set, f"store={run.store}", f"name={run.name}"]) == sub.spec


def test_a_spec_named_by_an_environment_variable_that_is_not_set_is_one_line(monkeypatch, capsys):
    monkeypatch.delenv("OODSTUDY_SPEC", raising=False)
    assert main(["run", "env:OODSTUDY_SPEC"]) == 2
    assert capsys.readouterr().err.strip() == (
        "oodstudy: env:OODSTUDY_SPEC: no environment variable 'OODSTUDY_SPEC' holds a spec; give a spec file "
        "(e.g. search_spaces/quickstart.yaml) or set OODSTUDY_SPEC to the spec's YAML text"
    )


def test_a_spec_that_does_not_validate_is_refused_before_any_address_is_tried(spec_file, capsys):
    # the address answers nothing: the config error must come first
    code = main(["submit", str(spec_file), "--set", "model.n_heads=3", "--address", "http://127.0.0.1:9"])
    assert code == 2
    assert "model.n_heads: unknown key; did you mean model.n_head?" in capsys.readouterr().err


@pytest.mark.parametrize(
    "address, message",
    [
        ("127.0.0.1:6379", "not the dashboard's URL"),
        ("http://127.0.0.1:9", "no Ray dashboard answers at http://127.0.0.1:9"),
    ],
)
def test_an_address_that_is_not_a_dashboard_is_one_line(address, message):
    with pytest.raises(ClusterError, match=message):
        connect(address)


def test_a_web_server_that_is_not_a_ray_dashboard_is_named_as_such(tmp_path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ClusterError, match=f"{address} answers but not as a Ray dashboard with the Jobs API"):
            connect(address)
    finally:
        server.shutdown()
        server.server_close()


def test_submit_without_an_address_says_how_to_give_one(spec_file, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["submit", str(spec_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("oodstudy: give the dashboard's URL with --address") and "\n" not in err


# ---------------------------------------------------------------- storage on a cluster of machines


def spec_with(**fields) -> SweepSpec:
    return SweepSpec.model_validate({**SPEC, **fields})


def test_a_node_local_run_directory_is_refused_on_a_cluster_of_several_machines(tmp_path):
    spec = spec_with(store=str(tmp_path / "results"))
    with pytest.raises(ConfigError, match=r"cluster has 2 machines.*s3://.*optuna_storage: <RDB URL.*NFS"):
        check_storage_on_cluster(spec, {"10.0.0.1", "10.0.0.2"}, "ext4")


@pytest.mark.parametrize(
    "hosts, fs_type, fields",
    [
        ({"10.0.0.1"}, "ext4", {}),  # one machine (local.sh): every node sees the same disk
        ({"10.0.0.1", "10.0.0.2"}, "nfs4", {}),
        ({"10.0.0.1", "10.0.0.2"}, "fuse.gcsfuse", {}),
        ({"10.0.0.1", "10.0.0.2"}, "ext4", {"storage_path": "s3://bucket/runs", "optuna_storage": "postgresql://h/o"}),
    ],
)
def test_a_run_directory_every_node_reaches_is_accepted(tmp_path, hosts, fs_type, fields):
    check_storage_on_cluster(spec_with(store=str(tmp_path / "results"), **fields), hosts, fs_type)


def test_filesystem_type_reads_the_mount_of_the_nearest_existing_directory(tmp_path):
    root_type = filesystem_type("/")
    assert root_type and filesystem_type(str(tmp_path / "not" / "yet")) == filesystem_type(str(tmp_path))
    assert filesystem_type("/proc/self") == "proc"


# ---------------------------------------------------------------- trial names and gauges


def trial(cell: str, status: str = "RUNNING", best: float | None = None, trial_id: str = "a1b2") -> SimpleNamespace:
    analysis = {"id_exact_match": {"max": best, "min": best}} if best is not None else {}
    return SimpleNamespace(config={"cell": cell}, status=status, metric_analysis=analysis, trial_id=trial_id)


def test_a_trial_is_named_after_its_cell_and_its_dirname_is_safe():
    t = trial("model.size=nano|task.digits=3", trial_id="5f3a_00001")
    assert trial_name(t) == "model.size=nano|task.digits=3_5f3a_00001"
    assert trial_dirname(t) == "model.size=nano,task.digits=3_5f3a_00001"
    assert trial_dirname(trial("task.op=a/b c")) == "task.op=a,b,c_a1b2"


def test_grid_points_are_done_when_their_quota_of_trials_finished():
    trials = [
        trial("a", "TERMINATED"),
        trial("a", "ERROR"),
        trial("b", "TERMINATED"),
        trial("b", "RUNNING"),
        trial("c", "PENDING"),
    ]
    assert grid_point_progress(trials, n_points=4, quota=2) == {"total": 4, "done": 1, "running": 1, "pending": 2}


def test_a_pack_counts_each_member_toward_its_own_grid_point():
    """Four seeds of one cell trained as one pack of 4, one trial per grid point: when the
    pack ends all four grid points are done (not one of four, as when the pack counted once
    under its seedless cell)."""
    points = [f"task.digits=2|train.seed={s}" for s in range(4)]
    pack = SimpleNamespace(
        config={"cell": "task.digits=2", "members": [{"trial_id": f"p_{k}", "cell": p} for k, p in enumerate(points)]},
        status="TERMINATED",
        metric_analysis={},
        trial_id="p",
    )
    assert grid_point_progress([pack], n_points=4, quota=1) == {"total": 4, "done": 4, "running": 0, "pending": 0}
    pack.status = "RUNNING"
    assert grid_point_progress([pack], n_points=4, quota=1) == {"total": 4, "done": 0, "running": 4, "pending": 0}


def test_best_score_per_grid_point_follows_the_mode_and_skips_unreported_trials():
    trials = [
        trial("a", best=0.2),
        trial("a", best=0.9),
        trial("b", best=float("nan")),
        trial("b"),
        trial("c", best=0.5),
    ]
    assert best_scores(trials, "id_exact_match", "max") == {"a": 0.9, "c": 0.5}
    assert best_scores(trials, "id_exact_match", "min") == {"a": 0.2, "c": 0.5}


def test_a_trials_speed_sums_its_members_latest_examples_per_second():
    from study.tune.callbacks import trial_speed

    def curve(*values):
        return [{"metric": "loss", "value": 1.0}] + [{"metric": "examples_per_s", "value": v} for v in values]

    packed = {"rows": {"t_0": {"curves": curve(10.0, 30.0)}, "t_1": {"curves": curve(20.0)}, "t_2": {"evals": []}}}
    assert trial_speed(packed) == 50.0
    assert trial_speed({"rows": {"curves": curve(7.0)}}) == 7.0  # flat rows: one member
    assert trial_speed({"rows": {"t_0": {"curves": curve()}}}) is None
    assert trial_speed({}) is None
