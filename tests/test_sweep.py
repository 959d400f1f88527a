"""Sweeps on a real local Ray with real Optuna and a real Parquet store."""

from __future__ import annotations

import json
from collections import Counter

import optuna
import pytest
import yaml

from study.config import ConfigError, SweepSpec, load_sweep_spec
from study.tune.search import optuna_storage
from study.store import Store
from study.tune.runner import journal_path, run_sweep
from study.tune.status import study_status

TINY_BASE = {
    "task": {
        "digits": 1,
        "width": 3,
        "eval_max_len": 3,
        "eval_examples": 32,
        "train_fraction": 0.3,
        "probes": {"points": 64},
    },
    "model": {"size": "nano", "n_layer": 1},
    "train": {"steps": 40, "eval_every": 10, "checkpoint_every": 20, "batch_size": 16, "log_every": 10},
}


def tiny_spec(tmp_path, name: str, **fields) -> SweepSpec:
    data = {
        "name": name,
        "base": TINY_BASE,
        "grid": {"task.digits": [1, 2]},
        "tune": {
            "metric": "id_exact_match",
            "mode": "max",
            "trials_per_grid_point": 2,
            "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        },
        "resources": {"cpus": 1},
        "max_failures": 2,
        "store": str(tmp_path / "store"),
    }
    data.update(fields)
    spec = SweepSpec.model_validate(data)
    spec.check_trials()
    return spec


@pytest.mark.slow
def test_every_cell_gets_its_quota_and_results_reach_the_cells_study(tmp_path, ray_local):
    spec = tiny_spec(tmp_path, "quota")
    run_sweep(spec)
    store = Store(spec.store, create=False)
    trials = store.frame("trials", study="quota")
    assert sorted(trials["cell"].value_counts().to_dict().items()) == [("task.digits=1", 2), ("task.digits=2", 2)]
    assert set(trials["status"]) == {"completed"}
    # each cell's Optuna study holds exactly its own trials, told the score the store holds
    storage = optuna_storage(None, journal_path(spec))
    for cell, group in trials.groupby("cell"):
        study = optuna.load_study(study_name=f"quota/{cell}", storage=storage)
        values = sorted(t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
        assert values == pytest.approx(sorted(group["score"]))
        lrs = {t.params["train.lr"] for t in study.trials}
        assert lrs == {json.loads(c)["train"]["lr"] for c in group["config"]}
    # the grid values and the config travel with each trial
    assert {json.loads(g)["task.digits"] for g in trials["grid"]} == {1, 2}
    evals = store.frame("evals", study="quota")
    assert sorted(evals["step"].unique()) == [10, 20, 30, 40]
    per_trial = evals.groupby("trial_id").size()
    assert per_trial.nunique() == 1  # every trial reported the same conditions x metrics x steps
    curves = store.frame("curves", study="quota")
    assert set(curves["metric"]) >= {"loss", "lr", "grad_norm", "examples_per_s"}
    # the probe scores of every evaluation, next to the PCA points
    units = store.frame(
        "representations", study="quota", where="kind = 'probe_digit' AND split = 'id' AND position = 0"
    )
    assert units.groupby("trial_id")["step"].apply(sorted).tolist() == [[10, 20, 30, 40]] * 4
    assert units["value"].between(0, 1).all() and (units["layer"] == -1).all() and units["head"].isna().all()
    aligned = store.frame("representations", study="quota", where="kind = 'attention_alignment' AND step = 40")
    assert sorted(aligned["head"].unique()) == [0, 1, 2] and (aligned["layer"] == 0).all()  # 1 block, 3 heads
    assert aligned["value"].between(0, 1).all() and aligned.groupby("trial_id").size().nunique() == 1
    status = study_status(spec)
    assert status["completed"].tolist() == [2, 2] and status["pending"].tolist() == [0, 0]
    # Tune's own per-trial logs keep the metrics but not the rows (those live in the store)
    result_files = list((tmp_path / "store" / "_runs" / "quota").glob("*/result.json"))
    assert len(result_files) == 4
    last = json.loads(result_files[0].read_text().splitlines()[-1])
    assert "id_exact_match" in last and "rows" not in last
    # the finished study was compacted: one fragment per table partition
    assert all(len(store.fragments(t, "quota")) == 1 for t in ("trials", "evals", "curves"))


@pytest.mark.slow
def test_a_failing_trial_is_retried_from_its_checkpoint_and_rows_are_stored_once(tmp_path, ray_local):
    spec = tiny_spec(tmp_path, "retry", grid={"task.digits": [1]}, tune={"trials_per_grid_point": 1})
    # checkpoints at steps 20 and 40; the first attempt dies right after reporting step 30
    run_sweep(spec, fail_once_at_step=30)
    store = Store(spec.store, create=False)
    trials = store.frame("trials", study="retry")
    assert len(trials) == 1 and trials["status"].iloc[0] == "completed" and trials["attempt"].iloc[0] == 1
    attempts = store.frame("evals", study="retry").groupby("step")["attempt"].unique().apply(sorted).to_dict()
    assert attempts[10] == [0] and attempts[20] == [0]  # resumed from the checkpoint at step 20 ...
    assert attempts[30] == [1] and attempts[40] == [1]  # ... so step 30 was reported again, and that one is kept
    evals = store.frame("evals", study="retry")
    keys = ["step", "split", "metric", "len_a", "len_b"]
    assert not evals.duplicated(keys).any()
    assert sorted(evals["step"].unique()) == [10, 20, 30, 40]


def test_bad_specs_are_refused_before_ray_starts(tmp_path):
    path = tmp_path / "spec.yaml"

    def error(data: dict) -> str:
        path.write_text(yaml.safe_dump({"name": "x", "base": TINY_BASE, **data}))
        with pytest.raises(ConfigError) as info:
            load_sweep_spec(path)
        return str(info.value)

    assert "did you mean grid" in error({"gird": {"task.digits": [1]}})
    assert "grid.task.digits is empty" in error({"grid": {"task.digits": []}})
    assert "swap them" in error({"tune": {"params": {"train.lr": {"type": "uniform", "low": 1, "high": 0.1}}}})
    assert "task.digts: unknown key" in error({"grid": {"task.digts": [1, 2]}})
    assert "task.digits=7" in error({"grid": {"task.digits": [2, 7]}})
    assert "max_failures" in error({"max_failures": "often"})
    assert "not a summary metric" in error({"tune": {"metric": "accuracy"}})
    assert "not a summary metric" in error({"tune": {"metric": "id_nmse"}})  # an arithmetic study has no nmse
    assert "use tune.mode=min" in error({"tune": {"metric": "loss", "mode": "max"}})
    assert "Optuna refuses" in error(
        {"tune": {"params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2, "step": 1e-4}}}}
    )
    assert "name" in error({"name": "_hidden"})
    spec = tiny_spec(tmp_path, "huge", resources={"cpus": 4096})
    from study.tune.runner import check_resources_locally

    with pytest.raises(ConfigError, match="resources.cpus=4096"):
        check_resources_locally(spec)


def test_run_cli_refuses_bad_input_with_one_message_and_no_ray(tmp_path):
    import subprocess
    import sys

    not_a_store = tmp_path / "notes"
    not_a_store.mkdir()
    (not_a_store / "thesis.txt").write_text("precious")
    quickstart = "search_spaces/quickstart.yaml"
    for args, expected in [
        (["--store", str(not_a_store)], "is not an oodstudy store"),
        (["--set", "grid.task.digits=[]"], "grid.task.digits is empty"),
        (["--set", "resources.gpus=4096"], "resources.gpus=4096.0 but this machine has"),
        (["--set", "model.n_head=5"], "model.n_head=5 does not divide model.d_model=48"),
    ]:
        out = subprocess.run(
            [sys.executable, "-m", "study.cli", "run", quickstart, *args], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2 and expected in out.stderr, (args, out.stderr)
        assert "Ray" not in out.stderr  # refused before any Ray work
    assert (not_a_store / "thesis.txt").read_text() == "precious"


@pytest.mark.slow
def test_diverged_and_pruned_trials_land_in_the_store_and_in_optuna(tmp_path, ray_local):
    spec = tiny_spec(
        tmp_path,
        "stops",
        grid={"train.grad_clip": [None]},
        # TPE seed 0 asks lr 1e-3, 1e9, 1e-5, ...: the 1e9 trial diverges, the 1e-5 one trails the 1e-3 one
        tune={
            "metric": "loss",
            "mode": "min",
            "trials_per_grid_point": 5,
            "seed": 0,
            "params": {"train.lr": {"type": "categorical", "choices": [1e-5, 1e-3, 3e-3, 1e9]}},
        },
        early_stopping={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        max_concurrent=1,
    )
    run_sweep(spec)
    trials = Store(spec.store, create=False).frame("trials", study="stops")
    lrs = trials["config"].map(lambda c: json.loads(c)["train"]["lr"])
    assert len(trials) == 5
    assert set(trials.loc[lrs == 1e9, "status"]) <= {"diverged"}
    assert set(trials["status"]) <= {"completed", "pruned", "diverged"}
    storage = optuna_storage(None, journal_path(spec))
    study = optuna.load_study(study_name="stops/train.grad_clip=None", storage=storage)
    expected = {
        "completed": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
        "diverged": optuna.trial.TrialState.FAIL,
    }
    in_optuna = Counter((t.params["train.lr"], t.state) for t in study.trials)
    assert in_optuna == Counter((lr, expected[status]) for lr, status in zip(lrs, trials["status"]))
    assert {"pruned", "diverged"} <= set(trials["status"]), trials[["status", "steps"]]
