"""Where OOD generalization breaks down, per cell of the grid.

Input: the final-step eval rows of a study (:func:`analysis.load.final_evals`) and its
trials (:func:`analysis.load.trials`).  Vocabulary used by every table here:

- *cell*: one combination of the grid axes except seeds (``train.seed`` makes
  replicates, not cells); all trials of a cell (seeds, Optuna suggestions) form its
  distribution.  A cell with its seed is a *grid point* (column ``grid_point``).
- *shift axis* (column ``shift``) and position ``x`` along it: arithmetic rows lie on
  the ``"length"`` axis at x = max(len_a, len_b) (or ``min``, ``len_a``, ``len_b``);
  in-context rows on their shift (``nnz``, ``freq_scale``, ``alpha``, ``x_scale``)
  at x = shift_value, averaged over the number of in-context examples, and unshifted
  in-context rows on the ``"n_context"`` axis at x = k.
- *ID score* of a trial: the mean of the metric over all its ID rows.  The *best
  trial* of a cell has the best ID score (highest for accuracies, lowest for nmse)
  among its usable trials (ended, not failed or diverged).
- *retention* of a score: (score - floor) / (ID score - floor), where floor is what a
  model that learned nothing gets (0 for accuracies, 1 for nmse: predicting zero).
  It reads the same for both directions: 1 = as good as ID, 0 = nothing left.
- *boundary*: the first OOD x (increasing) whose retention falls below ``threshold``;
  NaN when none does.  *monotone*: along the OOD points retention never rises by
  more than ``tol`` from one point to the next.  *recovers_at*: the OOD x
  after the boundary whose retention is back at or above the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analysis.load import (
    FAILED,
    NOT_SCORED,
    axis_columns,
    axis_order,
    cell_axes,
    cell_label,
    expected_cells,
    row_families,
)
from study.naming import EVAL_CONDITIONS
from study.tasks import FAMILIES, metric_direction

LENGTH_MODES = ("max", "min", "len_a", "len_b", "pair")
LENGTH_AXIS = "length"  # the shift axis of a family whose conditions are operand lengths (len_a, len_b)


@dataclass(frozen=True)
class Metric:
    """How to read a metric: its direction and the score of a model that learned nothing."""

    name: str
    higher_is_better: bool
    floor: float


def metric_info(name: str) -> Metric:
    """A metric's direction as its task family declares it (``study.tasks.FAMILIES``):
    lower-is-better metrics (the ``nmse*`` errors) have floor 1.0 (predicting zero);
    the others (exact_match, digit_acc, equivalence, ..., and names no family
    declares) are higher-is-better with floor 0.0."""
    if metric_direction(name) == "min":
        return Metric(name, higher_is_better=False, floor=1.0)
    return Metric(name, higher_is_better=True, floor=0.0)


def primary_metrics(final: pd.DataFrame) -> list[str]:
    """The headline metric of each task family present: exact_match (arithmetic), nmse (icl)."""
    present = set(final["metric"].unique()) if len(final) else set()
    return [f.primary_metric for f in FAMILIES.values() if f.primary_metric in present] or sorted(present)[:1]


# --------------------------------------------------------------------------- per trial


def condition_axis(rows: pd.DataFrame, length: str = "max") -> pd.DataFrame:
    """``rows`` plus the columns ``shift`` (the axis name) and ``x`` (position on it).

    Each row's family (its ``family`` column, else the family that declares its
    ``metric``) says its shift axis (``study.tasks.Family.shift_axis``).  Rows of a
    family on the "length" axis (arithmetic): shift "length", x from (len_a, len_b) by
    ``length`` ("max", "min", "len_a", "len_b"; "pair" uses max and keeps len_a/len_b
    as keys).  Rows of a family whose rows name their shift (in-context): shift as
    stored with x = shift_value; unshifted rows (shift "none" or null) go on the
    "n_context" axis with x = n_context.
    """
    if length not in LENGTH_MODES:
        raise ValueError(f"length={length!r}: choose one of {', '.join(LENGTH_MODES)}")
    rows = rows.copy()
    families = rows["family"] if "family" in rows else row_families(rows)
    axes = {name: record.shift_axis for name, record in FAMILIES.items()}
    arith = (families.map(axes) == LENGTH_AXIS).to_numpy()
    a, b = _floats(rows["len_a"]), _floats(rows["len_b"])
    along = {"max": np.fmax(a, b), "pair": np.fmax(a, b), "min": np.fmin(a, b), "len_a": a, "len_b": b}[length]
    shift = rows["shift"].astype(object).to_numpy()
    unshifted = pd.isna(shift) | (shift == "none")
    rows["shift"] = np.where(arith, LENGTH_AXIS, np.where(unshifted, "n_context", shift)).astype(str)
    icl_x = np.where(unshifted, _floats(rows["n_context"]), _floats(rows["shift_value"]))
    rows["x"] = np.where(arith, along, icl_x)
    return rows


def _floats(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype=float, na_value=np.nan)


def condition_keys(length: str) -> list[str]:
    """The columns that name a condition on a shift axis for a ``length`` mode."""
    return ["shift", "x", "split"] + (["len_a", "len_b"] if length == "pair" else [])


def trial_info(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trial of eval-like ``rows``: trial_id, grid_point, status, family, grid axes."""
    keep = [c for c in ("trial_id", "grid_point", "status", "family") if c in rows] + axis_columns(rows)
    return rows.drop_duplicates("trial_id")[keep].reset_index(drop=True)


