"""A full disk: recognised in one line wherever it surfaces (a real ENOSPC on a real
tmpfs, as root), run state that a cut-short write left unreadable set aside, and a
real ``oodstudy run`` whose disk fills mid-run resumed to its planned trials."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import traceback

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from study.store import Store
from study.tune.recovery import disk_full_at, is_disk_full, run_state_problems, set_aside_damaged_run_state


@pytest.fixture()
def tmpfs(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards (skipped where mounting is not permitted)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(directory) -> OSError:
    """Write Parquet files into ``directory`` until the disk refuses; return pyarrow's error."""
    data = pa.table({"x": [os.urandom(64 * 1024).hex()]})  # 128 KiB that do not compress
    for i in range(100):
        try:
            pq.write_table(data, str(directory / f"f{i}.parquet"), compression="none")
        except OSError as err:
            return err
    raise AssertionError("the tmpfs never filled")


def test_a_full_disk_is_named_in_one_line_wherever_it_is_raised(tmpfs, tmp_path):
    err = fill(tmpfs)
    assert "No space left on device" in str(err)  # pyarrow names no file: the line must name the place
    try:
        try:
            raise err
        except OSError as inner:
            raise RuntimeError("a callback failed") from inner
    except RuntimeError as chained:
        wrapped = chained
    as_text = Exception(traceback.format_exception(err))  # a TuneError keeps only the traceback's text
    for e in (err, wrapped, as_text):
        line = disk_full_at(e, [str(tmp_path / "elsewhere"), str(tmpfs / "store")])
        assert line is not None and line.startswith(f"disk full at {tmpfs / 'store'} (its filesystem {tmpfs} has ")
        assert "\n" not in line and "free of 1.0 MiB" in line
    assert disk_full_at(ValueError("bad value"), [str(tmpfs)]) is None
    assert not is_disk_full(PermissionError(13, "Permission denied"))


