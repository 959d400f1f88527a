"""Names the service gives things, each rule in one place."""

from __future__ import annotations

from typing import Any


def grid_point_id(point: dict[str, Any]) -> str:
    """A short stable name for a grid point: ``model.size=nano|train.seed=0`` (``all`` for no grid)."""
    return "|".join(f"{k}={v}" for k, v in point.items()) or "all"


def is_seed_axis(axis: str) -> bool:
    """Seed axes (``train.seed``, ``task.seed``, ...) make replicates of a cell, not cells."""
    return axis.rsplit(".", 1)[-1] in ("seed", "seeds")