def trial_scores(final: pd.DataFrame, metric: str, length: str = "max") -> pd.DataFrame:
    """Each trial's score per condition on its shift axes.

    Columns: trial_id, grid_point, status, family, the grid axes, shift, x, split (and
    len_a, len_b with ``length="pair"``), score (the metric's mean over the rows at
    that condition), id_score (the trial's mean over all its ID rows).  Sorted by
    trial, shift, x.
    """
    rows = final[final["metric"] == metric]
    info = trial_info(rows)
    if rows.empty:
        return info.assign(
            shift=pd.Series(dtype=str),
            x=pd.Series(dtype=float),
            split=pd.Series(dtype=str),
            score=pd.Series(dtype=float),
            id_score=pd.Series(dtype=float),
        )
    rows = condition_axis(rows[["trial_id", "metric", "value", *EVAL_CONDITIONS]], length)
    keys = ["trial_id"] + condition_keys(length)
    scores = rows.groupby(keys, dropna=False, sort=False, observed=True)["value"].mean().rename("score").reset_index()
    id_score = rows[rows["split"] == "id"].groupby("trial_id", observed=True)["value"].mean().rename("id_score")
    out = scores.merge(id_score, left_on="trial_id", right_index=True, how="left")
    out = info.merge(out, on="trial_id")
    return out.sort_values(["trial_id", "shift", "x"] + keys[4:], kind="stable").reset_index(drop=True)


