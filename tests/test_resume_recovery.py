"""``resume`` finishes a study from whatever is intact: a Tune experiment state cut short
(a full disk) is set aside and the study continues from the store; a store that lost a
fragment says so before reading as less done than it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.cli import main
from study.config import SweepSpec
from study.store import Store
from study.tune.runner import storage_path, write_spec_copy


def tiny_spec(tmp_path, name: str) -> SweepSpec:
    """Two grid points (task.digits 1 and 2), one trial each, 40 steps of a 1-layer nano model."""
    return SweepSpec.model_validate(
        {
            "name": name,
            "base": {
                "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32},
                "model": {"size": "nano", "n_layer": 1},
                "train": {"steps": 40, "eval_every": 20, "batch_size": 16, "log_every": 10},
            },
            "grid": {"task.digits": [1, 2]},
            "tune": {"trials_per_grid_point": 1},
            "resources": {"cpus": 1},
            "store": str(tmp_path / "store"),
        }
    )


def ended_trial(store: Store, study: str, trial_id: str, cell: str) -> None:
    row = {
        "trial_id": trial_id,
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
    store.append("trials", [row], study=study, attempt=0, cell=cell)


@pytest.mark.slow
def test_resume_with_a_cut_short_experiment_state_continues_from_the_store(tmp_path, ray_local, capsys):
    spec = tiny_spec(tmp_path, "cut")
    write_spec_copy(spec)
    store = Store(spec.store)
    ended_trial(store, "cut", "before", "task.digits=1")  # ended before the disk filled up
    run_dir = Path(storage_path(spec)) / "cut"
    state = run_dir / "experiment_state-2026-12-06_10-00-00.json"
    state.write_text(json.dumps({"trial_data": [["x" * 4000]]})[:2000])  # a write cut short
    assert main(["resume", "cut", "--store", spec.store]) == 0
    err = capsys.readouterr().err
    assert "cannot be read (a write cut short" in err and "set aside as" in err
    assert "continuing study cut from the store: 1 trials ended there and count" in err
    assert (run_dir / "_damaged" / state.name).read_text().startswith('{"trial_data"')  # kept, not deleted
    trials = Store(spec.store, create=False).frame("trials", study="cut")
    # exactly the planned trials: the one that had ended, and one new for the other grid point
    assert sorted(zip(trials["cell"], trials["status"])) == [
        ("task.digits=1", "completed"),
        ("task.digits=2", "completed"),
    ]
    assert "before" in set(trials["trial_id"])


def test_status_and_resume_of_a_damaged_store_say_so_and_name_the_repair(tmp_path, capsys):
    spec = tiny_spec(tmp_path, "hurt")
    write_spec_copy(spec)
    store = Store(spec.store)
    ended_trial(store, "hurt", "t0", "task.digits=1")
    ended_trial(store, "hurt", "t1", "task.digits=2")
    fragment = store.fragments("trials", "hurt")[0]
    data = Path(fragment.path).read_bytes()
    Path(fragment.path).write_bytes(data[: len(data) // 2])  # truncated
    for argv in (["status", "hurt"], ["resume", "hurt"], ["report", "--study", "hurt", "--out", str(tmp_path / "r")]):
        assert main([*argv, "--store", spec.store]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("oodstudy: the store at") and "is damaged" in line
        assert "oodstudy store validate" in line and "oodstudy store repair" in line
    assert main(["store", "repair", "--store", spec.store, "--study", "hurt"]) == 0  # the repair it names
    assert "_damaged" in capsys.readouterr().out
    assert main(["status", "hurt", "--store", spec.store]) == 0  # whole again: readable, no longer refused
    assert main(["store", "validate", "--store", spec.store]) == 0


@pytest.mark.slow
def test_relative_store_and_run_paths_are_found_from_any_directory(tmp_path, ray_local, monkeypatch, capsys):
    """A spec with relative ``store`` and ``storage_path``: ``status`` and ``resume`` from
    another directory find the finished study (not "0/2"), create no stray store there, and
    every printed hint is shell-quoted (the run directory has a space in its name)."""
    import yaml

    here, elsewhere = tmp_path / "my work", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    data = tiny_spec(tmp_path, "rel").model_dump(mode="json", exclude_none=True)
    data.update(store="./results", storage_path="./runs")
    (here / "rel.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(here)
    assert main(["run", "rel.yaml"]) == 0
    out = capsys.readouterr().out
    store, runs = here / "results", here / "runs"
    assert f"oodstudy report --store '{store}' --study rel" in out  # quoted: the path has a space
    monkeypatch.chdir(elsewhere)
    assert main(["status", "rel", "--store", str(store), "--storage-path", str(runs)]) == 0
    assert "2/2 trials finished" in capsys.readouterr().out
    assert main(["resume", "rel", "--store", str(store), "--storage-path", str(runs)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert list(elsewhere.iterdir()) == []  # no stray store
