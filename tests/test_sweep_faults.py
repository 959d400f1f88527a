"""Fault tolerance of a sweep: a driver killed with SIGKILL and resumed; a node lost mid-sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import yaml

from study.config import SweepSpec
from study.store import Store

BASE = {
    "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32, "train_fraction": 0.3},
    "model": {"size": "nano", "n_layer": 1},
    "train": {"steps": 60, "eval_every": 10, "checkpoint_every": 20, "batch_size": 16, "log_every": 10},
}
EVAL_KEYS = ["trial_id", "step", "split", "metric", "len_a", "len_b"]


def spec_data(tmp_path, name: str) -> dict:
    return {
        "name": name,
        "base": BASE,
        "grid": {"task.digits": [1, 2]},
        "tune": {"trials_per_grid_point": 2, "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}},
        "resources": {"cpus": 1},
        "max_concurrent": 2,
        "max_failures": 3,
        "store": str(tmp_path / "store"),
    }


def assert_study_complete(store: Store, study: str) -> None:
    """Planned trials all completed, every step's rows present exactly once."""
    trials = store.frame("trials", study=study)
    completed = trials[trials["status"] == "completed"]
    assert completed.groupby("cell").size().to_dict() == {"task.digits=1": 2, "task.digits=2": 2}
    assert set(trials["status"]) <= {"completed", "abandoned"}
    evals = store.frame("evals", study=study)
    evals = evals[evals["trial_id"].isin(completed["trial_id"])]
    assert not evals.duplicated(EVAL_KEYS).any()
    steps = evals.groupby("trial_id")["step"].apply(lambda s: sorted(set(s)))
    assert all(s == [10, 20, 30, 40, 50, 60] for s in steps)
    assert evals.groupby(["trial_id", "step"]).size().nunique() == 1  # same conditions x metrics each time


@pytest.mark.slow
def test_a_driver_killed_mid_sweep_resumes_to_exactly_the_planned_trials(tmp_path):
    """Killed as soon as a trial has completed in the store: Tune's saved experiment state
    (every 10 s here) still has that trial running, yet resume trains none of its steps
    again and tells its Optuna trial nothing twice."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_data(tmp_path, "crash")))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "10"
    driver = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "run", str(path)],
        start_new_session=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store_root = tmp_path / "store"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # kill once at least one trial finished, before all did
            done = 0
            if (store_root / "trials").exists():
                trials = Store(str(store_root), create=False).frame("trials", study="crash")
                done = int((trials["status"] == "completed").sum())
            if done >= 1:
                break
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.1)
        assert done < 4, "the sweep finished before it could be interrupted"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its embedded Ray, all at once
        driver.wait()
    killed_at = pd.Timestamp.now(tz="UTC")
    ended_before = set(trials.loc[trials["status"] == "completed", "trial_id"])
    resumed = subprocess.run(
        [sys.executable, "-m", "study.cli", "resume", "crash", "--store", str(store_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Cannot tell" not in resumed.stderr and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    store = Store(str(store_root), create=False)
    assert_study_complete(store, "crash")
    for table in ("evals", "curves", "trials"):  # nothing of a trial that had ended was trained or written again
        rows = store.frame(table, study="crash")
        rewritten = rows[rows["trial_id"].isin(ended_before) & (rows["written_at"] > killed_at)]
        assert rewritten.empty, f"{table}: {sorted(set(rewritten['trial_id']))} written again after the kill"
    status = subprocess.run(
        [sys.executable, "-m", "study.cli", "status", "crash", "--store", str(store_root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0 and "4/4 trials finished" in status.stdout


@pytest.mark.slow
def test_a_two_node_cluster_that_loses_its_worker_node_still_completes(tmp_path):
    import ray
    from ray._private.state import available_resources_per_node
    from ray.cluster_utils import Cluster

    from study.tune.runner import run_sweep

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        spec = SweepSpec.model_validate(spec_data(tmp_path, "nodeloss"))
        lost = threading.Event()

        def kill_worker_when_busy() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                free = available_resources_per_node()
                if worker.node_id in free and free[worker.node_id].get("CPU", 0.0) == 0.0:  # a trial holds its CPU
                    time.sleep(2.0)  # let it report and checkpoint a little
                    cluster.remove_node(worker)
                    lost.set()
                    return
                time.sleep(0.2)

        killer = threading.Thread(target=kill_worker_when_busy, daemon=True)
        killer.start()
        run_sweep(spec)
        killer.join(timeout=5)
        assert lost.is_set(), "the worker node never ran a trial"
        store = Store(spec.store, create=False)
        assert_study_complete(store, "nodeloss")
        assert store.frame("trials", study="nodeloss")["attempt"].max() >= 1  # someone was retried
    finally:
        ray.shutdown()
        cluster.shutdown()
