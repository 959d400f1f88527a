"""A study's progress per grid point: planned, done, running, best; finished trials from
the store, running ones from the live progress file of the driver running the study."""

from __future__ import annotations

from typing import Any

import pandas as pd

from study.config import SweepSpec, grid_point_id
from study.store import StoreError  # Store (duckdb): imported when a status is read


def study_status(spec: SweepSpec, live: dict[str, Any] | None = None, stopped: bool = False) -> pd.DataFrame:
    """Per grid point: planned, completed, running, failed/diverged/pruned, best score (a DataFrame).

    ``live`` is the progress snapshot of a running driver
    (:func:`study.tune.progress.read_progress`): its running counts replace the
    store's, which sees a trial only once its first rows are flushed.  ``stopped``: no
    driver runs the study now, so trials the store last saw running are not running
    (they count as pending: ``resume`` runs them).
    """
    from study.store import Store  # not at module level: `oodstudy trial` imports this module

    planned = {grid_point_id(p): spec.tune.trials_per_cell for p in spec.grid_points()}
    try:
        trials = Store(spec.store, create=False).frame("trials", study=spec.name)
    except StoreError:  # no store yet: nothing has run
        trials = pd.DataFrame(columns=["cell", "status", "score"])
    rows = []
    for pid, n in planned.items():
        mine = trials[trials["cell"] == pid]
        scores = mine.loc[mine["status"].isin(["completed", "converged"]), "score"].dropna()
        best = (scores.max() if spec.tune.mode == "max" else scores.min()) if len(scores) else float("nan")
        counts = mine["status"].value_counts()
        finished = int(sum(counts.get(s, 0) for s in ("completed", "converged", "failed", "diverged", "pruned")))
        running = 0 if stopped else int(counts.get("running", 0) + counts.get("retrying", 0))
        if live is not None and pid in live.get("points", {}):
            running = int(live["points"][pid]["running"])
        rows.append({
            "cell": pid,
            "planned": n,
            "completed": int(counts.get("completed", 0)),
            "converged": int(counts.get("converged", 0)),
            "running": running,
            "failed": int(counts.get("failed", 0)),
            "diverged": int(counts.get("diverged", 0)),
            "pruned": int(counts.get("pruned", 0)),
            "pending": max(0, n - finished - running),
            f"best_{spec.tune.metric}": best,
        })
    return pd.DataFrame(rows)


def is_finished(table: pd.DataFrame) -> bool:
    """Has every grid point its planned trials finished (nothing running or pending)?"""
    return bool(len(table)) and int((table["pending"] + table["running"]).sum()) == 0


def cell_status(table: pd.DataFrame, mode: str = "max") -> pd.DataFrame:
    """A :func:`study_status` table summed over seeds: one row per cell (the grid point
    id without its seed axes), the best score the best (``mode``) over its grid points."""
    def cell_of(point: str) -> str:
        parts = [p for p in point.split("|") if p.split("=", 1)[0].rsplit(".", 1)[-1] not in ("seed", "seeds")]
        return "|".join(parts) or "all"

    best = [c for c in table.columns if c.startswith("best_")]
    counts = [c for c in table.columns if c not in ("cell", *best)]
    grouped = table.assign(cell=table["cell"].map(cell_of)).groupby("cell", sort=False)
    out = grouped[counts].sum()
    for column in best:
        out[column] = grouped[column].max() if mode == "max" else grouped[column].min()
    return out.reset_index()
