"""The live progress of a run: the ETA from a fake clock, ``status`` while a study runs
(from the driver's progress file), ``resume`` of a finished study without Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from study.cli import main
from study.store import Store
from study.tune.callbacks import ProgressLine
from study.tune.progress import (
    ProgressBoard,
    StepRate,
    TrialProgress,
    eta_seconds,
    is_live,
    read_progress,
    snapshot,
    write_progress,
)
from study.tune.runner import storage_path, write_spec_copy
from study.config import SweepSpec
from study.tune.status import study_status

ROOT = Path(__file__).resolve().parents[1]


def tiny_spec(tmp_path, name: str, **fields) -> SweepSpec:
    """Two grid points (task.digits 1 and 2, no seed axis) of a 1-layer nano model, two trials each."""
    data = {
        "name": name,
        "base": {
            "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32},
            "model": {"size": "nano", "n_layer": 1},
            "train": {"steps": 40, "eval_every": 10, "batch_size": 16, "log_every": 10},
        },
        "grid": {"task.digits": [1, 2]},
        "tune": {
            "metric": "id_exact_match",
            "mode": "max",
            "trials_per_grid_point": 2,
            "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        },
        "resources": {"cpus": 1},
        "store": str(tmp_path / "store"),
        **fields,
    }
    return SweepSpec.model_validate(data)


def test_eta_schedules_the_remaining_steps_on_the_free_slots():
    # 2 slots at 1 step/s: 50 and 100 steps left running, two pending trials of 100
    assert eta_seconds([50, 100, 100, 100], slots=2, rate=1.0) == 200.0
    assert eta_seconds([50, 100, 100, 100], slots=4, rate=1.0) == 100.0
    assert eta_seconds([], slots=2, rate=None) == 0.0
    assert eta_seconds([10], slots=2, rate=None) is None  # no speed measured yet


def test_step_rate_counts_each_trial_from_its_first_step_and_forgets_a_restart():
    rate = StepRate(window_s=60)
    rate.add(0.0, [TrialProgress("a", "p", "running", 0, 100)])  # still starting: no step yet
    rate.add(30.0, [TrialProgress("a", "p", "running", 10, 100), TrialProgress("b", "q", "pending", 0, 100)])
    assert rate.per_trial() is None  # one look at a training trial measures nothing
    rate.add(40.0, [TrialProgress("a", "p", "running", 30, 100), TrialProgress("b", "q", "running", 5, 100)])
    rate.add(50.0, [TrialProgress("a", "p", "running", 50, 100), TrialProgress("b", "q", "running", 25, 100)])
    assert rate.per_trial() == pytest.approx(2.0)  # (40 + 20) steps in (20 + 10) trial-seconds
    rate.add(60.0, [TrialProgress("a", "p", "running", 20, 100)])  # back to a checkpoint
    rate.add(70.0, [TrialProgress("a", "p", "running", 26, 100)])
    assert rate.per_trial() == pytest.approx((20 + 6) / (10 + 10))


def simulate(t: float, start: float, steps: int, per_s: float) -> list[TrialProgress]:
    """Four trials of ``steps`` steps, two at a time, each ``per_s`` steps/s, from ``start``."""
    rows = []
    duration = steps / per_s
    for i in range(4):
        begin = start + (i // 2) * duration
        cell = f"task.digits={1 + i % 2}"
        if t < begin:
            rows.append(TrialProgress(f"t{i}", cell, "pending", 0, steps))
        elif t >= begin + duration:
            rows.append(TrialProgress(f"t{i}", cell, "done", steps, steps, 0.1))
        else:
            rows.append(TrialProgress(f"t{i}", cell, "running", int((t - begin) * per_s), steps, 0.5))
    return rows[: 2 if t < start + duration else 4]  # the searcher suggests the second pair later


def test_eta_from_a_fake_clock_converges_to_the_true_remaining_time(tmp_path):
    spec = tiny_spec(
        tmp_path,
        "eta",
        base={"train": {"steps": 400}, "task": {"digits": 1, "width": 3, "eval_max_len": 3}},
        max_concurrent=2,
    )
    clock = [0.0]
    line = ProgressLine(spec, clock=lambda: clock[0])
    start, per_s, steps = 30.0, 4.0, 400  # 30 s of start-up, then 100 s per trial, two at a time
    end = start + 2 * steps / per_s
    etas = {}
    for t in range(0, int(end) + 1, 5):
        clock[0] = float(t)
        state = line.state(simulate(t, start, steps, per_s), clock[0])
        etas[t] = state["eta_s"]
        if start + 10 <= t:
            assert state["eta_s"] == pytest.approx(end - t, abs=2.0), t  # within one step report
    assert etas[0] is None and etas[30] is None  # nothing measured before the first steps
    # the counts per grid point match the simulated reality mid-run
    state = line.state(simulate(140.0, start, steps, per_s), 140.0)
    assert state["points"]["task.digits=1"] == {"planned": 2, "done": 1, "running": 1, "pending": 0}
    running = [t for t in state["trials"] if t["status"] == "running"]
    assert [(t["step"], t["total"]) for t in running] == [(40, 400), (40, 400)]


def test_status_while_running_reads_the_drivers_progress_file(tmp_path, capsys):
    spec = tiny_spec(tmp_path, "live")
    write_spec_copy(spec)
    Store(spec.store)
    rows = [
        TrialProgress("a", "task.digits=1", "running", 120, 400, 0.731),
        TrialProgress("b", "task.digits=2", "running", 80, 400, 1.02),
    ]
    planned = {"task.digits=1": (2, 400), "task.digits=2": (2, 400)}
    write_progress(storage_path(spec), snapshot("live", rows, planned, elapsed_s=90.0, eta_s=600.0))
    assert main(["status", "live", "--store", spec.store]) == 0
    out = capsys.readouterr().out
    table = study_status(spec, live=read_progress(storage_path(spec), "live"))
    assert table["running"].tolist() == [1, 1] and table["pending"].tolist() == [1, 1]
    assert out.split()[0] == "grid_point"  # status lists grid points (seeds included), not cells
    assert "digits=1: step 120/400 loss 0.731" in out and "digits=2: step 80/400 loss 1.020" in out
    assert "ETA 10.0 min" in out
    # a progress file nobody updated for minutes is a stopped run, not a running one
    state = read_progress(storage_path(spec), "live")
    assert is_live(state) and not is_live(state, now=state["updated"] + 600)


def finished_study(tmp_path, name: str):
    spec = tiny_spec(tmp_path, name)
    write_spec_copy(spec)
    store = Store(spec.store)
    for i, cell in enumerate(["task.digits=1", "task.digits=1", "task.digits=2", "task.digits=2"]):
        row = {
            "trial_id": f"t{i}",
            "grid": "{}",
            "config": "{}",
            "status": "completed",
            "start_time": None,
            "end_time": None,
            "node": None,
            "device": "cpu",
            "n_params": 10,
            "steps": 40,
            "score": 0.5,
            "error": None,
        }
        store.append("trials", [row], study=name, attempt=0, cell=cell)
    return spec


def test_resume_of_a_finished_study_says_nothing_to_do_without_starting_ray(tmp_path):
    spec = finished_study(tmp_path, "done")
    code = (
        "import sys; from study.cli import main; rc = main(sys.argv[1:]); "
        "print('ray started:', 'ray' in sys.modules and sys.modules['ray'].is_initialized()); sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, "resume", "done", "--store", spec.store],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout and "ray started: False" in done.stdout
    assert "is finished (4 completed: every planned trial has ended)" in done.stdout
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_status_during_a_real_run_shows_steps_between_evaluations(tmp_path, capsys):
    """A real sweep in a thread: while it trains, ``status`` shows each running trial's
    grid point, step and loss, posted by the trial between its evaluations.  Trials of
    4,000 steps (~25 s on a core) leave seconds to see them between evaluations."""
    import ray

    from study.tune.runner import run_sweep

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    planned_steps = 4000
    spec = tiny_spec(
        tmp_path,
        "running",
        max_concurrent=2,
        tune={
            "metric": "id_exact_match",
            "mode": "max",
            "trials_per_grid_point": 1,
            "params": {"train.lr": {"type": "loguniform", "low": 1e-3, "high": 2e-3}},
        },
        base={
            "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32},
            "model": {"size": "nano", "n_layer": 1},
            "train": {"steps": planned_steps, "eval_every": planned_steps, "batch_size": 16, "log_every": 10},
        },
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_sweep(spec)
        except BaseException as err:  # noqa: BLE001  (re-raised in the test's thread)
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    seen = None
    deadline = time.monotonic() + 150
    while thread.is_alive() and time.monotonic() < deadline:
        state = read_progress(storage_path(spec), "running")
        steps = [t["step"] for t in state["trials"] if t["status"] == "running"] if state else []
        if steps and 0 < max(steps) < planned_steps:  # mid-training: no evaluation has reported yet
            seen = state
            break
        time.sleep(1.0)
    assert seen is not None, "no live progress while the trials trained"
    capsys.readouterr()
    assert main(["status", "running", "--store", spec.store]) == 0
    out = capsys.readouterr().out
    assert "running now" in out and f"/{planned_steps} loss" in out
    running_points = {t["point"] for t in seen["trials"] if t["status"] == "running"}
    table = study_status(spec, live=seen).set_index("grid_point")
    assert all(table.loc[p, "running"] == 1 for p in running_points)
    thread.join(timeout=300)
    assert not errors, errors
    final = read_progress(storage_path(spec), "running")
    assert final["finished"] and all(p["done"] == 1 for p in final["points"].values())
    assert main(["resume", "running", "--store", spec.store]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_the_end_of_run_table_pools_seeds_into_cells():
    import pandas as pd

    from study.tune.status import cell_status

    points = pd.DataFrame(
        {
            "grid_point": ["task.digits=2|train.seed=0", "task.digits=2|train.seed=1", "task.digits=3|train.seed=0"],
            "planned": [1, 1, 1],
            "completed": [1, 0, 1],
            "running": [0, 0, 0],
            "failed": [0, 1, 0],
            "diverged": [0, 0, 0],
            "pruned": [0, 0, 0],
            "pending": [0, 0, 0],
            "best_id_exact_match": [0.9, None, 0.4],
        }
    )
    cells = cell_status(points, "max")
    assert cells["cell"].tolist() == ["task.digits=2", "task.digits=3"]
    assert cells["planned"].tolist() == [2, 1] and cells["failed"].tolist() == [1, 0]
    assert cells["best_id_exact_match"].tolist() == [0.9, 0.4]


def test_status_finds_the_store_it_is_pointed_at_whatever_cwd_the_run_had(tmp_path, monkeypatch, capsys):
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(run_dir)
    spec = tiny_spec(tmp_path, "rel", store="./results")  # as a spec file says it
    write_spec_copy(spec)
    Store(spec.store)
    rows = [TrialProgress("a", "task.digits=1", "running", 7, 40, 0.5)]
    write_progress(
        storage_path(spec),
        snapshot("rel", rows, {"task.digits=1": (2, 40), "task.digits=2": (2, 40)}, elapsed_s=1.0, eta_s=None),
    )
    monkeypatch.chdir(elsewhere)
    assert main(["status", "rel", "--store", str(run_dir / "results")]) == 0
    assert "digits=1: step 7/40 loss 0.500" in capsys.readouterr().out


def test_a_packs_members_each_show_their_own_step_and_loss(tmp_path):
    """A pack is one Tune trial training several members: the progress rows give each
    member its own loss (from its last evaluation, or from the board when that is newer),
    not the pack's mean under every member's name."""
    spec = tiny_spec(tmp_path, "packed")
    config = {
        "trial": spec.base,
        "members": [
            {"trial_id": "p_0", "cell": "task.digits=1", "grid": {}, "trial": spec.base},
            {"trial_id": "p_1", "cell": "task.digits=1", "grid": {}, "trial": spec.base},
        ],
    }
    last = {"step": 20, "loss": 0.5, "members": {"p_0": {"step": 20, "loss": 0.5}, "p_1": {"step": 20, "loss": 2.5}}}
    pack = SimpleNamespace(trial_id="p", config=config, status="RUNNING", last_result=last)
    board = ProgressBoard()
    board.post(30, {"p_0": 0.25})  # only p_0 posted since the evaluation at step 20
    rows = {r.trial_id: (r.step, r.loss) for r in ProgressLine(spec).progress([pack], board.read())}
    assert rows == {"p_0": (30, 0.25), "p_1": (20, 2.5)}
    board.post(40, {"p_0": 0.125, "p_1": 2.0})
    rows = {r.trial_id: (r.step, r.loss) for r in ProgressLine(spec).progress([pack], board.read())}
    assert rows == {"p_0": (40, 0.125), "p_1": (40, 2.0)}


def test_a_ray_log_line_never_lands_on_the_redrawn_progress_line(capsys):
    """On a terminal the progress line is redrawn in place (no newline); a log record of
    Ray's then starts on a line of its own, and a line wider than the terminal ends in an
    ellipsis instead of being cut mid-word without a sign."""
    import logging

    from study.tune.callbacks import LineBreak, fit_line

    breaker = LineBreak()
    handler = logging.StreamHandler()  # writes to the stderr pytest captures
    handler.addFilter(breaker)
    log = logging.getLogger("ray.tune.test_line_break")
    log.addHandler(handler)
    try:
        print("\r[study] trials 1 done", end="", file=sys.stderr)
        breaker.open = True
        log.warning("Wrote the experiment state")
        print("\r[study] trials 2 done", end="", file=sys.stderr)
        log.warning("no progress line open: no extra newline")
    finally:
        log.removeHandler(handler)
    err = capsys.readouterr().err
    assert "[study] trials 1 done\nWrote the experiment state\n" in err
    assert "trials 2 doneno progress line open" in err  # the filter only breaks a line it knows is open
    assert fit_line("x" * 200, 80) == "x" * 79 + "\u2026" and fit_line("short", 8) == "short   "
