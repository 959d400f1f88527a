"""Which length-generalization method moves the boundary: one row per method and cell.

A *method* is a study's position scheme (``model.pos_encoding``: learned, rope, alibi,
none, coupled, abacus, randomized, ...) with the arithmetic format's index hints
(``task.index_hints``) when set: "learned + index hints".  The other grid axes (op,
training digits, size, ...) stay cells of their own, and seeds make each cell's
distribution (Zhou et al., arXiv 2402.09371, found length generalization fragile
across seeds: a median with quartiles, never the best seed alone).

Input: the final-step eval rows and the trials of a study (:mod:`analysis.load`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import breakdown as bd
from analysis.load import NOT_SCORED, cell_axes, cell_label

METHOD_AXES = ("model.pos_encoding", "task.index_hints")


def method_label(pos_encoding: object, index_hints: object) -> str:
    """``"coupled"``, ``"learned + index hints"``, ..."""
    hints = index_hints is True or (isinstance(index_hints, (str, np.bool_)) and str(index_hints).lower() == "true")
    return f"{pos_encoding} + index hints" if hints else str(pos_encoding)


def with_method(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus a ``method`` column built from the method axes present."""
    pos = frame["model.pos_encoding"] if "model.pos_encoding" in frame else pd.Series("learned", index=frame.index)
    hints = frame["task.index_hints"] if "task.index_hints" in frame else pd.Series(False, index=frame.index)
    return frame.assign(method=[method_label(p, h) for p, h in zip(pos, hints)])