def test_unreadable_run_state_is_found_and_set_aside(tmp_path):
    run = tmp_path / "_runs" / "q"
    run.mkdir(parents=True)
    good = json.dumps({"trial_data": [], "runner_data": {}, "stats": {}})
    (run / "experiment_state-2026-01-01_00-00-00.json").write_text(good)
    (run / "experiment_state-2026-01-02_00-00-00.json").write_text(good[: len(good) // 2])  # cut short
    (run / "searcher-state-2026-01-02_00-00-00.pkl").write_bytes(pickle.dumps({"suggested": 3})[:10])
    (run / "tuner.pkl").write_bytes(pickle.dumps({"ok": True}))
    (run / "oodstudy_spec.json").write_text("")
    (run / "result.json").write_text("{")  # a trial's log, not run state

    found = {os.path.basename(p.path): p.why for p in run_state_problems(str(run))}
    assert set(found) == {
        "experiment_state-2026-01-02_00-00-00.json",
        "searcher-state-2026-01-02_00-00-00.pkl",
        "oodstudy_spec.json",
    }
    assert "not valid JSON" in found["experiment_state-2026-01-02_00-00-00.json"]
    assert "not a complete pickle" in found["searcher-state-2026-01-02_00-00-00.pkl"]
    moved = set_aside_damaged_run_state(str(run))
    assert len(moved) == 3 and all(to.startswith(str(run / "_damaged")) for _, to in moved)
    assert run_state_problems(str(run)) == []
    assert (run / "experiment_state-2026-01-01_00-00-00.json").read_text() == good
    assert run_state_problems(str(tmp_path / "absent")) == []


# A study of 4 trials (2 grid points x 2), 2 at a time, 200 steps each, a checkpoint
# (~380 KiB) at every evaluation, Tune's run directory in the store (<store>/_runs):
# about 5.5 MiB at its peak, 21 s of training on 2 idle cores.
FULL_DISK_BASE = {
    "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32, "train_fraction": 0.3},
    "model": {"size": "nano", "n_layer": 1},
    "train": {"steps": 200, "eval_every": 20, "checkpoint_every": 20, "batch_size": 16, "log_every": 20},
}


def mount_tmpfs(directory, size: str) -> None:
    directory.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")


def oodstudy(args: list[str], log, env: dict, timeout: float) -> tuple[int, str]:
    """``python -m study.cli ARGS`` in its own process group (stderr to ``log``, on the
    roomy disk); on a timeout, or whatever else stops the wait, the group is killed
    (the driver and its embedded Ray); returns (exit code, stderr)."""
    with open(log, "w") as err:
        driver = subprocess.Popen(
            [sys.executable, "-m", "study.cli", *args],
            start_new_session=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            code = driver.wait(timeout=timeout)
        finally:
            try:
                os.killpg(driver.pid, signal.SIGKILL)  # the driver's leftovers (Ray's processes), if any
            except ProcessLookupError:
                pass
            driver.wait()
    return code, log.read_text()


@pytest.mark.slow
def test_a_disk_filled_mid_run_is_one_line_and_resume_finishes_the_study(tmp_path):
    """Store and run directory on a 3 MiB tmpfs: a trial's checkpoint fills it mid-run
    (measured: 2 trials at steps 120-180 of 200 in the store, none completed, Tune's run
    state readable; 2000-4500 KiB fill it likewise, at 40-180 steps).  The run stops with
    one line naming the full disk and the resume, and nothing after it; once the disk is
    grown, ``resume`` finishes exactly the planned trials.  (Before, the run ended with a
    343-line TuneError traceback and no such line.)"""
    size = "3m"
    disk = tmp_path / "disk"
    mount_tmpfs(disk, size)
    store = disk / "store"
    name = "full"
    spec = tmp_path / "spec.yaml"  # the spec, the logs: on the roomy disk
    spec.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "base": FULL_DISK_BASE,
                "grid": {"task.digits": [1, 2]},
                "tune": {
                    "trials_per_grid_point": 2,
                    "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
                },
                "resources": {"cpus": 1},
                "max_concurrent": 2,
                "max_failures": 3,
                "store": str(store),
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        code, err = oodstudy(["run", str(spec)], tmp_path / "run.err", env, timeout=240)
        tail = [line for line in err.splitlines() if line.strip()][-3:]
        assert code != 0, f"the run finished on a {size} disk: it never filled\n" + "\n".join(tail)
        last = tail[-1] if tail else ""
        assert last.startswith("oodstudy: ") and "disk full at" in last and "oodstudy resume" in last, "\n".join(tail)
        # nothing after that line: no traceback of the run's end (a TuneError's), none of Ray's dump
        # at exit of a trial's error that nobody retrieved ("Unhandled error ... OSError: [Errno 28]")
        assert "TuneError" not in err and "Unhandled error" not in err, err[err.find("oodstudy: disk full") :][:3000]
        trials = Store(str(store), create=False).frame("trials", study=name)
        assert (trials["status"] == "completed").sum() < 4, "the disk filled only after the study had finished"
        left = run_state_problems(str(store / "_runs" / name))  # what the full disk left unreadable
        print(
            f"\n{size}: run stopped with {trials['status'].value_counts().to_dict()} in the store, "
            f"run state left unreadable: {[str(p) for p in left] or 'none'}"
        )

        subprocess.run(["mount", "-o", "remount,size=200m", str(disk)], check=True)
        code, err = oodstudy(["resume", name, "--store", str(store)], tmp_path / "resume.err", env, timeout=300)
        assert code == 0, err[-3000:]
        trials = Store(str(store), create=False).frame("trials", study=name)
        assert len(trials) == 4 and set(trials["status"]) == {"completed"}, trials[
            ["trial_id", "cell", "status", "steps"]
        ]
        assert trials.groupby("cell").size().to_dict() == {"task.digits=1": 2, "task.digits=2": 2}
        assert set(trials["steps"]) == {200}
        status = subprocess.run(
            [sys.executable, "-m", "study.cli", "status", name, "--store", str(store)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0 and "4/4 trials finished" in status.stdout, status.stdout + status.stderr
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=True)  # a process still had it open
