"""The threshold search as a Ray Tune ``Searcher`` (see :mod:`study.tune.threshold` for the
section, the model and the stop rule): a module of its own so that reading a spec does not
import Ray Tune."""

from __future__ import annotations

from typing import Any, Iterable

from ray.tune.search import Searcher

from study.errors import ConfigError
from study.tune.search import PickledState
from study.tune.threshold import (
    CellState,
    Record,
    ThresholdSearch,
    TrialBuilder,
    make_model,
    outcome,
    propose,
    rebuild_cells,
    stop_reason,
    threshold_rows,
)


def _member_result(result: dict[str, Any], member_id: str) -> dict[str, Any] | None:
    from study.tune.search import member_result

    return member_result(result, member_id)


class ThresholdSearcher(PickledState, Searcher):
    """Suggests trial configs like :class:`~study.tune.search.CellSearcher`:
    ``{"study", "cell", "grid", "params": {}, "trial", "members": [...], "metric", "mode",
    "threshold": {"cell", "axis", "value", "position"}}``.

    Per cell, one point is in flight at a time: its ``seeds_per_point`` seeds go out as
    one Tune trial each (``pack_size`` 1) or as packs of up to ``pack_size`` members; when
    all are back, the posterior is refitted, the stop rule checked and the next point
    proposed.  Cells are served round-robin, so with several cells the workers stay busy;
    a cell waiting for its point is skipped (``suggest`` returns None when every open cell
    waits, FINISHED when every cell stopped).  A member's ``grid`` is its cell's point plus
    the axis value and ``train.seed``; its ``cell`` is that grid point's id.  Seeds at a
    position are numbered from 0 and continue where the last visit there ended, so no
    config is trained twice.

    ``records`` (finished seeds from the store, see :class:`Record`) rebuild the cells'
    outcomes for ``resume``: finished points are not proposed again.
    """

    def __init__(
        self,
        search: ThresholdSearch,
        cells: list[dict[str, Any]],
        build: TrialBuilder,
        *,
        pack_size: int = 1,
        study: str = "",
        records: Iterable[Record] = (),
    ):
        super().__init__(metric=search.success.metric, mode="max" if search.success.op == ">=" else "min")
        if not cells:
            raise ConfigError("a threshold search needs at least one cell (an empty grid is one cell: [{}])")
        self.search = search
        self.build = build
        self.pack_size = pack_size
        self.study = study
        self.model = make_model(search)
        self.cells = rebuild_cells(search, cells, records)  # cell id -> state
        self.order = list(self.cells)  # round-robin order
        self.next_cell = 0
        self.live: dict[str, list[tuple[str, float, int, str]]] = {}  # tune trial id -> (cell, t, seed, member id)
        for cell in self.cells.values():
            cell.stopped = stop_reason(search, self.model, cell)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return True  # the threshold section fixes everything

    # -- proposing

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for offset in range(len(self.order)):
            cell = self.cells[self.order[(self.next_cell + offset) % len(self.order)]]
            if cell.stopped:
                continue
            if cell.pending is None:
                t = propose(self.search, self.model, cell)
                first = cell.seeds_at.get(t, 0)
                cell.pending = {"t": t, "seeds": list(range(first, first + self.search.seeds_per_point)), "open": 0}
                cell.seeds_at[t] = first + self.search.seeds_per_point
                if t not in cell.points:
                    cell.points.append(t)
            if not cell.pending["seeds"]:
                continue  # its point is out; wait for its outcomes
            self.next_cell = (self.next_cell + offset + 1) % len(self.order)
            return self._trial(trial_id, cell, cell.pending)
        if all(c.stopped for c in self.cells.values()):
            # Ray annotates suggest as Optional[Dict] while its docstring and Tune take FINISHED
            return Searcher.FINISHED  # type: ignore[return-value]
        return None

    def _trial(self, trial_id: str, cell: CellState, pending: dict[str, Any]) -> dict[str, Any]:
        """The next pack (or one member) of the cell's pending point."""
        from study.naming import grid_point_id
        from study.tune.search import member_trial_id

        axis = self.search.axis
        value = self.search.value_at(pending["t"])
        take = pending["seeds"][: self.pack_size]
        pending["seeds"] = pending["seeds"][len(take) :]
        pending["open"] += len(take)
        cell.trials += len(take)
        members, live = [], []
        for k, seed in enumerate(take):
            grid = {**cell.point, axis: value, "train.seed": seed}
            member_id = member_trial_id(trial_id, k, self.pack_size)
            members.append(
                {
                    "trial_id": member_id,
                    "cell": grid_point_id(grid),
                    "grid": grid,
                    "params": {},
                    "trial": self.build(dict(cell.point), value, seed),
                }
            )
            live.append((cell.id, pending["t"], seed, member_id))
        self.live[trial_id] = live
        first = members[0]
        return {
            "study": self.study,
            # what the scheduler compares: the member's grid point, or for a pack its point without the seed
            "cell": first["cell"] if self.pack_size == 1 else grid_point_id({**cell.point, axis: value}),
            "grid": first["grid"],
            "params": {},
            "trial": first["trial"],
            "members": members,
            "metric": self.search.success.metric,
            "mode": self.mode,
            "threshold": {"cell": cell.id, "axis": axis, "value": value, "position": pending["t"]},
        }

    # -- outcomes

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Each member's outcome (see :func:`outcome`) joins its cell; when the cell's point
        is all back, the stop rule is checked."""
        if trial_id not in self.live:
            return
        members = self.live.pop(trial_id)
        for cell_id, t, seed, member_id in members:
            cell = self.cells[cell_id]
            mine = _member_result(result or {}, member_id)
            if mine is None:
                mine = (result or {}) if len(members) == 1 else {}  # a one-model trainable reports flat
            value = mine.get(self.search.success.metric)
            ok = None if error else outcome(self.search.success, mine.get("status"), value)
            self._record(cell, t, ok)

    def _record(self, cell: CellState, t: float, ok: bool | None) -> None:
        if ok is None:
            cell.errors += 1
        else:
            cell.outcomes.append((t, ok))
        if cell.pending is not None and cell.pending["t"] == t:
            cell.pending["open"] -= 1
            if cell.pending["open"] <= 0 and not cell.pending["seeds"]:
                cell.pending = None
                cell.stopped = stop_reason(self.search, self.model, cell)

    # -- results and state

    def rows(self) -> list[dict[str, Any]]:
        """The store's threshold table rows, one per cell (see :func:`threshold_rows`)."""
        return threshold_rows(self.search, self.cells.values())

    def get_state(self) -> dict[str, Any]:
        """Plain data only (the builder and the model are rebuilt by the constructor)."""
        return {"cells": self.cells, "order": self.order, "next_cell": self.next_cell, "live": self.live}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
