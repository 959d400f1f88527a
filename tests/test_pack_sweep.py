"""Sweeps with packs: every member is a trial in the store and in Optuna, on a real local Ray."""

from __future__ import annotations

import json
from collections import Counter

import optuna
import pytest
import yaml

from study.config import ConfigError, SweepSpec, load_sweep_spec
from study.store import Store
from study.tune.runner import journal_path, run_sweep
from study.tune.search import optuna_storage
from study.tune.trial import best_member

TINY_BASE = {
    "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 32, "train_fraction": 0.3},
    "model": {"size": "nano", "n_layer": 1},
    "train": {"steps": 40, "eval_every": 10, "checkpoint_every": 20, "batch_size": 16, "log_every": 10},
}
LR = {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}


def pack_spec(tmp_path, name: str, **fields) -> SweepSpec:
    data = {
        "name": name,
        "base": TINY_BASE,
        "grid": {"task.digits": [1, 2], "train.seed": [0, 1]},
        "tune": {"metric": "id_exact_match", "mode": "max", "trials_per_grid_point": 2, "params": LR},
        "pack": {"size": 3},
        "resources": {"cpus": 1},
        "store": str(tmp_path / "store"),
    }
    data.update(fields)
    spec = SweepSpec.model_validate(data)
    spec.check_trials()
    return spec


@pytest.mark.slow
def test_a_packed_sweep_stores_every_member_with_its_own_id_and_optuna_sees_one_trial_each(tmp_path, ray_local):
    # per digits value: 2 seed cells x 2 trials = 4 members, trained as packs of 3 and 1
    spec = pack_spec(tmp_path, "packed")
    results = run_sweep(spec)
    assert sorted(len(r.config["members"]) for r in results) == [1, 1, 3, 3]

    store = Store(spec.store, create=False)
    trials = store.frame("trials", study="packed")
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}
    assert trials["cell"].value_counts().to_dict() == {
        f"task.digits={d}|train.seed={s}": 2 for d in (1, 2) for s in (0, 1)
    }
    configs = trials["config"].map(json.loads)
    assert all(c["train"]["seed"] == json.loads(g)["train.seed"] for c, g in zip(configs, trials["grid"]))
    assert {c["pack"]["size"] for c in configs} == {3}
    tune_ids = {r.metrics["trial_id"] for r in results}
    assert {tid.rsplit("_", 1)[0] for tid in trials["trial_id"]} == tune_ids

    evals = store.frame("evals", study="packed")
    assert set(evals["trial_id"]) == set(trials["trial_id"])
    assert evals.groupby("trial_id")["step"].apply(lambda s: sorted(s.unique())).map(tuple).nunique() == 1
    assert sorted(evals["step"].unique()) == [10, 20, 30, 40]

    storage = optuna_storage(None, journal_path(spec))
    for cell, group in trials.groupby("cell"):
        study = optuna.load_study(study_name=f"packed/{cell}", storage=storage)
        assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        assert sorted(t.value for t in study.trials) == pytest.approx(sorted(group["score"]))
        assert {t.params["train.lr"] for t in study.trials} == {json.loads(c)["train"]["lr"] for c in group["config"]}


@pytest.mark.slow
def test_early_stopping_stops_a_pack_only_with_all_its_running_members(tmp_path, ray_local):
    spec = pack_spec(
        tmp_path,
        "packstops",
        grid={"train.seed": [0, 1, 2, 3]},
        tune={
            "metric": "loss",
            "mode": "min",
            "trials_per_grid_point": 1,
            "seed": 0,
            "params": {"train.lr": {"type": "categorical", "choices": [1e-5, 1e-3, 3e-3]}},
        },
        pack={"size": 2},
        early_stopping={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        max_concurrent=1,
    )
    results = run_sweep(spec)
    trials = Store(spec.store, create=False).frame("trials", study="packstops").set_index("trial_id")
    assert len(trials) == 4 and set(trials["status"]) <= {"completed", "pruned"}
    for r in results:  # the members of one pack stop together
        assert len({trials.loc[m["trial_id"], "status"] for m in r.config["members"]}) == 1
    storage = optuna_storage(None, journal_path(spec))
    expected = {"completed": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}
    states = Counter()
    for seed in range(4):
        study = optuna.load_study(study_name=f"packstops/train.seed={seed}", storage=storage)
        states.update(t.state for t in study.trials)
    assert states == Counter(expected[s] for s in trials["status"])


def test_a_pack_reports_its_best_members_score_to_the_scheduler():
    latest = {
        "a": {"loss": 0.5, "status": "running"},
        "b": {"loss": float("nan"), "status": "diverged"},
        "c": {"loss": 0.2, "status": "running"},
    }
    assert best_member(latest, "loss", "min") is latest["c"]
    assert best_member(latest, "loss", "max") is latest["a"]
    assert best_member({"b": latest["b"]}, "loss", "min") is latest["b"]  # nobody scored: the first


def test_pack_groups_put_the_seeds_of_a_cell_together():
    spec = SweepSpec.model_validate(
        {"name": "g", "base": TINY_BASE, "pack": {"size": 2}, "grid": {"task.digits": [1, 2], "train.seed": [0, 1, 2]}}
    )
    points = spec.grid_points()
    groups = [[points[i]["task.digits"] for i in group] for group in spec.pack_groups()]
    assert groups == [[1, 1, 1], [2, 2, 2]]
    unpacked = SweepSpec.model_validate({"name": "g", "base": TINY_BASE, "grid": spec.grid})
    assert unpacked.pack_groups() == [[i] for i in range(6)]


def test_bad_packs_are_refused_before_ray_starts(tmp_path):
    path = tmp_path / "spec.yaml"

    def error(data: dict, overrides: list[str] = ()) -> str:
        spec = {
            "name": "x",
            "base": TINY_BASE,
            "grid": {"train.seed": [0, 1]},
            "tune": {"trials_per_grid_point": 2, "params": LR},
            **data,
        }
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(ConfigError) as info:
            load_sweep_spec(path, list(overrides))
        return str(info.value)

    assert "pack.size: give a whole number of members, at least 1 (1 trains single models), or auto (got 0)" in error(
        {}, ["pack.size=0"]
    )
    assert "pack.size=5 is larger than the 4 members a cell holds" in error({"pack": {"size": 5}})
    dropout = {"model.dropout": {"type": "uniform", "low": 0.0, "high": 0.2}}
    assert "tuned axes ['model.dropout']: members of a pack share the architecture" in error(
        {"pack": {"size": 2}, "tune": {"trials_per_grid_point": 2, "params": dropout}}
    )
    assert "base.pack: set the pack size at the top level" in error(
        {"pack": {"size": 2}, "base": {**TINY_BASE, "pack": {"size": 2}}}
    )
    error({"pack": {"size": 5}})  # writes a spec whose only fault is the pack size
    assert load_sweep_spec(path, ["pack.size=4"]).pack.size == 4  # --set pack.size=K on a sweep
