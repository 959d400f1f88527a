"""Grid points x Optuna per grid point, as a Ray Tune ``Searcher``; early stopping within
a grid point.  (A grid point is every grid axis, seeds included: see ``SweepSpec``.)

Ray Tune cannot mix ``grid_search`` with Optuna, so the searcher owns both: it keeps one
Optuna study per grid point, hands out trials round-robin over the grid points that still
have quota (the map fills evenly), routes each finished trial's score back to its
grid point's study, and says FINISHED once every grid point has had its ``trials_per_cell``.
Optuna studies live in an Optuna storage (a journal file by default) so that
``optuna-dashboard <journal>`` shows them while the sweep runs.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.config import SweepSpec, grid_point_id

optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_storage(url: str | None, journal_path: str):
    """An Optuna storage: the given RDB URL, or a journal file at ``journal_path``."""
    if url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(journal_path))


class CellSearcher(Searcher):
    """Suggests trial configs: ``{"trial": <raw trial config>, "cell": id, "grid": {...}, "params": {...}}``.

    ``"cell"`` holds the grid point id (the key, like the store column it fills, keeps
    its first name).
    """

    def __init__(self, spec: SweepSpec, journal_path: str):
        super().__init__(metric=spec.tune.metric, mode=spec.tune.mode)
        self.spec = spec
        self.journal_path = journal_path
        self.points = spec.grid_points()
        self.point_ids = [grid_point_id(p) for p in self.points]
        self.suggested = {pid: 0 for pid in self.point_ids}  # trials handed out per grid point
        self.live: dict[str, tuple[str, int]] = {}  # tune trial id -> (grid point id, optuna trial number)
        self.next_point = 0  # round-robin cursor
        self._studies: dict[str, optuna.Study] = {}

    # Optuna studies hold a storage handle: never pickle them, reopen by name instead.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_studies"] = {}
        return state

    def study_name(self, pid: str) -> str:
        return f"{self.spec.name}/{pid}"

    def study(self, pid: str) -> optuna.Study:
        if pid not in self._studies:
            tune = self.spec.tune
            seed = tune.seed + self.point_ids.index(pid)
            sampler = optuna.samplers.TPESampler(seed=seed) if tune.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
            self._studies[pid] = optuna.create_study(
                study_name=self.study_name(pid),
                storage=optuna_storage(self.spec.optuna_storage, self.journal_path),
                direction="maximize" if tune.mode == "max" else "minimize",
                sampler=sampler,
                load_if_exists=True,
            )
        return self._studies[pid]

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return True  # the spec already fixes metric, mode and the search space

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        quota = self.spec.tune.trials_per_cell
        for offset in range(len(self.points)):
            index = (self.next_point + offset) % len(self.points)
            pid = self.point_ids[index]
            if self.suggested[pid] < quota:
                break
        else:
            return Searcher.FINISHED
        self.next_point = index + 1
        distributions = {name: d.optuna() for name, d in self.spec.tune.params.items()}
        optuna_trial = self.study(pid).ask(distributions)
        params = {name: _plain(value) for name, value in optuna_trial.params.items()}
        self.suggested[pid] += 1
        self.live[trial_id] = (pid, optuna_trial.number)
        point = self.points[index]
        return {
            "study": self.spec.name,
            "cell": pid,
            "grid": point,
            "params": params,
            "trial": self.spec.trial_raw(point, params),
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # early stopping is the per-grid-point scheduler's job

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        pid, number = self.live.pop(trial_id)
        value = (result or {}).get(self.spec.tune.metric)
        study = self.study(pid)
        if error or value is None or not math.isfinite(float(value)):
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        elif (result or {}).get("status") == "running":  # stopped early by the scheduler
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(number, float(value))

    def get_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.__getstate__().items() if k != "spec"}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._studies = {}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


def _plain(value: Any) -> Any:
    """numpy scalars from Optuna -> plain Python, so configs stay JSON/YAML friendly."""
    return value.item() if hasattr(value, "item") else value


class PerCellScheduler(FIFOScheduler):
    """One ASHA scheduler per grid point: trials compete only with trials of their own grid point."""

    def __init__(self, metric: str, mode: str, grace_period: int, reduction_factor: float, max_t: int):
        super().__init__()
        self._metric, self._mode = metric, mode
        self.options = dict(
            metric=metric, mode=mode, time_attr="training_iteration",
            grace_period=grace_period, reduction_factor=reduction_factor, max_t=max_t,
        )
        self.by_point: dict[str, ASHAScheduler] = {}

    def _scheduler(self, trial) -> ASHAScheduler:
        pid = trial.config.get("cell", "all")  # the grid point id
        if pid not in self.by_point:
            self.by_point[pid] = ASHAScheduler(**self.options)
        return self.by_point[pid]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self._scheduler(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._metric not in result:
            return TrialScheduler.CONTINUE
        return self._scheduler(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._scheduler(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._scheduler(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"PerCellScheduler over {len(self.by_point)} cells"
