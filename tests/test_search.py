"""The per-cell searcher and scheduler, driven directly (no Tuner): quotas, routing, within-cell early stopping."""

from __future__ import annotations

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.config import SweepSpec
from study.tune.search import CellSearcher, PerCellScheduler


def spec(**tune) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "name": "s",
            "grid": {"task.digits": [1, 2, 3]},
            "tune": {
                "trials_per_grid_point": 2,
                "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
                **tune,
            },
        }
    )


def test_round_robin_over_cells_until_every_quota_is_handed_out(tmp_path):
    searcher = CellSearcher(spec(), str(tmp_path / "journal"))
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert [c["cell"] for c in configs] == ["task.digits=1", "task.digits=2", "task.digits=3"] * 2
    assert searcher.suggest("t6") is Searcher.FINISHED
    assert all(c["trial"]["task"]["digits"] == c["grid"]["task.digits"] for c in configs)
    assert all(1e-4 <= c["trial"]["train"]["lr"] <= 1e-2 for c in configs)


def test_scores_reach_their_own_cells_study_and_survive_save_restore(tmp_path):
    journal = str(tmp_path / "journal")
    searcher = CellSearcher(spec(), journal)
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {"id_exact_match": 0.25})
    searcher.on_trial_complete("t1", {"id_exact_match": 0.5}, error=False)
    searcher.on_trial_complete("t2", None, error=True)
    searcher.save(str(tmp_path / "state.pkl"))

    restored = CellSearcher(spec(), journal)
    restored.restore(str(tmp_path / "state.pkl"))
    remaining = [restored.suggest(f"u{i}") for i in range(3)]
    assert [c["cell"] for c in remaining] == ["task.digits=1", "task.digits=2", "task.digits=3"]
    assert restored.suggest("u3") is Searcher.FINISHED

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    one = optuna.load_study(study_name="s/task.digits=1", storage=storage)
    assert [t.value for t in one.trials if t.state.is_finished()] == [0.25]
    assert one.metric_names == ["id_exact_match"]  # what optuna-dashboard labels the objective with
    three = optuna.load_study(study_name="s/task.digits=3", storage=storage)
    assert [t.state for t in three.trials if t.state.is_finished()] == [optuna.trial.TrialState.FAIL]


def _trial(cell: str, name: str) -> Trial:
    return Trial("run_trial", config={"cell": cell}, trial_id=name, stub=True)


def _decisions(scheduler, scores: dict[str, float]) -> dict[str, str]:
    trials = {name: _trial(name.split("-")[0], name) for name in scores}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    return {
        name: scheduler.on_trial_result(None, trials[name], {"training_iteration": 1, "id_exact_match": score})
        for name, score in scores.items()
    }


def test_early_stopping_compares_trials_only_within_their_cell():
    # a hard cell (long operands) scores far below an easy one; its best trial must still go on
    scores = {"easy-1": 0.9, "easy-2": 0.95, "easy-3": 0.97, "hard-1": 0.05, "hard-2": 0.01, "hard-3": 0.2}
    options = dict(metric="id_exact_match", mode="max", grace_period=1, reduction_factor=2, max_t=10)
    per_cell = _decisions(PerCellScheduler(**options), scores)
    assert per_cell["hard-3"] == TrialScheduler.CONTINUE and per_cell["hard-2"] == TrialScheduler.STOP
    assert per_cell["easy-3"] == TrialScheduler.CONTINUE
    one_pool = _decisions(ASHAScheduler(time_attr="training_iteration", **options), scores)
    assert one_pool["hard-3"] == TrialScheduler.STOP  # what a single pool would have done
