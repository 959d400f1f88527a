"""Representation geometry over training: does the units-digit state cluster by residue?

The ``representations`` table holds, per trial and step, the 2-D PCA of a hidden state
over a grid of inputs (a, b), each point labelled by its residue class.  Training moves
it from a blob to rings to one cluster per label; :func:`separation` turns that into a
number per step.  The points are read by :func:`analysis.load.points`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import NOT_SCORED, axis_columns, cell_axes, cell_label, expected_cells


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
        ["trial_id", "kind", "step", "split"], sort=True
    ):
        ratio, r2 = separation_score(g[["pc1", "pc2"]].to_numpy(), g["label"].to_numpy())
        rows.append((trial, kind, int(step), split, len(g), g["label"].nunique(), ratio, r2))
    return pd.DataFrame(rows, columns=["trial_id", "kind", "step", "split", "n_points", "n_labels", "separation", "r2"])


# --------------------------------------------------------------------------- structure scores
#
# Frames from :func:`analysis.load.structure_scores`: one row per trial, step, kind,
# split, position, layer, length / shift and value (see ``Arithmetic.probe_scores`` and
# ``InContextRegression.probe_scores`` for what each kind measures).

FINAL_LAYER = -1


def score_rows(
    scores: pd.DataFrame, kind: str, position: int | None = None, split: str | None = None, layer: int = FINAL_LAYER
) -> pd.DataFrame:
    """The rows of one score: ``kind`` at ``position`` (any when None), ``split``, ``layer``."""
    keep = (scores["kind"] == kind) & (scores["layer"] == layer)
    if position is not None:
        keep &= scores["position"] == position
    if split is not None:
        keep &= scores["split"] == split
    return scores[keep.fillna(False).astype(bool)]


def _trial_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in ("trial_id", "grid_point", "status", "family") if c in frame] + axis_columns(frame)


def structure_vs_accuracy(
    scores: pd.DataFrame, evals: pd.DataFrame, kind: str = "probe_digit", position: int = 0, metric: str = "exact_match"
) -> pd.DataFrame:
    """Per trial and step: the ID structure score next to the ID accuracy.

    ``evals`` holds eval rows of the same trials (every step, e.g. ``load.evals``).
    Columns: trial_id, grid_point, status, family, the grid axes, step, structure (``kind`` at
    ``position`` on held-out ID inputs, mean over ID lengths), accuracy (mean ``metric``
    over the ID conditions); NaN where only one of the two was measured at a step.
    """
    structure = score_rows(scores, kind, position, "id").groupby(["trial_id", "step"])["value"].mean()
    ids = evals[(evals["metric"] == metric) & (evals["split"] == "id")]
    accuracy = ids.groupby(["trial_id", "step"])["value"].mean()
    both = pd.concat({"structure": structure, "accuracy": accuracy}, axis=1).reset_index()
    info = pd.concat([scores[_trial_columns(scores)], evals[_trial_columns(evals)]]).drop_duplicates("trial_id")
    out = info.merge(both, on="trial_id")
    return out.sort_values(["trial_id", "step"]).reset_index(drop=True)


def first_crossings(curves: pd.DataFrame, threshold: float = 0.9) -> pd.DataFrame:
    """Does structure come first?  Per trial of a :func:`structure_vs_accuracy` frame: the first
    step where the structure score reaches ``threshold`` (structure_step), the first where the
    ID accuracy does (accuracy_step), and lead = accuracy_step - structure_step (positive:
    the structure formed first; NaN when either never got there)."""
    rows = []
    for trial, g in curves.groupby("trial_id", sort=True):
        first = {}
        for column in ("structure", "accuracy"):
            reached = g.loc[g[column] >= threshold, "step"]
            first[column] = float(reached.min()) if len(reached) else np.nan
        rows.append(
            {
                "trial_id": trial,
                "structure_step": first["structure"],
                "accuracy_step": first["accuracy"],
                "lead": first["accuracy"] - first["structure"],
            }
        )
    out = pd.DataFrame(rows, columns=["trial_id", "structure_step", "accuracy_step", "lead"])
    info = curves[_trial_columns(curves)].drop_duplicates("trial_id")
    return info.merge(out, on="trial_id")


def _final(rows: pd.DataFrame) -> pd.DataFrame:
    """Each trial's rows at its last step, usable trials only (not failed or diverged)."""
    rows = rows[~rows["status"].isin(NOT_SCORED)]
    return rows[rows["step"] == rows.groupby("trial_id")["step"].transform("max")]


def _distribution(rows: pd.DataFrame, keys: list[str], value: str = "value") -> pd.DataFrame:
    g = rows.groupby(keys, dropna=False, sort=False, observed=True)[value]
    out = pd.DataFrame({"n": g.count(), "median": g.median(), "q25": g.quantile(0.25), "q75": g.quantile(0.75)})
    return out.reset_index()


