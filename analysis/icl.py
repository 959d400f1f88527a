"""In-context learning: error over k against baselines, model selection, shifts, mixtures.

Rows are the ``nmse*`` eval metrics: ``nmse`` for the model and ``nmse_<baseline>``
(lstsq, ridge, lasso, averaging, knn) measured on the same prompts; lower is better
and 1.0 is the error of predicting zero.  A condition is (shift, shift_value,
n_context); unshifted prompts have shift "none" (shift_value NaN or as stored).
The best trial of a cell has the lowest mean ID nmse (see analysis.breakdown).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.breakdown import best_trials, sort_cells, cell_distribution, trial_info, trial_scores
from analysis.load import cell_axes, cell_label
from study.tasks import functions_config

MODEL = functions_config.PRIMARY_METRIC  # the model's error, "nmse"
BASELINES = tuple(f"{MODEL}_{name}" for name in functions_config.BASELINES)  # "nmse_lstsq", ...
MIX_AXIS = "task.mix_weight"
CONDITION = ["shift", "shift_value", "n_context", "split"]


def _nmse_rows(final: pd.DataFrame) -> pd.DataFrame:
    rows = final[final["metric"].astype(str).str.startswith("nmse")].copy()
    rows["shift"] = rows["shift"].fillna("none").astype(str)
    return rows


def _labelled(out: pd.DataFrame, by: list[str], then: list[str]) -> pd.DataFrame:
    out = out.copy()
    out.insert(1 + len(by), "cell", [cell_label(r, by) for r in out[by].to_dict("records")] if by else "")
    return sort_cells(out, by, then)


def _best(final: pd.DataFrame, by: list[str] | None) -> tuple[list[str], pd.DataFrame]:
    scores = trial_scores(final, MODEL)
    by = cell_axes(scores) if by is None else list(by)
    return by, best_trials(scores, MODEL, by)


def icl_curves(final: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Normalized error over the number of in-context examples, model and baselines.

    Columns: family, the ``by`` axes (default: every non-seed grid axis), cell,
    shift, shift_value, n_context, split, metric ("nmse" for the model, "nmse_<name>"
    for a baseline), n, median, q25, q75 (over the cell's usable trials), best_trial,
    best (the value of the cell's best trial by ID nmse).
    """
    rows = _nmse_rows(final)
    by, best = _best(final, by)
    out = cell_distribution(rows, by, CONDITION + ["metric"], "value", best)
    return _labelled(out, by, ["shift", "shift_value", "metric", "n_context"])


def selection_gap(
    final: pd.DataFrame, by: list[str] | None = None, mix_axis: str = MIX_AXIS, match: tuple[str, ...] = ("model.size",)
) -> pd.DataFrame:
    """The model-selection gap: excess error over the best baseline at each condition,
    and over the single-class specialists when the study has them.

    A specialist is a cell whose ``mix_axis`` value is 0 or 1; a mixture cell is
    compared with the specialists that share its ``match`` axes (same model size by
    default), taking at each condition the specialist with the lower error.
    Columns: family, the ``by`` axes, cell, shift, shift_value, n_context, split,
    best_trial, nmse (best trial), best_baseline (the baseline metric with the lowest
    error on the best trial's prompts), nmse_baseline, gap (nmse - nmse_baseline),
    n, gap_median, gap_q25, gap_q75 (per-trial gaps over usable trials),
    nmse_specialist, specialist (its mix weight), gap_specialist (nmse -
    nmse_specialist; NaN for specialists themselves and without specialists).
    """
    rows = _nmse_rows(final)
    by, best = _best(final, by)
    keys = ["trial_id"] + CONDITION
    model = rows[rows["metric"] == MODEL]
    base = rows[rows["metric"].isin(BASELINES)].sort_values(["value", "metric"], kind="stable")
    base = base.drop_duplicates(keys)[keys + ["metric", "value"]].rename(
        columns={"metric": "best_baseline", "value": "nmse_baseline"}
    )
    per_trial = model.merge(base, on=keys, how="inner")
    per_trial["gap"] = per_trial["value"] - per_trial["nmse_baseline"]
    out = cell_distribution(per_trial, by, CONDITION, "gap", best).rename(
        columns={"median": "gap_median", "q25": "gap_q25", "q75": "gap_q75", "best": "gap"}
    )
    top = per_trial[["trial_id"] + CONDITION + ["value", "best_baseline", "nmse_baseline"]].rename(
        columns={"trial_id": "best_trial", "value": "nmse"}
    )
    out = out.merge(top, on=["best_trial"] + CONDITION, how="left")

    out["nmse_specialist"], out["specialist"] = np.nan, np.nan
    if mix_axis in by:
        weights = out[mix_axis].astype(float)
        special = weights.isin([0.0, 1.0])
        on = ["family"] + [a for a in match if a in by and a != mix_axis] + CONDITION
        spec = out[special].sort_values("nmse", kind="stable").drop_duplicates(on)
        spec = spec[on + ["nmse", mix_axis]].rename(columns={"nmse": "nmse_specialist", mix_axis: "specialist"})
        joined = out.drop(columns=["nmse_specialist", "specialist"]).merge(spec, on=on, how="left")
        joined.loc[special.to_numpy(), ["nmse_specialist", "specialist"]] = np.nan
        out = joined
    out["gap_specialist"] = out["nmse"] - out["nmse_specialist"]
    columns = (
        ["family"]
        + by
        + CONDITION
        + [
            "best_trial",
            "nmse",
            "best_baseline",
            "nmse_baseline",
            "gap",
            "n",
            "gap_median",
            "gap_q25",
            "gap_q75",
            "nmse_specialist",
            "specialist",
            "gap_specialist",
        ]
    )
    return _labelled(out[columns], by, ["shift", "shift_value", "n_context"])


