"""A study's progress per grid point: planned, done, running, best; finished trials from
the store, running ones from the live progress file of the driver running the study."""

from __future__ import annotations

from typing import Any

import pandas as pd

from study.config import SweepSpec
from study.naming import cell_id, cell_of_point_id, grid_point_id
from study.store import StoreError  # Store (duckdb): imported when a status is read


def study_status(spec: SweepSpec, live: dict[str, Any] | None = None, stopped: bool = False) -> pd.DataFrame:
    """Per grid point (column ``grid_point``, its id): planned, completed, running,
    failed/diverged/pruned, pending, best score (a DataFrame).

    ``live`` is the progress snapshot of a running driver
    (:func:`study.tune.progress.read_progress`): its running counts replace the
    store's, which sees a trial only once its first rows are flushed.  ``stopped``: no
    driver runs the study now, so trials the store last saw running are not running
    (they count as pending: ``resume`` runs them).
    """
    from study.store import Store  # not at module level: `oodstudy trial` imports this module

    if spec.threshold is not None:
        return threshold_status(spec, live, stopped)
    planned = {grid_point_id(p): spec.tune.trials_per_grid_point for p in spec.grid_points()}
    try:
        trials = Store(spec.store, create=False).frame("trials", study=spec.name)
    except StoreError:  # no store yet: nothing has run
        trials = pd.DataFrame(columns=["cell", "status", "score"])
    rows = []
    for pid, n in planned.items():
        mine = trials[trials["cell"] == pid]  # the store's cell column holds the grid point id
        scores = mine.loc[mine["status"].isin(["completed", "converged"]), "score"].dropna()
        best = (scores.max() if spec.tune.mode == "max" else scores.min()) if len(scores) else float("nan")
        counts = mine["status"].value_counts()
        finished = int(sum(counts.get(s, 0) for s in ("completed", "converged", "failed", "diverged", "pruned")))
        running = 0 if stopped else int(counts.get("running", 0) + counts.get("retrying", 0))
        if live is not None and pid in live.get("points", {}):
            running = int(live["points"][pid]["running"])
        rows.append(
            {
                "grid_point": pid,
                "planned": n,
                "completed": int(counts.get("completed", 0)),
                "converged": int(counts.get("converged", 0)),
                "running": running,
                "failed": int(counts.get("failed", 0)),
                "diverged": int(counts.get("diverged", 0)),
                "pruned": int(counts.get("pruned", 0)),
                "pending": max(0, n - finished - running),
                f"best_{spec.tune.metric}": best,
            }
        )
    return pd.DataFrame(rows)


THRESHOLD_COLUMNS = [
    "cell",
    "trials",
    "completed",
    "converged",
    "running",
    "failed",
    "diverged",
    "pruned",
    "budget",
    "search",
    "estimate",
    "low",
    "high",
]


def threshold_cell(spec: SweepSpec, grid: dict[str, Any]) -> str:
    """The cell of a threshold search a member belongs to: its grid point less the axis and the seed."""
    assert spec.threshold is not None, "a threshold search's spec"
    return cell_id({k: v for k, v in grid.items() if k != spec.threshold.axis})


def threshold_status(spec: SweepSpec, live: dict[str, Any] | None = None, stopped: bool = False) -> pd.DataFrame:
    """Per cell of a threshold search (the number of trials is not known in advance): trials
    so far by status, the budget, the search's state (``searching``, ``converged``,
    ``budget``) and its latest threshold estimate and interval (the ``thresholds`` table)."""
    import json

    from study.store import Store

    search = spec.threshold
    assert search is not None, "a threshold search's spec"
    try:
        store = Store(spec.store, create=False)
        trials = store.frame("trials", study=spec.name)
        found = store.frame("thresholds", study=spec.name)
    except StoreError:
        trials = pd.DataFrame(columns=["cell", "grid", "status", "score"])
        found = pd.DataFrame(columns=THRESHOLD_COLUMNS)
    cells = trials["grid"].map(lambda g: threshold_cell(spec, json.loads(g or "{}"))) if len(trials) else trials["cell"]
    running_live: dict[str, int] = {}
    if live is not None:  # the live trials carry their grid point id: strip the axis and the seed
        for t in live.get("trials", []):
            if t.get("status") == "running":
                cell = cell_of_point_id(t["point"], without=(search.axis,))
                running_live[cell] = running_live.get(cell, 0) + 1
    rows = []
    for pid in (grid_point_id(p) for p in spec.grid_points()):
        counts = trials[cells == pid]["status"].value_counts() if len(trials) else pd.Series(dtype=int)
        mine = found[found["cell"] == pid]
        row = mine.iloc[0] if len(mine) else None
        running = 0 if stopped else int(counts.get("running", 0) + counts.get("retrying", 0))
        if live is not None:
            running = running_live.get(pid, 0)
        rows.append(
            {
                "cell": pid,
                "trials": int(sum(counts.get(s, 0) for s in ("completed", "converged", "failed", "diverged", "pruned")))
                + running,
                **{s: int(counts.get(s, 0)) for s in ("completed", "converged")},
                "running": running,
                **{s: int(counts.get(s, 0)) for s in ("failed", "diverged", "pruned")},
                "budget": search.budget,
                "search": row["stopped"] if row is not None else "searching",
                "estimate": float(row["estimate"]) if row is not None else float("nan"),
                "low": float(row["low"]) if row is not None else float("nan"),
                "high": float(row["high"]) if row is not None else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)


def is_finished(table: pd.DataFrame) -> bool:
    """Has every grid point its planned trials finished (nothing running or pending)?  For a
    threshold search (a :func:`threshold_status` table): has every cell's search stopped?"""
    if "search" in table.columns:
        return bool(len(table)) and bool((table["search"] != "searching").all()) and int(table["running"].sum()) == 0
    return bool(len(table)) and int((table["pending"] + table["running"]).sum()) == 0


def cell_status(table: pd.DataFrame, mode: str = "max") -> pd.DataFrame:
    """A :func:`study_status` table summed over seeds: one row per cell (column ``cell``: the
    grid point id without its seed axes), the best score the best (``mode``) over its grid points."""
    best = [c for c in table.columns if c.startswith("best_")]
    counts = [c for c in table.columns if c not in ("grid_point", *best)]
    cells = table["grid_point"].map(cell_of_point_id).rename("cell")
    grouped = table.drop(columns="grid_point").groupby(cells, sort=False)
    out = grouped[counts].sum()
    for column in best:
        out[column] = grouped[column].max() if mode == "max" else grouped[column].min()
    return out.reset_index()
