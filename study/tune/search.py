"""Grid cells x Optuna per cell, as a Ray Tune ``Searcher``; early stopping within a cell.

Ray Tune cannot mix ``grid_search`` with Optuna, so the searcher owns both: it keeps one
Optuna study per grid cell, hands out trials round-robin over the cells that still
have quota (the map fills evenly), routes each finished trial's score back to its
cell's study, and says FINISHED once every cell has had its ``trials_per_cell``.
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

from study.config import SweepSpec, cell_id

optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_storage(url: str | None, journal_path: str):
    """An Optuna storage: the given RDB URL, or a journal file at ``journal_path``."""
    if url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(journal_path))


class CellSearcher(Searcher):
    """Suggests trial configs: ``{"trial": <raw trial config>, "cell": id, "grid": {...}, "params": {...}}``."""

    def __init__(self, spec: SweepSpec, journal_path: str):
        super().__init__(metric=spec.tune.metric, mode=spec.tune.mode)
        self.spec = spec
        self.journal_path = journal_path
        self.cells = spec.cells()
        self.cell_ids = [cell_id(c) for c in self.cells]
        self.suggested = {cid: 0 for cid in self.cell_ids}  # trials handed out per cell
        self.live: dict[str, tuple[str, int]] = {}  # tune trial id -> (cell id, optuna trial number)
        self.next_cell = 0  # round-robin cursor
        self._studies: dict[str, optuna.Study] = {}

    # Optuna studies hold a storage handle: never pickle them, reopen by name instead.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_studies"] = {}
        return state

    def study_name(self, cid: str) -> str:
        return f"{self.spec.name}/{cid}"

    def study(self, cid: str) -> optuna.Study:
        if cid not in self._studies:
            tune = self.spec.tune
            seed = tune.seed + self.cell_ids.index(cid)
            sampler = optuna.samplers.TPESampler(seed=seed) if tune.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
            self._studies[cid] = optuna.create_study(
                study_name=self.study_name(cid),
                storage=optuna_storage(self.spec.optuna_storage, self.journal_path),
                direction="maximize" if tune.mode == "max" else "minimize",
                sampler=sampler,
                load_if_exists=True,
            )
        return self._studies[cid]

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return True  # the spec already fixes metric, mode and the search space

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        quota = self.spec.tune.trials_per_cell
        for offset in range(len(self.cells)):
            index = (self.next_cell + offset) % len(self.cells)
            cid = self.cell_ids[index]
            if self.suggested[cid] < quota:
                break
        else:
            return Searcher.FINISHED
        self.next_cell = index + 1
        distributions = {name: d.optuna() for name, d in self.spec.tune.params.items()}
        optuna_trial = self.study(cid).ask(distributions)
        params = {name: _plain(value) for name, value in optuna_trial.params.items()}
        self.suggested[cid] += 1
        self.live[trial_id] = (cid, optuna_trial.number)
        cell = self.cells[index]
        return {
            "study": self.spec.name,
            "cell": cid,
            "grid": cell,
            "params": params,
            "trial": self.spec.trial_raw(cell, params),
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # early stopping is the per-cell scheduler's job

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        cid, number = self.live.pop(trial_id)
        value = (result or {}).get(self.spec.tune.metric)
        study = self.study(cid)
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
    """One ASHA scheduler per grid cell: trials compete only with trials of their own cell."""

    def __init__(self, metric: str, mode: str, grace_period: int, reduction_factor: float, max_t: int):
        super().__init__()
        self._metric, self._mode = metric, mode
        self.options = dict(
            metric=metric, mode=mode, time_attr="training_iteration",
            grace_period=grace_period, reduction_factor=reduction_factor, max_t=max_t,
        )
        self.by_cell: dict[str, ASHAScheduler] = {}

    def _cell(self, trial) -> ASHAScheduler:
        cid = trial.config.get("cell", "all")
        if cid not in self.by_cell:
            self.by_cell[cid] = ASHAScheduler(**self.options)
        return self.by_cell[cid]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self._cell(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._metric not in result:
            return TrialScheduler.CONTINUE
        return self._cell(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._cell(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._cell(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"PerCellScheduler over {len(self.by_cell)} cells"
