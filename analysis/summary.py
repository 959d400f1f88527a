"""The finding of a study in numbers: the rows and sentences a report opens with and
the terminal summary ends with.

Arithmetic, per cell (best trial by ID exact match): the ID exact match, the boundary
(first OOD length where the exact match falls below threshold x ID), the exact match
and the equivalence rate at the lengths from the boundary on (the share of answers
equal to f(a mod 10^n, b mod 10^n); Xu et al., arXiv 2308.08268).  In-context learning, per cell: the
model-selection gap (the model's normalized error minus the best baseline's), mean
over the ID and over the OOD numbers of examples (Garg et al. 2022; Yadlowsky et al.
2023).  Pure functions of analysis tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import breakdown as bd
from analysis import icl
from analysis.equivalence import equivalence_table
from analysis.load import fmt

FINDING_COLUMNS = ["cell", "n_usable", "n_trials", "id_score", "boundary", "x_max", "verdict",
                   "exact_match_beyond", "equivalence_beyond"]


def arithmetic_findings(table: pd.DataFrame, equivalence: pd.DataFrame | None) -> pd.DataFrame:
    """Per cell of a :func:`analysis.breakdown.breakdown` table (length shift only):
    n_usable, n_trials, id_score, boundary, x_max, verdict, and over the OOD lengths from
    the boundary on (all OOD lengths when the cell holds) the best trial's mean
    exact_match_beyond and equivalence_beyond (from an
    :func:`analysis.equivalence.equivalence_table` frame; NaN without one)."""
    rows = table[table["shift"] == "length"] if "shift" in table else table
    out = []
    for row in rows.to_dict("records"):
        beyond = {"exact_match_beyond": np.nan, "equivalence_beyond": np.nan}
        if equivalence is not None and len(equivalence) and row["verdict"] in ("breaks", "holds"):
            mine = equivalence[(equivalence["cell"] == row["cell"]) & (equivalence["shift"] == "length")]
            if row["verdict"] == "breaks":
                mine = mine[mine["x"] >= row["boundary"]]
            if len(mine):
                beyond = {"exact_match_beyond": float(mine["exact_match"].mean()),
                          "equivalence_beyond": float(mine["equivalence"].mean())}
        out.append({**{k: row[k] for k in FINDING_COLUMNS[:7]}, **beyond})
    return pd.DataFrame(out, columns=FINDING_COLUMNS)


def _pct(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.0f}%"


def arithmetic_sentences(findings: pd.DataFrame, threshold: float = 0.5) -> list[str]:
    """One sentence per cell, e.g. ``task.digits=2: ID exact match 100% (best of 2
    trials); breaks at length 3 (exact match 0% from there on), where 98% of answers
    equal f(a mod 10^n, b mod 10^n).``"""
    sentences = []
    for row in findings.to_dict("records"):
        name = row["cell"] or "the study"
        head = f"{name}: ID exact match {_pct(row['id_score'])} (best of {row['n_usable']} usable trials)"
        if row["verdict"] == "no_trial":
            ran = f"its {row['n_trials']} trial(s) failed" if row["n_trials"] else "no trial ran"
            sentences.append(f"{name}: no usable trial ({ran}).")
            continue
        if row["verdict"] == "no_id":
            sentences.append(f"{head}; it never learned the task in distribution, so there is nothing to break.")
            continue
        if row["verdict"] == "holds":
            text = f"{head}; holds up to length {fmt(row['x_max'])} (OOD exact match {_pct(row['exact_match_beyond'])})"
        else:
            text = (f"{head}; breaks at length {fmt(row['boundary'])} "
                    f"(exact match {_pct(row['exact_match_beyond'])} from there on)")
        if not pd.isna(row["equivalence_beyond"]):
            text += f", where {_pct(row['equivalence_beyond'])} of answers equal f(a mod 10^n, b mod 10^n)"
        sentences.append(text + ".")
    return sentences


def icl_findings(gap: pd.DataFrame) -> pd.DataFrame:
    """Per cell of an :func:`analysis.icl.selection_gap` frame (unshifted prompts):
    the best trial's mean gap over the ID and over the OOD numbers of examples, and
    the baseline that is most often best."""
    rows = gap[gap["shift"] == "none"]
    out = []
    for cell, part in rows.groupby("cell", sort=False):
        out.append({
            "cell": cell,
            "gap_id": float(part.loc[part["split"] == "id", "gap"].mean()),
            "gap_ood": float(part.loc[part["split"] == "ood", "gap"].mean()),
            "best_baseline": part["best_baseline"].mode().iloc[0] if part["best_baseline"].notna().any() else None,
        })
    return pd.DataFrame(out, columns=["cell", "gap_id", "gap_ood", "best_baseline"])


def icl_sentences(findings: pd.DataFrame) -> list[str]:
    """One sentence per cell: the model's excess error over the best baseline."""
    return [f"{r['cell'] or 'the study'}: normalized error {r['gap_id']:+.3f} vs the best baseline "
            f"({(r['best_baseline'] or 'none').removeprefix('nmse_')}) with ID numbers of examples, "
            f"{r['gap_ood']:+.3f} beyond them."
            for r in findings.to_dict("records")]


