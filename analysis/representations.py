"""Representation geometry over training: does the units-digit state cluster by residue?

The ``representations`` table holds, per trial and step, the 2-D PCA of a hidden state
over a grid of inputs (a, b), each point labelled by its residue class.  Training moves
it from a blob to rings to one cluster per label; :func:`separation` turns that into a
number per step.  The points are read by :func:`analysis.load.points`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def separation_score(pc: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(between / within, between / total) of the sums of squares of points ``pc``
    ([n, 2]) grouped by ``labels``.  The first is infinite for perfectly tight
    clusters; the second (an R^2) lies in [0, 1]: ~0 for a blob with mixed labels,
    near 1 for one tight cluster per label."""
    pc = np.asarray(pc, dtype=float)
    codes, labels = pd.factorize(np.asarray(labels))
    counts = np.bincount(codes)
    means = np.stack([np.bincount(codes, weights=pc[:, j]) / counts for j in range(pc.shape[1])], axis=1)
    total = float(((pc - pc.mean(axis=0)) ** 2).sum())
    within = float(((pc - means[codes]) ** 2).sum())
    between = total - within
    ratio = between / within if within > 0 else float("inf")
    return ratio, (between / total if total > 0 else float("nan"))


def separation(points: pd.DataFrame) -> pd.DataFrame:
    """Cluster separation of the labels per trial, kind, step and split ("id", "ood"
    and "all" for both together).

    Columns: trial_id, kind, step, split, n_points, n_labels, separation (between- over
    within-label sum of squares of (pc1, pc2)), r2 (between over total).
    """
    rows = []
    both = points.assign(split="all")
    for (trial, kind, step, split), g in pd.concat([points, both]).groupby(
            ["trial_id", "kind", "step", "split"], sort=True):
        ratio, r2 = separation_score(g[["pc1", "pc2"]].to_numpy(), g["label"].to_numpy())
        rows.append((trial, kind, int(step), split, len(g), g["label"].nunique(), ratio, r2))
    return pd.DataFrame(rows, columns=["trial_id", "kind", "step", "split", "n_points", "n_labels",
                                       "separation", "r2"])
