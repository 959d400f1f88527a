"""One-at-a-time references the tests hold the vectorized code to: the learning rate of
one step (study.train.lr_schedule computes every pack member's at once) and the boundary
of one OOD curve (analysis.breakdown.trial_boundaries computes every trial's at once)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.breakdown import Metric
from study.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then constant or cosine."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def find_boundary(
    x: np.ndarray, score: np.ndarray, id_score: float, metric: Metric, threshold: float = 0.5, tol: float = 0.05
) -> tuple[float, Any, list[float]]:
    """(boundary, monotone, recovers_at) of one OOD curve ``score`` over increasing ``x``.

    Retention r = (score - floor) / (id_score - floor).  boundary: the first x with
    r < threshold, NaN if none.  monotone: r never rises by more than ``tol`` from one
    OOD point to the next.  recovers_at: the x after the boundary with
    r >= threshold.  When the ID score is no better than the floor, or there is no
    OOD point, retention is undefined: (NaN, None, []).
    """
    keep = ~np.isnan(score)
    x, score = np.asarray(x, dtype=float)[keep], np.asarray(score, dtype=float)[keep]
    gain = (id_score - metric.floor) * (1 if metric.higher_is_better else -1)
    if len(x) == 0 or not gain > 0:
        return float("nan"), None, []
    r = (score - metric.floor) / (id_score - metric.floor)
    monotone = bool(np.all(np.diff(r) <= tol))
    below = np.flatnonzero(r < threshold)
    if len(below) == 0:
        return float("nan"), monotone, []
    first = below[0]
    recovers = [_number(v) for v in x[first + 1 :][r[first + 1 :] >= threshold]]
    return _number(x[first]), monotone, recovers


def _number(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else value