def shift_errors(final: pd.DataFrame, by: list[str] | None = None, k: int | None = None) -> pd.DataFrame:
    """Error along each shift axis (nnz, freq_scale, alpha, x_scale; and "none"), for
    the model and every baseline, averaged over the in-context examples (or at
    n_context == ``k``).

    Columns: family, the ``by`` axes, cell, shift, shift_value, split, metric, n,
    median, q25, q75, best_trial, best.
    """
    rows = _nmse_rows(final)
    if k is not None:
        rows = rows[rows["n_context"] == k]
    by, best = _best(final, by)
    cond = ["shift", "shift_value", "split", "metric"]
    mean = rows.groupby(["trial_id"] + cond, dropna=False, observed=True)["value"].mean().reset_index()
    per_trial = trial_info(rows).merge(mean, on="trial_id")
    out = cell_distribution(per_trial, by, cond, "value", best)
    return _labelled(out, by, ["shift", "shift_value", "metric"])


def mixture_effect(errors: pd.DataFrame, mix_axis: str = MIX_AXIS) -> pd.DataFrame:
    """The model's error against the mixture weight, per shift: the ``nmse`` rows of a
    :func:`shift_errors` frame with the mixture axis moved next to the shift.

    Columns: family, the other cell axes, ``mix_axis``, shift, shift_value, split,
    n, median, q25, q75, best_trial, best.  Empty when the study has no mixture axis.
    """
    if mix_axis not in errors:
        return errors.iloc[0:0]
    rows = errors[errors["metric"] == MODEL].drop(columns=["metric", "cell"])
    end = list(rows.columns).index("shift")
    others = [c for c in rows.columns[1:end] if c != mix_axis]
    columns = (
        ["family"]
        + others
        + [mix_axis, "shift", "shift_value", "split", "n", "median", "q25", "q75", "best_trial", "best"]
    )
    return sort_cells(rows[columns], others, ["shift", "shift_value", mix_axis])


# --------------------------------------------------------------------------- dense vs sparse mixtures

NNZ = "nnz"  # the shift axis from one-sparse (nnz = 1) to dense (nnz = d) prompts


def dense_dim(final: pd.DataFrame) -> int | None:
    """d of a study evaluated along the nnz shift: its largest nnz (nnz = d is dense).
    None when no row is on that axis."""
    rows = final[final["shift"].astype(str) == NNZ]
    return int(rows["shift_value"].max()) if len(rows) else None


def nnz_profile(final: pd.DataFrame, by: list[str] | None = None, ks: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Error along the nnz shift at a few numbers of in-context examples (default
    k = d and k = 2d), for the model and every baseline on the same prompts.

    Columns: family, the ``by`` axes, cell, n_context, shift_value (nnz), split,
    metric, n, median, q25, q75 (over the cell's usable trials), best_trial, best.
    Empty without nnz rows.
    """
    rows = _nmse_rows(final)
    rows = rows[rows["shift"] == NNZ]
    d = dense_dim(rows)
    if d is None:
        return rows.iloc[0:0]
    ks = (d, 2 * d) if ks is None else ks
    rows = rows[rows["n_context"].isin(ks)]
    by, best = _best(final, by)
    out = cell_distribution(rows, by, ["n_context", "shift_value", "split", "metric"], "value", best)
    return _labelled(out, by, ["n_context", "metric", "shift_value"])


def selection_phase(
    final: pd.DataFrame, by: list[str] | None = None, ks: tuple[int, ...] | None = None
) -> pd.DataFrame:
    """The selection gap along the nnz shift at k = d and 2d (or ``ks``): the rows of
    :func:`selection_gap` on the nnz axis at those k, ready for a mixture weight x nnz
    phase diagram (``gap_median``: the model's error minus the better baseline's, median
    over the cell's trials).  Empty without nnz rows."""
    gap = selection_gap(final, by=by)
    d = dense_dim(gap)
    if d is None:
        return gap.iloc[0:0]
    ks = (d, 2 * d) if ks is None else ks
    return gap[(gap["shift"] == NNZ) & gap["n_context"].isin(ks)].reset_index(drop=True)