def summary_text(study: str, trials: pd.DataFrame, final: pd.DataFrame, metric: str | None = None,
                 threshold: float = 0.5) -> str:
    """The end-of-sweep text table of ``study`` (see :func:`analysis.breakdown.format_summary`), one block
    per headline metric present (exact_match for arithmetic, nmse for icl) unless
    ``metric`` is given.  ``trials`` and ``final`` as :func:`analysis.load.study_frames`
    reads them."""
    if final.empty:
        return f"study {study}: no evaluations yet ({len(trials)} trials)"
    blocks = []
    for name in [metric] if metric else bd.primary_metrics(final):
        table = bd.breakdown(final, trials, metric=name, threshold=threshold)
        by = [c for c in table.columns[1:table.columns.get_loc("cell")]]
        extra = None
        if name == "exact_match" and "equivalence" in set(final["metric"]):
            found = arithmetic_findings(table, equivalence_table(final, by=by)).set_index("cell")
            extra = ("equiv", {c: bd.format_value(v) for c, v in found["equivalence_beyond"].items()})
        text = bd.format_summary(table, bd.curves(final, name, by=by), name, threshold, extra=extra)
        if extra:
            text += ("\nequiv = share of answers equal to f(a mod 10^n, b mod 10^n) at the OOD lengths from the "
                     "boundary on (all OOD lengths when none), best trial.")
        blocks.append(text)
        if name == "nmse":
            blocks.append(nnz_block(final))
    return f"study {study}\n" + "\n\n".join(b for b in blocks if b)


def nnz_block(final: pd.DataFrame) -> str:
    """In-context studies evaluated along nnz: the model's error at k = 2d per cell and nnz
    (median over usable trials), with least squares and Lasso on the same prompts; "" when
    the study has no nnz rows.  The k-averaged table above mixes k < d, where every
    predictor errs, into one number; at k = 2d least squares is exact on every nnz, so a
    model's error there is how far it is from solving the prompt."""
    d = icl.dense_dim(final)
    if d is None:
        return ""
    k = 2 * d
    profile = icl.nnz_profile(final, ks=(k,))
    if profile.empty:
        return ""
    values = sorted(profile["shift_value"].unique())
    model = profile[profile["metric"] == icl.MODEL]
    lines = [f"nmse at k = 2d = {k} examples along nnz (median over usable trials; nnz = {d} is dense):"]
    cells = list(dict.fromkeys(model["cell"]))
    width = max([len(c or "the study") for c in cells] + [len("least squares")])
    lines.append(f"{'':<{width}}  " + "  ".join(f"nnz{fmt(v):<4}" for v in values))
    for cell in cells:
        mine = model[model["cell"] == cell].set_index("shift_value")["median"]
        lines.append(f"{cell or 'the study':<{width}}  " + "  ".join(f"{mine.get(v, np.nan):<7.3f}" for v in values))
    for metric, label in (("nmse_lstsq", "least squares"), ("nmse_lasso", "Lasso")):
        rows = profile[profile["metric"] == metric]
        if len(rows):
            mine = rows.groupby("shift_value")["median"].median()
            lines.append(f"{label:<{width}}  " + "  ".join(f"{mine.get(v, np.nan):<7.3f}" for v in values))
    return "\n".join(line.rstrip() for line in lines)


def threshold_sentences(rows: pd.DataFrame) -> list[str]:
    """One line per cell of a threshold search (the store's ``thresholds`` rows), e.g.
    ``task.digits=2: threshold of train.steps where P(id_exact_match >= 0.5) = 0.5: 310
    [240, 370] (90% interval), 24 trials, 4 seeds per point, converged``.  For an ordered
    list of values the interval is given by the values that bracket it."""
    lines = []
    for r in rows.to_dict("records"):
        head = "" if r["cell"] in ("all", "", None) else f"{r['cell']}: "
        where = f"threshold of {r['axis']} where P({r['criterion']}) = {r['target']:g}"
        if r["low_value"] != f"{r['low']:g}":  # an ordered list: name the values around the threshold
            found = (f"between {r['low_value']} and {r['high_value']}" if r["low_value"] != r["high_value"]
                     else f"at {r['low_value']}")
        else:
            found = f"{fmt_number(r['estimate'])} [{fmt_number(r['low'])}, {fmt_number(r['high'])}]"
        outside = "" if r["in_range"] else " (the interval lies outside the axis: widen it)"
        lines.append(f"{head}{where}: {found} ({100 * r['level']:.0f}% interval){outside}, {int(r['trials'])} trials, "
                     f"{int(r['seeds_per_point'])} seeds per point, {r['stopped']}")
    return lines


def fmt_number(value: float) -> str:
    """A threshold or an interval end: 3 significant digits, whole numbers from 1000 on."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
