"""One study, one writer: a study's lease refuses a second driver, a rerun of an existing
study is refused, a dead owner's lease is taken over, failed trials make a non-zero exit,
SIGTERM stops a run as Ctrl-C does."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from study.cli import main
from study.errors import StoreError
from study.store import Store
from study.store import lease as lease_module
from study.store.lease import StudyLease, boot_id, process_start

BASE = {
    "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32, "train_fraction": 0.3},
    "model": {"size": "nano", "n_layer": 1},
    "train": {"steps": 60, "eval_every": 10, "checkpoint_every": 20, "batch_size": 16, "log_every": 10},
}
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def spec_file(tmp_path: Path, name: str, steps: int = 60, **fields) -> Path:
    base = json.loads(json.dumps(BASE))
    base["train"]["steps"] = steps
    data = {
        "name": name,
        "base": base,
        "grid": {"task.digits": [1, 2]},
        "tune": {"trials_per_grid_point": 1},
        "resources": {"cpus": 1},
        "max_concurrent": 2,
        "store": str(tmp_path / "store"),
        **fields,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_owner(lease: StudyLease, **fields) -> None:
    record = {
        "study": lease.study,
        "command": "run",
        "host": socket.gethostname(),
        "boot": boot_id(),
        "pid": os.getpid(),
        "pid_start": process_start(os.getpid()),
        "since": time.time(),
        "heartbeat": time.time(),
        "token": "theirs",
        **fields,
    }
    Path(lease.directory).mkdir(parents=True, exist_ok=True)
    Path(lease.path).write_text(json.dumps(record))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------------------- the lease itself


def test_a_live_owner_on_this_machine_keeps_the_study(tmp_path):
    lease = StudyLease(str(tmp_path / "store"), "s")
    write_owner(lease)  # this very process, alive
    with pytest.raises(StoreError, match=r"study s in .* is being run by another driver, pid \d+ on host"):
        StudyLease(str(tmp_path / "store"), "s").acquire("run")


def test_a_dead_owner_on_this_machine_is_taken_over_at_once(tmp_path):
    lease = StudyLease(str(tmp_path / "store"), "s")
    write_owner(lease, pid=dead_pid())
    assert lease.live_owner() is None
    me = lease.acquire("resume")
    try:
        assert lease.read().token == me.token and lease.read().pid == os.getpid()
    finally:
        lease.release()
    assert lease.read() is None


def test_a_reused_pid_is_not_the_owner(tmp_path):
    """Same pid, another process (a different start time): the owner is gone."""
    lease = StudyLease(str(tmp_path / "store"), "s")
    write_owner(lease, pid_start="1")
    assert lease.live_owner() is None


def test_an_owner_elsewhere_is_gone_once_its_heartbeat_is_stale(tmp_path):
    lease = StudyLease(str(tmp_path / "store"), "s")
    write_owner(lease, host="another-node", heartbeat=time.time() - 5)
    with pytest.raises(StoreError, match="pid .* on host another-node"):
        lease.acquire("resume")
    write_owner(lease, host="another-node", heartbeat=time.time() - lease_module.STALE_AFTER_S - 1)
    lease.acquire("resume")
    lease.release()


def test_the_owner_renews_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.2)
    lease = StudyLease(str(tmp_path / "store"), "s")
    me = lease.acquire("run")
    try:
        time.sleep(1.0)
        assert lease.read().heartbeat > me.since
    finally:
        lease.release()


def _race(uri: str, barrier, results) -> None:
    lease = StudyLease(uri, "s")
    barrier.wait()
    try:
        lease.acquire("run")
        results.put("won")
        time.sleep(1.0)  # hold it while the others try
        lease.release()
    except StoreError:
        results.put("refused")


def test_of_processes_racing_for_a_study_exactly_one_wins(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    racers = [context.Process(target=_race, args=(str(tmp_path / "store"), barrier, results)) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=30)
    outcomes = sorted(results.get(timeout=5) for _ in racers)
    assert outcomes == ["refused", "refused", "refused", "won"]


def test_the_lease_works_on_an_s3_store(s3_endpoint, monkeypatch):
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.2)
    uri = f"s3://bucket/store?endpoint_override={s3_endpoint}&region=us-east-1"
    first, second = StudyLease(uri, "s"), StudyLease(uri, "s")
    first.acquire("run")
    try:
        with pytest.raises(StoreError, match="being run by another driver"):
            second.acquire("run")
    finally:
        first.release()
    second.acquire("resume")  # given back: free again
    second.release()
    assert second.read() is None


# ----------------------------------------------------------------------------- through the CLI


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_second_driver_and_a_rerun_are_refused_and_the_store_holds_the_planned_trials(tmp_path):
    path = spec_file(tmp_path, "twice", steps=400)
    lease = StudyLease(str(tmp_path / "store"), "twice")
    first = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "run", str(path)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: lease.read() is not None, 120, "the first driver to take the lease")
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "study.cli", "run", str(path)], env=ENV, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2, second.stderr
        assert "is being run by another driver" in second.stderr and f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr and time.monotonic() - started < 60
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, err[-3000:]
    trials = Store(str(tmp_path / "store"), create=False).frame("trials", study="twice")
    assert sorted(trials["status"]) == ["completed", "completed"]  # exactly the planned trials
    assert lease.read() is None  # given back at the end
    rerun = subprocess.run(
        [sys.executable, "-m", "study.cli", "run", str(path)], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 2
    assert "study twice already exists" in rerun.stderr and "oodstudy resume twice --store" in rerun.stderr
    assert len(Store(str(tmp_path / "store"), create=False).frame("trials", study="twice")) == 2


@pytest.mark.slow
def test_sigterm_stops_a_run_like_ctrl_c_and_resume_finishes_it(tmp_path):
    path = spec_file(tmp_path, "termed", steps=4000)
    lease = StudyLease(str(tmp_path / "store"), "termed")
    run = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "run", str(path)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: (tmp_path / "store" / "trials").exists(), 180, "the first trial rows")
        os.killpg(run.pid, signal.SIGTERM)  # as `timeout`, `ray job stop` or Kubernetes would
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, err[-3000:]
    assert "SIGTERM received" not in err and "Traceback" not in err
    assert "interrupted: study termed has" in err and "oodstudy resume termed --store" in err
    assert lease.read() is None  # given back on the way out


@pytest.mark.slow
def test_failed_trials_make_run_and_resume_exit_1_with_one_line_counting_them(tmp_path, ray_local, capsys):
    from study.config import SweepSpec
    from study.tune.runner import run_sweep

    data = yaml.safe_load(spec_file(tmp_path, "failing", max_failures=0).read_text())
    spec = SweepSpec.model_validate(data)
    run_sweep(spec, fail_once_at_step=20)  # no retries: every trial fails once and for all
    assert main(["resume", "failing", "--store", spec.store]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("oodstudy: 2 of 2 planned trials of study failing failed")
    assert "SELECT trial_id, cell, error FROM trials WHERE status = 'failed'" in err[-1]
