"""A full disk: recognised in one line wherever it surfaces (a real ENOSPC on a real
tmpfs, as root), and run state that a cut-short write left unreadable set aside."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import traceback

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.tune.recovery import disk_full_at, is_disk_full, run_state_problems, set_aside_damaged_run_state


@pytest.fixture()
def tmpfs(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards (skipped where mounting is not permitted)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
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
    assert set(found) == {"experiment_state-2026-01-02_00-00-00.json", "searcher-state-2026-01-02_00-00-00.pkl",
                          "oodstudy_spec.json"}
    assert "not valid JSON" in found["experiment_state-2026-01-02_00-00-00.json"]
    assert "not a complete pickle" in found["searcher-state-2026-01-02_00-00-00.pkl"]
    moved = set_aside_damaged_run_state(str(run))
    assert len(moved) == 3 and all(to.startswith(str(run / "_damaged")) for _, to in moved)
    assert run_state_problems(str(run)) == []
    assert (run / "experiment_state-2026-01-01_00-00-00.json").read_text() == good
    assert run_state_problems(str(tmp_path / "absent")) == []

