"""Grid points x Optuna per grid point, as a Ray Tune ``Searcher``; early stopping within
a grid point.  (A grid point is every grid axis, seeds included: see ``SweepSpec``.)

Ray Tune cannot mix ``grid_search`` with Optuna, so the searcher owns both: it keeps one
Optuna study per grid point, hands out trials round-robin over the grid points that still
have quota (the map fills evenly), routes each finished trial's score back to its
grid point's study, and says FINISHED once every grid point has had its ``tune.trials_per_grid_point``.
Optuna studies live in an Optuna storage (a journal file by default) so that
``optuna-dashboard <journal>`` shows them while the sweep runs.
"""

from __future__ import annotations

import math
import pickle
import warnings
from typing import Any, Protocol

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.config import SweepSpec
from study.naming import cell_id, grid_point_id

optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_storage(url: str | None, journal_path: str):
    """An Optuna storage: the given RDB URL, or a journal file at ``journal_path``."""
    if url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(journal_path))


def member_trial_id(trial_id: str, k: int, pack_size: int) -> str:
    """The store's id of member k of a Tune trial: the trial's own id when packs are off."""
    return trial_id if pack_size == 1 else f"{trial_id}_{k}"


def member_result(result: dict[str, Any], member_id: str) -> dict[str, Any] | None:
    """One member's summary in a trial's result, nested (``result["members"][id]``) or as
    Tune flattens it for searchers and schedulers (``result["members/<id>/<key>"]``)."""
    nested = result.get("members")
    if isinstance(nested, dict):
        return nested.get(member_id)
    prefix = f"members/{member_id}/"
    found = {key[len(prefix) :]: value for key, value in result.items() if key.startswith(prefix)}
    return found or None


