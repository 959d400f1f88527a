"""A study's progress per grid point, read from the store: planned, done, running, best."""

from __future__ import annotations

import pandas as pd

from study.config import SweepSpec, grid_point_id
from study.store import Store, StoreError


def study_status(spec: SweepSpec) -> pd.DataFrame:
    """Per grid point: planned, completed, running, failed/diverged/pruned, best score (a
    DataFrame; the grid point id in column ``cell``, as the store names it)."""
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
        running = int(counts.get("running", 0) + counts.get("retrying", 0))
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