def best_trials(scores: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """The best usable trial of each cell by ID score (ties: smallest trial_id).

    ``scores`` is a :func:`trial_scores` frame.  Columns: family, the ``by`` axes,
    best_trial, id_score.
    """
    m = metric_info(metric)
    keys = ["family"] + by
    trials = scores.drop_duplicates("trial_id")
    trials = trials[~trials["status"].isin(NOT_SCORED) & trials["id_score"].notna()]
    ranked = trials.assign(_rank=trials["id_score"] * (-1 if m.higher_is_better else 1))
    ranked = ranked.sort_values(["_rank", "trial_id"], kind="stable").drop_duplicates(keys)
    return ranked[keys + ["trial_id", "id_score"]].rename(columns={"trial_id": "best_trial"}).reset_index(drop=True)


def seed_best(final: pd.DataFrame, trials: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(final, trials)`` cut to one trial per grid point (a seed of a cell): its best usable
    trial by ID score of ``metric`` (ties: smallest trial_id), or, when none is usable, its
    first trial (so the seed still counts as failed or unfinished).  With one trial per grid
    point (no Optuna) nothing changes.  The seeds of a cell are then its distribution."""
    scores = trial_scores(final, metric)
    best = best_trials(scores, metric, ["grid_point"])["best_trial"]
    chosen = set(best)
    rest = trials[~trials["grid_point"].isin(set(trials.loc[trials["trial_id"].isin(chosen), "grid_point"]))]
    chosen |= set(rest.sort_values("trial_id", kind="stable").drop_duplicates("grid_point")["trial_id"])
    return final[final["trial_id"].isin(chosen)], trials[trials["trial_id"].isin(chosen)]


def _num(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else value


def trial_boundaries(scores: pd.DataFrame, metric: str, threshold: float = 0.5, tol: float = 0.05) -> pd.DataFrame:
    """Boundary of every trial on every shift axis that has OOD conditions, computed for all
    curves at once (the module docstring defines boundary, monotone and recovers_at; the
    tests hold a one-curve-at-a-time reference that must agree).

    Columns: trial_id, shift, n_ood (OOD points), x_max (the last OOD x), ood_score
    (mean OOD score), boundary, monotone, recovers_at.
    """
    m = metric_info(metric)
    columns = ["trial_id", "shift", "n_ood", "x_max", "ood_score", "boundary", "monotone", "recovers_at"]
    ood = scores[(scores["split"] == "ood") & scores["score"].notna()]
    if ood.empty:
        return pd.DataFrame(columns=columns)
    # one point per x ("pair" frames hold several conditions per x), sorted along x
    pts = (
        ood.groupby(["trial_id", "shift", "x"], sort=True, observed=True)
        .agg(score=("score", "mean"), id_score=("id_score", "first"))
        .reset_index()
    )
    curves = [pts["trial_id"], pts["shift"]]

    def per_curve(values: pd.Series) -> Any:
        return values.groupby(curves, sort=False, observed=True)

    learned = (pts["id_score"] - m.floor) * (1 if m.higher_is_better else -1) > 0
    r = ((pts["score"] - m.floor) / (pts["id_score"] - m.floor)).where(learned)  # retention
    out = pd.DataFrame(
        {
            "n_ood": per_curve(pts["x"]).size(),
            "x_max": per_curve(pts["x"]).max(),
            "ood_score": per_curve(pts["score"]).mean(),
            "boundary": per_curve(pts["x"].where(r < threshold)).min(),
            "learned": per_curve(learned).first(),
            "rises": per_curve(per_curve(r).diff() > tol).any(),
        }
    )
    out["monotone"] = [(not rises) if ok else None for rises, ok in zip(out["rises"], out["learned"])]
    pts = pts.assign(r=r).merge(out["boundary"].reset_index(), on=["trial_id", "shift"])
    back = pts[(pts["x"] > pts["boundary"]) & (pts["r"] >= threshold)]
    recovers = back.groupby(["trial_id", "shift"], sort=False)["x"].agg(lambda x: [_num(v) for v in x])
    out["recovers_at"] = [v if isinstance(v, list) else [] for v in recovers.reindex(out.index)]
    out["boundary"] = [_num(v) if pd.notna(v) else np.nan for v in out["boundary"]]
    return out.reset_index()[columns]


# --------------------------------------------------------------------------- per cell


def cell_distribution(
    per_trial: pd.DataFrame, by: list[str], cond: list[str], value: str, best: pd.DataFrame
) -> pd.DataFrame:
    """A per-trial value aggregated over each cell's usable trials.

    ``per_trial`` has trial_id, status, family, the ``by`` axes, the ``cond`` columns
    and ``value``; ``best`` has family, ``by`` and best_trial.  Returns family, ``by``,
    ``cond``, n (usable trials with a value), median, q25, q75, best_trial, best (the
    best trial's value).
    """
    keys = ["family"] + by
    usable = per_trial[~per_trial["status"].isin(NOT_SCORED)]
    g = usable.groupby(keys + cond, dropna=False, sort=False, observed=True)[value]
    dist = pd.DataFrame({"n": g.count(), "median": g.median(), "q25": g.quantile(0.25), "q75": g.quantile(0.75)})
    dist = dist.reset_index()
    top = usable.merge(best[keys + ["best_trial"]], on=keys, how="inner")
    top = top[top["trial_id"] == top["best_trial"]][keys + cond + ["best_trial", value]]
    out = dist.merge(top.rename(columns={value: "best"}), on=keys + cond, how="left")
    return out[keys + cond + ["n", "median", "q25", "q75", "best_trial", "best"]]


def curves(
    final: pd.DataFrame,
    metric: str = "exact_match",
    by: list[str] | None = None,
    length: str = "max",
    best: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Score per cell and condition: the best trial and the distribution over trials.

    Columns: family, the ``by`` axes (default: every non-seed grid axis), cell (label
    built from ``by``), shift, x, split (and len_a, len_b with ``length="pair"``), n,
    median, q25, q75 (over the cell's usable trials), best_trial, best (the score of
    the cell's best trial by ID score, or of the trial given in ``best``).
    """
    scores = trial_scores(final, metric, length)
    by = cell_axes(scores) if by is None else list(by)
    best = best_trials(scores, metric, by) if best is None else best
    out = cell_distribution(scores, by, condition_keys(length), "score", best)
    out.insert(1 + len(by), "cell", [cell_label(r, by) for r in out.to_dict("records")])
    return sort_cells(out, by, ["shift", "x"] + (["len_a", "len_b"] if length == "pair" else []))


def breakdown(
    final: pd.DataFrame,
    trials: pd.DataFrame,
    metric: str = "exact_match",
    threshold: float = 0.5,
    by: list[str] | None = None,
    length: str = "max",
    tol: float = 0.05,
) -> pd.DataFrame:
    """One row per cell and shift axis: ID score, boundary and what holds across seeds.

    Every cell the grid spans (product of the axis values, per family) appears, also
    when none of its trials is usable (scores NaN, verdict "no_trial").  Columns:

    - family, the ``by`` axes (default: every non-seed grid axis), cell (label), shift;
    - n_trials (all statuses), n_failed (failed or diverged: never scored),
      n_usable (scored trials);
    - best_trial, id_score, ood_score (mean over the OOD conditions), x_max (the
      last OOD x evaluated), boundary, monotone, recovers_at: of the best trial by
      ID score (see module docstring);
    - verdict: "breaks" (a boundary within the evaluated range), "holds" (none),
      "no_id" (the ID score is at the floor: nothing to break), "no_trial";
      holds_to: the last OOD x evaluated when the verdict is "holds" (the boundary lies
      beyond it: "holds to L"), NaN otherwise;
    - id_median, id_q25, id_q75, id_min, id_max, ood_median: over the usable trials;
    - n_break (usable trials whose own curve breaks), boundary_q25, boundary_q50,
      boundary_q75: quantiles of the per-trial boundaries, taken among observed
      values with "never breaks" ranked above every length (NaN when that quantile
      never breaks); n_nonmonotone: usable trials whose curve is not monotone;
    - n_learned (usable trials with ID skill: a boundary is defined), break_median,
      break_min, break_max (over the learned trials that break), holds_to_max (the last
      OOD x evaluated by the learned trials that hold).

    Cut to one trial per grid point first (:func:`seed_best`), the usable trials are
    the cell's seeds and these columns its seed distribution.
    """
    if length == "pair":
        raise ValueError("a boundary needs one axis: use length='max', 'min', 'len_a' or 'len_b'")
    scores = trial_scores(final, metric, length)
    families = set(scores["family"].unique())
    trials = trials[trials["family"].isin(families)]
    by = cell_axes(trials) if by is None else list(by)
    keys = ["family"] + by

    per_trial = trial_boundaries(scores, metric, threshold, tol)
    info = scores.drop_duplicates("trial_id")[["trial_id", "status", "id_score"] + keys]
    usable = info[~info["status"].isin(NOT_SCORED) & info["id_score"].notna()]
    per_trial = per_trial.merge(usable, on="trial_id")

    shifts = scores.loc[scores["split"] == "ood", ["family", "shift"]].drop_duplicates()
    out = expected_cells(trials, by).merge(shifts, on="family")

    counts = (
        trials.assign(_failed=trials["status"].isin(FAILED))
        .groupby(keys, dropna=False, observed=True)
        .agg(n_trials=("trial_id", "size"), n_failed=("_failed", "sum"))
    )
    ids = usable.groupby(keys, dropna=False, observed=True)["id_score"]
    id_dist = pd.DataFrame(
        {
            "n_usable": ids.count(),
            "id_median": ids.median(),
            "id_q25": ids.quantile(0.25),
            "id_q75": ids.quantile(0.75),
            "id_min": ids.min(),
            "id_max": ids.max(),
        }
    )
    best = best_trials(scores, metric, by).merge(
        per_trial.drop(columns=keys + ["status", "id_score"]), left_on="best_trial", right_on="trial_id", how="left"
    )
    if len(per_trial):
        spread = (
            per_trial.groupby(keys + ["shift"], dropna=False, observed=True)
            .apply(_boundary_spread, include_groups=False)
            .reset_index()
        )
    else:
        spread = pd.DataFrame(columns=keys + ["shift"] + SPREAD_COLUMNS)
    out = (
        out.merge(counts.reset_index(), on=keys, how="left")
        .merge(id_dist.reset_index(), on=keys, how="left")
        .merge(best.drop(columns=["trial_id", "n_ood"]), on=keys + ["shift"], how="left")
        .merge(spread, on=keys + ["shift"], how="left")
    )
    for column in ("n_trials", "n_failed", "n_usable", "n_break", "n_nonmonotone", "n_learned"):
        out[column] = out[column].fillna(0).astype(int)
    out["monotone"] = out["monotone"].astype("boolean")
    out["recovers_at"] = [r if isinstance(r, list) else [] for r in out["recovers_at"]]
    out["verdict"] = np.select(
        [out["best_trial"].isna(), out["monotone"].isna(), out["boundary"].notna()],
        ["no_trial", "no_id", "breaks"],
        "holds",
    )
    out["holds_to"] = out["x_max"].where(out["verdict"] == "holds")
    out["cell"] = [cell_label(r, by) for r in out[by].to_dict("records")] if by else ""
    columns = keys + [
        "cell",
        "shift",
        "n_trials",
        "n_failed",
        "n_usable",
        "best_trial",
        "id_score",
        "ood_score",
        "x_max",
        "boundary",
        "verdict",
        "holds_to",
        "monotone",
        "recovers_at",
        "id_median",
        "id_q25",
        "id_q75",
        "id_min",
        "id_max",
        *SPREAD_COLUMNS,
    ]
    return sort_cells(out[columns], by, ["shift"])


SPREAD_COLUMNS = [
    "ood_median",
    "n_break",
    "boundary_q25",
    "boundary_q50",
    "boundary_q75",
    "n_nonmonotone",
    "n_learned",
    "break_median",
    "break_min",
    "break_max",
    "holds_to_max",
]


def _boundary_spread(g: pd.DataFrame) -> pd.Series:
    ranked = g["boundary"].fillna(np.inf).to_numpy()
    q = np.quantile(ranked, [0.25, 0.5, 0.75], method="inverted_cdf") if len(ranked) else [np.nan] * 3
    q = [np.nan if np.isinf(v) else float(v) for v in q]
    learned = g[g["monotone"].notna()]  # a trial without ID skill has nothing to break
    broken = learned["boundary"].dropna()
    return pd.Series(
        {
            "ood_median": g["ood_score"].median(),
            "n_break": int(g["boundary"].notna().sum()),
            "boundary_q25": q[0],
            "boundary_q50": q[1],
            "boundary_q75": q[2],
            "n_nonmonotone": int((g["monotone"] == False).sum()),  # noqa: E712 (None is neither)
            "n_learned": len(learned),
            "break_median": float(broken.median()) if len(broken) else np.nan,
            "break_min": float(broken.min()) if len(broken) else np.nan,
            "break_max": float(broken.max()) if len(broken) else np.nan,
            "holds_to_max": float(learned.loc[learned["boundary"].isna(), "x_max"].max()) if len(learned) else np.nan,
        }
    )


def sort_cells(frame: pd.DataFrame, by: list[str], then: Iterable[str] = ()) -> pd.DataFrame:
    """Rows ordered by family, the ``by`` axes in natural order (model sizes by size),
    then the ``then`` columns."""
    ranks: dict[str, pd.Series] = {}
    for axis in ["family"] + list(by):
        if axis in frame:
            order = {v: i for i, v in enumerate(axis_order(axis, frame[axis]))}
            ranks[f"_r{len(ranks)}"] = frame[axis].map(order)
    then = [c for c in then if c in frame]
    ranked = frame.assign(**ranks)
    return (
        ranked.sort_values(list(ranks) + then, kind="stable", na_position="last")
        .drop(columns=list(ranks))
        .reset_index(drop=True)
    )


# --------------------------------------------------------------------------- text summary


def format_summary(
    table: pd.DataFrame,
    curve: pd.DataFrame,
    metric: str,
    threshold: float = 0.5,
    extra: tuple[str, dict[str, str]] | None = None,
) -> str:
    """A compact text table from :func:`breakdown` and :func:`curves` frames of one trial
    per seed (:func:`seed_best`): per shift axis, one line per cell headlining the seed
    distribution, never the best seed: seeds (usable/all), the median ID score with its
    range over seeds, the median score at each OOD x ("id" where x is in distribution for
    that cell, "-" without a value), the boundary as the seeds have it ("5 [4-6] in 3 of
    4 seeds", "holds to 12 in 2 of 2 seeds", both when the seeds split) and, last, the
    best seed's boundary ("n/a" without a usable seed or without ID skill; recoveries and
    non-monotone curves noted).  ``extra`` = (header, cell -> text) adds a column before
    the best seed's; a legend ends the text."""
    m = metric_info(metric)
    rule = (
        f"below {threshold:g} x the ID score"
        if m.higher_is_better and m.floor == 0
        else f"keeping less than {threshold:g} of the ID score's margin over {m.floor:g}"
    )
    lines = [f"{metric} per cell: the median over its seeds [min-max]; boundary = first OOD point {rule}, per seed"]
    if table.empty:
        lines.append("(no OOD conditions evaluated)")
    for (family, shift), rows in table.groupby(["family", "shift"], sort=False):
        mine = curve[(curve["family"] == family) & (curve["shift"] == shift)]
        ood = mine[mine["split"] == "ood"]
        xs = sorted(ood["x"].dropna().unique())
        head = ["cell", "seeds", "id"] + [f"{_short(shift)}{_fmt_x(x)}" for x in xs] + ["boundary"]
        head += ([extra[0]] if extra else []) + ["best seed"]
        body = [head]
        for row in rows.to_dict("records"):
            at = ood[ood["cell"] == row["cell"]].groupby("x")["median"].mean()
            in_dist = set(mine.loc[(mine["cell"] == row["cell"]) & (mine["split"] == "id"), "x"])
            values = ["id" if x in in_dist else format_value(at.get(x, np.nan)) for x in xs]
            body.append(
                [row["cell"] or family, f"{row['n_usable']}/{row['n_trials']}", _spread_text(row)]
                + values
                + [seed_boundary_text(row)]
                + ([extra[1].get(row["cell"], "-")] if extra else [])
                + [best_seed_boundary_text(row)]
            )
        widths = [max(len(r[i]) for r in body) for i in range(len(head))]
        lines += ["", f"along {shift}:"]
        lines += [
            "  ".join(
                c.ljust(w) if i == 0 or i == len(head) - 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
            for r in body
        ]
    lines += [
        "",
        "seeds = usable/all seeds of the cell (usable: ended with a score; failed and diverged ones have "
        "none); each seed is read at its best trial by ID score; a cell with one seed has no spread; "
        "'id' = in distribution for that cell (within its training lengths); '-' = no value; "
        "best seed = the boundary of the cell's best seed by ID score.",
    ]
    return "\n".join(lines)


def _spread_text(row: dict[str, Any]) -> str:
    """The median ID score, with its range over seeds when they differ: ``0.98 [0.95-1.00]``."""
    if not row["n_usable"]:
        return "-"
    text = format_value(row["id_median"])
    low, high = format_value(row["id_min"]), format_value(row["id_max"])
    return text if low == high else f"{text} [{low}-{high}]"


def seed_boundary_text(row: dict[str, Any]) -> str:
    """Where the cell's seeds break: ``5 in 3 of 3 seeds``, ``5 [4-6] in 3 of 4 seeds, holds
    to 12 in 1``, ``holds to 12 in 2 of 2 seeds``; seeds without ID skill are counted apart
    (``n/a`` when no seed has any)."""
    n, learned, broken = int(row["n_usable"]), int(row["n_learned"]), int(row["n_break"])
    if not n:
        return "n/a"
    if not learned:
        return f"n/a (ID not learned in {n} of {n})"
    seeds = f"of {n} seed{'s' if n > 1 else ''}"
    parts = []
    if broken:
        span = (
            "" if row["break_min"] == row["break_max"] else f" [{_fmt_x(row['break_min'])}-{_fmt_x(row['break_max'])}]"
        )
        parts.append(f"{_fmt_x(row['break_median'])}{span} in {broken}")
    if learned - broken:
        parts.append(f"holds to {_fmt_x(row['holds_to_max'])} in {learned - broken}")
    if n - learned:
        parts.append(f"ID not learned in {n - learned}")
    return f"{parts[0]} {seeds}" + "".join(f", {part}" for part in parts[1:])


def best_seed_boundary_text(row: dict[str, Any]) -> str:
    """The boundary of a breakdown row's best seed as text: ``5``, ``holds to 12``, with
    recoveries or a non-monotone curve noted; ``n/a`` without a usable seed or ID skill."""
    if row["verdict"] not in ("breaks", "holds"):
        return "n/a"
    text = f"holds to {_fmt_x(row['holds_to'])}" if row["verdict"] == "holds" else _fmt_x(row["boundary"])
    if row["recovers_at"]:
        text += f" (recovers at {','.join(_fmt_x(v) for v in row['recovers_at'])})"
    elif not pd.isna(row["monotone"]) and not row["monotone"]:
        text += " (non-monotone)"
    return text


def _short(shift: str) -> str:
    return {"length": "len", "n_context": "k", "freq_scale": "freq"}.get(shift, shift)


def _fmt_x(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def format_value(v: float) -> str:
    """A score in a text table: two decimals, "-" when missing."""
    return "-" if pd.isna(v) else f"{v:.2f}"