class _Stateful(Protocol):
    """What :class:`PickledState` needs of the searcher it is mixed into."""

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class PickledState:
    """``save``/``restore`` of a Tune searcher as one pickle of its ``get_state()``."""

    def save(self: _Stateful, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self: _Stateful, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


class CellSearcher(PickledState, Searcher):
    """Suggests trial configs: ``{"trial": <raw trial config>, "cell": id, "grid": {...}, "params": {...},
    "members": [...]}``.

    ``"cell"`` holds the grid point id (the key, like the store column it fills, keeps
    its first name).  With ``pack.size`` K > 1 a suggestion is a pack: up to K members
    (``members``, each with its own trial id, grid point id under ``cell``, grid, params
    and raw trial config) from the grid points of one cell (they differ only in
    ``train.seed``); every member counts toward its own grid point's quota and is its
    own Optuna trial.  ``"cell"`` is then the cell's id (the grid point without its
    seed): packs are compared with packs of the same cell.
    """

    def __init__(self, spec: SweepSpec, journal_path: str, ended: dict[str, int] | None = None):
        """``ended``: grid point id -> trials the store records as ended, which count toward
        its quota (a resume that has no readable Tune state continues from the store)."""
        super().__init__(metric=spec.tune.metric, mode=spec.tune.mode)
        self.spec = spec
        self.journal_path = journal_path
        self.points = spec.grid_points()
        self.point_ids = [grid_point_id(p) for p in self.points]
        self.groups = spec.pack_groups()  # the grid points (of one cell) a pack draws its members from
        self.group_ids = [cell_id(self.points[g[0]]) for g in self.groups]
        ended = ended or {}
        quota = spec.tune.trials_per_grid_point
        self.suggested = {
            pid: min(quota, ended.get(pid, 0)) for pid in self.point_ids
        }  # members handed out per grid point
        self.live: dict[
            str, list[tuple[str, int, str]]
        ] = {}  # tune trial id -> (grid point id, optuna number, member id)
        self.next_group = 0  # round-robin cursor
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
            sampler = (
                optuna.samplers.TPESampler(seed=seed)
                if tune.sampler == "tpe"
                else optuna.samplers.RandomSampler(seed=seed)
            )
            self._studies[pid] = optuna.create_study(
                study_name=self.study_name(pid),
                storage=optuna_storage(self.spec.optuna_storage, self.journal_path),
                direction="maximize" if tune.mode == "max" else "minimize",
                sampler=sampler,
                load_if_exists=True,
            )
            if self._studies[pid].metric_names != [tune.metric]:  # optuna-dashboard labels the objective with it
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._studies[pid].set_metric_names([tune.metric])
        return self._studies[pid]

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return True  # the spec already fixes metric, mode and the search space

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next Tune trial: a pack of up to ``pack.size`` members of one cell's grid points
        (one member when packs are off), each asked of its own grid point's Optuna study."""
        quota = self.spec.tune.trials_per_grid_point
        for offset in range(len(self.groups)):
            g = (self.next_group + offset) % len(self.groups)
            if any(self.suggested[self.point_ids[i]] < quota for i in self.groups[g]):
                break
        else:
            # Ray types suggest() as Optional[Dict] but documents Searcher.FINISHED (a str) as its "no more" answer
            return Searcher.FINISHED  # type: ignore[return-value]
        self.next_group = g + 1
        distributions = {name: d.optuna() for name, d in self.spec.tune.params.items()}
        members: list[dict[str, Any]] = []
        live: list[tuple[str, int, str]] = []
        while len(members) < self.spec.pack_size:
            open_points = [i for i in self.groups[g] if self.suggested[self.point_ids[i]] < quota]
            if not open_points:
                break
            index = min(open_points, key=lambda i: self.suggested[self.point_ids[i]])  # seeds fill evenly
            pid, point = self.point_ids[index], self.points[index]
            optuna_trial = self.study(pid).ask(distributions)
            params = {name: _plain(value) for name, value in optuna_trial.params.items()}
            self.suggested[pid] += 1
            member_id = member_trial_id(trial_id, len(members), self.spec.pack_size)
            members.append(
                {
                    "trial_id": member_id,
                    "cell": pid,
                    "grid": point,
                    "params": params,
                    "trial": self.spec.trial_raw(point, params),
                }
            )
            live.append((pid, optuna_trial.number, member_id))
        self.live[trial_id] = live
        first = members[0]
        return {
            "study": self.spec.name,
            "cell": first["cell"] if len(self.groups[g]) == 1 else self.group_ids[g],  # what the scheduler compares
            "grid": first["grid"],
            "params": first["params"],
            "trial": first["trial"],
            "members": members,
            "metric": self.spec.tune.metric,
            "mode": self.spec.tune.mode,
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # early stopping is the per-grid-point scheduler's job

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell each member's score to its own Optuna trial (a failed pack fails every member)."""
        if trial_id not in self.live:
            return
        members = self.live.pop(trial_id)
        for pid, number, member_id in members:
            mine = member_result(result or {}, member_id)
            if mine is None:
                mine = (result or {}) if len(members) == 1 else {}  # a one-model trainable reports flat
            value = mine.get(self.spec.tune.metric)
            study = self.study(pid)
            # skip_if_finished: a resumed run may end again a trial told before the driver died
            if error or value is None or not math.isfinite(float(value)):
                study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            elif mine.get("status") == "running":  # stopped early by the scheduler
                study.tell(number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            else:
                study.tell(number, float(value), skip_if_finished=True)

    def get_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.__getstate__().items() if k != "spec"}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._studies = {}


def _plain(value: Any) -> Any:
    """numpy scalars from Optuna -> plain Python, so configs stay JSON/YAML friendly."""
    return value.item() if hasattr(value, "item") else value


class PerCellScheduler(FIFOScheduler):
    """One ASHA scheduler per grid point: trials compete only with trials of their own grid point
    (with packs, per cell: packs compete with packs of their own cell).

    Packs: a pack reports its best member's score (see :mod:`study.tune.trial`), so ASHA
    stops a pack only when its best member falls below the cut, i.e. when every member
    would be stopped; the members still running are then recorded ``pruned``.
    """

    def __init__(self, metric: str, mode: str, grace_period: int, reduction_factor: float, max_t: int):
        super().__init__()
        self._metric, self._mode = metric, mode
        self.options: dict[str, Any] = dict(
            metric=metric,
            mode=mode,
            time_attr="training_iteration",
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            max_t=max_t,
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
        return f"PerCellScheduler over {len(self.by_point)} grid points"