def per_trial(final: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per usable arithmetic trial along the length axis: trial_id, the grid axes,
    method, id_score, boundary (NaN: holds), x_max (the last OOD length evaluated),
    holds_to (x_max when it holds) and equivalence_beyond: the mean equivalence rate at
    the OOD lengths from the boundary on (NaN when the curve holds or nothing is there)."""
    scores = bd.trial_scores(final, "exact_match")
    scores = scores[(scores["shift"] == "length") & ~scores["status"].isin(NOT_SCORED)]
    bounds = bd.trial_boundaries(scores, "exact_match", threshold)
    info = scores.drop_duplicates("trial_id").drop(columns=["shift", "x", "split", "score"])
    out = info.merge(bounds[["trial_id", "boundary", "x_max", "monotone"]], on="trial_id")
    equiv = bd.trial_scores(final, "equivalence")
    equiv = equiv[(equiv["split"] == "ood") & (equiv["shift"] == "length")][["trial_id", "x", "score"]]
    beyond = equiv.merge(out[["trial_id", "boundary"]], on="trial_id")
    beyond = beyond[beyond["x"] >= beyond["boundary"]].groupby("trial_id")["score"].mean()
    out["equivalence_beyond"] = out["trial_id"].map(beyond)
    out["holds_to"] = out["x_max"].where(out["boundary"].isna() & out["monotone"].notna())
    return with_method(out)


def method_table(final: pd.DataFrame, trials: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per method and cell of the other non-seed axes.

    Columns: method, the other axes, cell (their label), n (usable trials), id_median,
    boundary_q25 / boundary_median / boundary_q75 (over trials, a curve that holds
    ranked above every length; NaN when that quantile holds), n_holds (trials that hold
    to their last length), holds_to (that length), n_nonmonotone, n_unlearned (trials
    whose ID score is at the metric's floor: they have no boundary, and the quantiles
    leave them out; NaN quantiles with no learned trial), equivalence_beyond (median over
    trials of the equivalence rate from the boundary on).  Sorted by cell, then by median
    boundary (methods that hold first, methods with no learned trial last).
    """
    columns = [
        "method",
        "cell",
        "n",
        "id_median",
        "boundary_q25",
        "boundary_median",
        "boundary_q75",
        "n_holds",
        "holds_to",
        "n_nonmonotone",
        "n_unlearned",
        "equivalence_beyond",
    ]
    if final.empty or "len_a" not in final or final["len_a"].isna().all():
        return pd.DataFrame(columns=columns)
    rows = per_trial(final[final["len_a"].notna()], threshold)
    others = [a for a in cell_axes(trials) if a not in METHOD_AXES and a in rows]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for key, g in rows.groupby(["method"] + others, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        learned = g["monotone"].notna()  # None: the ID score is at the floor, no boundary to rank
        ranked = g.loc[learned, "boundary"].fillna(np.inf).to_numpy()
        q = (
            [np.nan if np.isinf(v) else float(v) for v in np.quantile(ranked, [0.25, 0.5, 0.75], method="inverted_cdf")]
            if len(ranked)
            else [np.nan] * 3
        )
        out.append(
            {
                "method": key[0],
                **dict(zip(others, key[1:])),
                "n": len(g),
                "id_median": g["id_score"].median(),
                "boundary_q25": q[0],
                "boundary_median": q[1],
                "boundary_q75": q[2],
                "n_holds": int(g["holds_to"].notna().sum()),
                "holds_to": g["holds_to"].max(),
                "n_nonmonotone": int((g["monotone"] == False).sum()),  # noqa: E712 (None is neither)
                "n_unlearned": int((~learned).sum()),
                "equivalence_beyond": g["equivalence_beyond"].median(),
            }
        )
    table = pd.DataFrame(out)
    table.insert(
        1 + len(others), "cell", [cell_label(r, others) for r in table[others].to_dict("records")] if others else ""
    )
    rank = table["boundary_median"].fillna(np.inf).where(table["n"] > table["n_unlearned"], -np.inf)
    table = table.assign(_rank=-rank).sort_values(["cell", "_rank", "method"], kind="stable").drop(columns="_rank")
    return table[["method"] + others + columns[1:]].reset_index(drop=True)


def boundary_by_method(rows: pd.DataFrame, facet: str = "cell") -> Figure:
    """Every trial's boundary per method (a dot per seed, a bar at the median); a trial
    that holds is drawn as a triangle above its last evaluated length ("holds to L").
    ``rows``: :func:`per_trial` frame with a ``cell`` column for the panels."""
    panels = list(dict.fromkeys(rows[facet])) if facet in rows and len(rows) else [""]
    fig = Figure(
        figsize=(max(5.0, 0.9 * rows["method"].nunique() + 2) if len(rows) else 5, 3.2 * len(panels)),
        layout="constrained",
    )
    axes = fig.subplots(len(panels), 1, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        part = rows[rows[facet] == panel] if facet in rows else rows
        methods = sorted(part["method"].unique(), key=str)
        for i, method in enumerate(methods):
            m = part[part["method"] == method]
            breaks, holds = m[m["boundary"].notna()], m[m["boundary"].isna() & m["holds_to"].notna()]
            jitter = np.linspace(-0.15, 0.15, max(len(m), 1))
            ax.scatter(i + jitter[: len(breaks)], breaks["boundary"], color="C0", s=18, zorder=3)
            ax.scatter(
                i + jitter[len(breaks) : len(breaks) + len(holds)],
                holds["holds_to"] + 0.5,
                marker="^",
                color="C2",
                s=30,
                zorder=3,
            )
            values = m["boundary"].fillna(m["holds_to"] + 0.5)
            if values.notna().any():
                ax.hlines(values.median(), i - 0.3, i + 0.3, color="k", lw=1.5)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel("boundary (operand length)")
        ax.set_title(str(panel), fontsize=9)
    fig.suptitle("OOD boundary by method (triangles: holds to the last length evaluated)", fontsize=10)
    return fig


def report_section(page, trials: pd.DataFrame, final: pd.DataFrame, threshold: float) -> None:
    """The report's method comparison (for :mod:`analysis.report`): shown when the study
    varies a method axis."""
    varying = [a for a in METHOD_AXES if a in trials and trials[a].nunique(dropna=True) > 1]
    if not varying:
        return
    table = method_table(final, trials, threshold)
    if table.empty:
        return
    page.section("Length-generalization methods")
    page.text(
        f"Boundary per method: the first OOD length where exact match falls below {threshold:g} x the ID "
        "exact match, quartiles over the seeds of each cell (a seed that never breaks ranks above every "
        "length); 'holds to L' = no boundary up to the last length L evaluated.  equivalence_beyond: the "
        "median equivalence rate (answer = f(a mod 10^n, b mod 10^n)) from the boundary on."
    )
    page.table("methods", table, "Method comparison per cell")
    rows = per_trial(final[final["len_a"].notna()], threshold)
    others = [a for a in cell_axes(trials) if a not in METHOD_AXES and a in rows]
    rows = rows.assign(cell=[cell_label(r, others) for r in rows[others].to_dict("records")] if others else "")
    page.figure("boundary_by_method", boundary_by_method(rows), "Boundary of every seed by method and cell.")