def structure_by_length(
    scores: pd.DataFrame, kind: str = "probe_digit", position: int = 0, by: list[str] | None = None
) -> pd.DataFrame:
    """A structure score against the operand length, per cell, at each trial's final step.

    Columns: family, the ``by`` axes (default: every non-seed grid axis), cell, length,
    split ("id" at the training length, "ood" beyond), n (trials), median, q25, q75 of
    the score over the cell's usable trials.
    """
    rows = _final(score_rows(scores, kind, position))
    by = cell_axes(rows) if by is None else list(by)
    out = _distribution(rows, ["family"] + by + ["length", "split"])
    out.insert(1 + len(by), "cell", [cell_label(r, by) for r in out.to_dict("records")])
    return out.sort_values(["cell", "length"], kind="stable").reset_index(drop=True)


def structure_cells(
    scores: pd.DataFrame,
    trials: pd.DataFrame,
    kind: str = "probe_digit",
    position: int = 0,
    split: str = "id",
    by: list[str] | None = None,
) -> pd.DataFrame:
    """One structure score per cell of the grid, for a phase diagram.

    Each usable trial's score at its final step: on ID inputs (split "id"), or on the
    shortest OOD length it was probed at (split "ood"); then the median over the cell's
    trials.  Every cell the grid spans appears (NaN without a probed trial).  Columns:
    family, the ``by`` axes, cell, structure (median), q25, q75, n.
    """
    rows = _final(score_rows(scores, kind, position, split))
    if split == "ood" and len(rows):
        rows = rows[rows["length"] == rows.groupby("trial_id")["length"].transform("min")]
    by = cell_axes(trials) if by is None else list(by)
    per_trial = rows.groupby(["trial_id"] + ["family"] + by, dropna=False, observed=True)["value"].mean()
    dist = _distribution(per_trial.reset_index(), ["family"] + by)
    grid = (
        expected_cells(trials[trials["family"].isin(set(rows["family"]))], by) if len(rows) else dist[["family"] + by]
    )
    out = grid.merge(dist, on=["family"] + by, how="left").rename(columns={"median": "structure"})
    out["n"] = out["n"].fillna(0).astype(int)
    out.insert(1 + len(by), "cell", [cell_label(r, by) for r in out.to_dict("records")])
    return out[["family"] + by + ["cell", "structure", "q25", "q75", "n"]]


def coefficient_curves(scores: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """The in-context coefficient probe's R^2 against k, per cell and shift condition, at each
    trial's final step.  Columns: family, the ``by`` axes, cell, shift, shift_value, split,
    k, n, median, q25, q75."""
    rows = _final(score_rows(scores, "probe_coefficients")).rename(columns={"position": "k"})
    by = cell_axes(rows) if by is None else list(by)
    out = _distribution(rows, ["family"] + by + ["shift", "shift_value", "split", "k"])
    out.insert(1 + len(by), "cell", [cell_label(r, by) for r in out.to_dict("records")])
    return out.sort_values(["cell", "shift", "shift_value", "k"], kind="stable").reset_index(drop=True)


def attention_map(scores: pd.DataFrame, trial_id: str, kind: str = "attention_alignment") -> pd.DataFrame:
    """One trial's attention scores at its last probed step, for a heat map: one row per
    block ``layer``, ``head``, answer digit ``position``, ``split`` and ``length``, with
    ``value`` (see ``Arithmetic.probe_scores``: the share of attention on the operand digits
    of the digit's own place, or the most attended place).  Heads are not comparable across
    trials (head 0 of one model is not head 0 of another), so this is per trial."""
    rows = scores[(scores["kind"] == kind) & (scores["trial_id"] == trial_id)]
    rows = rows[rows["step"] == rows["step"].max()] if len(rows) else rows
    out = rows[["trial_id", "step", "layer", "head", "position", "split", "length", "value"]]
    return out.sort_values(["split", "length", "layer", "head", "position"], kind="stable").reset_index(drop=True)


def structure_by_layer(
    scores: pd.DataFrame, kind: str = "probe_digit", split: str = "id", by: list[str] | None = None
) -> pd.DataFrame:
    """A structure score per probed layer and answer digit, per cell, at each trial's final step
    (median and quartiles over the cell's usable trials; OOD: the shortest OOD length).  Layer
    -1 is the final state, l >= 0 the residual stream after block l.  Columns: family, the
    ``by`` axes, cell, layer, position, n, median, q25, q75."""
    keep = (scores["kind"] == kind) & (scores["split"] == split)
    if "head" in scores:  # attention scores have a head; the probes do not
        keep &= scores["head"].isna()
    rows = scores[keep]
    rows = _final(rows)
    if split == "ood" and len(rows):
        rows = rows[rows["length"] == rows.groupby("trial_id")["length"].transform("min")]
    by = cell_axes(rows) if by is None else list(by)
    out = _distribution(rows, ["family"] + by + ["layer", "position"])
    out.insert(1 + len(by), "cell", [cell_label(r, by) for r in out.to_dict("records")])
    # the final state (-1) after the blocks
    order = out["layer"].where(out["layer"] >= 0, np.inf)
    return (
        out.assign(_order=order)
        .sort_values(["cell", "_order", "position"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
