"""A damaged study: a truncated trials fragment is named in one error line, moved aside
by the repair (never deleted), and the study's trials rows are rebuilt from its evals
and curves.  Real Parquet files in a tmp directory."""

from __future__ import annotations

import math
import os
import warnings

import pytest

from study.config import SweepSpec
from study.store import Store, StoreError, check_intact, damage, repair_study
from study.store.repair import DAMAGED_DIR

STEPS = 20  # every trial's planned train.steps
SPEC = {
    "name": "q",
    "base": {
        "task": {"digits": 1, "width": 3, "eval_max_len": 3},
        "model": {"size": "nano", "n_layer": 1},
        "train": {"steps": STEPS, "eval_every": 10},
    },
    "grid": {"task.digits": [1, 2]},
    "tune": {"metric": "id_exact_match", "mode": "max", "trials_per_grid_point": 2},
}


def write_trial(
    store: Store,
    trial: str,
    cell: str,
    last_step: int,
    *,
    loss: float = 1.0,
    status: str = "completed",
    value: float = 0.5,
) -> None:
    """What the driver writes for one trial: evals and curves per evaluation, then its trials row."""
    steps = list(range(10, last_step + 1, 10))
    evals = [
        {"trial_id": trial, "step": s, "split": split, "metric": "exact_match", "value": value, "len_a": n, "len_b": n}
        for s in steps
        for split, n in (("id", 1), ("ood", 3))
    ]
    curves = [{"trial_id": trial, "step": s, "metric": "loss", "value": loss if s == last_step else 1.0} for s in steps]
    store.append("evals", evals, study="q", cell=cell)
    store.append("curves", curves, study="q", cell=cell)
    store.append(
        "trials", [{"trial_id": trial, "status": status, "steps": last_step, "score": value}], study="q", cell=cell
    )


def truncate(path: str) -> None:
    """Keep the first half of a file, as a write cut short leaves it."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@pytest.fixture()
def damaged(tmp_path):
    """A finished study of 4 trials (one diverged, one stopped early) whose trials are all in
    one fragment (as after a compaction), truncated."""
    store = Store(str(tmp_path / "store"))
    write_trial(store, "t1", "task.digits=1", STEPS)
    write_trial(store, "t2", "task.digits=1", STEPS, value=0.75)
    write_trial(store, "t3", "task.digits=2", 10, loss=float("nan"), status="diverged")
    write_trial(store, "t4", "task.digits=2", 10, status="pruned")
    store.compact("q")
    (frag,) = store.fragments("trials", "q")
    truncate(frag.path)
    return store, frag.path


def quiet_frame(store: Store, table: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return store.frame(table, study="q")


def test_a_truncated_trials_fragment_is_named_in_one_line_with_validate_and_repair(damaged):
    store, path = damaged
    assert quiet_frame(store, "trials").empty  # what status and report read today: "0 trials"
    (found,) = damage(store, "q")
    assert (found.path, found.table) == (path, "trials") and found.size == os.path.getsize(path)
    with pytest.raises(StoreError) as err:
        check_intact(store, "q")
    message = str(err.value)
    assert "\n" not in message
    assert f"the store at {store.uri} is damaged: 1 trials fragment of study q cannot be read" in message
    assert f"trials/study=q/{os.path.basename(path)}" in message
    assert f"oodstudy store validate --store {store.uri}" in message
    assert f"oodstudy store repair --store {store.uri} --study q" in message


def test_repair_moves_the_fragment_aside_and_rebuilds_every_trial(damaged):
    store, path = damaged
    spec = SweepSpec.model_validate({**SPEC, "store": store.uri})
    with open(path, "rb") as f:
        kept = f.read()
    report = repair_study(store, "q", spec)

    aside = os.path.join(store.root, DAMAGED_DIR, os.path.relpath(path, store.root))
    assert report.moved == [(path, aside)]
    assert not os.path.exists(path) and open(aside, "rb").read() == kept  # moved, byte for byte
    trials = store.frame("trials", study="q").set_index("trial_id")
    assert sorted(trials.index) == ["t1", "t2", "t3", "t4"]
    assert trials.loc["t1", "status"] == trials.loc["t2", "status"] == "completed"
    assert trials.loc["t3", "status"] == "diverged"
    assert trials.loc["t4", "status"] == "abandoned"  # stopped before its planned steps: ending unknown
    assert trials.loc["t2", "score"] == 0.75 and math.isnan(trials.loc["t3", "score"])
    assert list(trials.loc[["t1", "t2", "t3", "t4"], "steps"]) == [STEPS, STEPS, 10, 10]
    assert set(trials["cell"]) == {"task.digits=1", "task.digits=2"}
    assert all("rebuilt by `oodstudy store repair`" in e for e in trials["error"])

    assert store.validate() == []  # _damaged is the tool's own: neither listed nor a problem
    check_intact(store, "q")
    again = repair_study(store, "q", spec)
    assert again.moved == [] and again.rebuilt == [] and "nothing to repair" in str(again)


def test_repair_without_the_spec_rebuilds_no_trial_as_completed(damaged):
    store, _ = damaged
    report = repair_study(store, "q")
    assert {r["trial_id"]: r["status"] for r in report.rebuilt} == {
        "t1": "abandoned",
        "t2": "abandoned",
        "t3": "diverged",
        "t4": "abandoned",
    }
    assert len(store.frame("trials", study="q")) == 4


def test_an_intact_study_passes_and_repairs_to_nothing(tmp_path):
    store = Store(str(tmp_path / "store"))
    write_trial(store, "t1", "task.digits=1", STEPS)
    check_intact(store, "q")
    assert damage(store, "q") == []
    report = repair_study(store, "q")
    assert report.moved == [] and report.rebuilt == []
