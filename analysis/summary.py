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
from analysis.load import NOT_SCORED, cell_label, fmt

FINDING_COLUMNS = [
    "cell",
    "n_usable",
    "n_trials",
    "n_learned",
    "n_break",
    "id_score",
    "id_min",
    "id_max",
    "boundary",
    "x_max",
    "verdict",
    "seeds",
    "best_seed",
    "exact_match_beyond",
    "equivalence_beyond",
]


def seed_beyond(seed_final: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per usable seed with ID skill (one trial per grid point, :func:`analysis.breakdown.seed_best`)
    along operand length: trial_id, boundary (NaN: holds), and the mean exact match and
    equivalence rate at the OOD lengths from its boundary on (every OOD length when it
    holds)."""
    em = bd.trial_scores(seed_final, "exact_match")
    em = em[(em["shift"] == "length") & ~em["status"].isin(NOT_SCORED)]
    bounds = bd.trial_boundaries(em, "exact_match", threshold)
    bounds = bounds[(bounds["shift"] == "length") & bounds["monotone"].notna()][["trial_id", "boundary"]]
    eq = bd.trial_scores(seed_final, "equivalence")
    rows = (
        em[em["split"] == "ood"][["trial_id", "x", "score"]]
        .merge(
            eq[(eq["shift"] == "length") & (eq["split"] == "ood")][["trial_id", "x", "score"]].rename(
                columns={"score": "equivalence"}
            ),
            on=["trial_id", "x"],
            how="left",
        )
        .merge(bounds, on="trial_id")
    )
    rows = rows[rows["boundary"].isna() | (rows["x"] >= rows["boundary"])]
    beyond = (
        rows.groupby("trial_id")
        .agg(exact_match_beyond=("score", "mean"), equivalence_beyond=("equivalence", "mean"))
        .reset_index()
    )
    return bounds.merge(beyond, on="trial_id", how="left")


def arithmetic_findings(table: pd.DataFrame, beyond: pd.DataFrame, seed_final: pd.DataFrame) -> pd.DataFrame:
    """Per cell of a :func:`analysis.breakdown.breakdown` table of one trial per seed (length
    shift only), the seed distribution: n_usable / n_trials (seeds), n_learned (seeds with ID
    skill), n_break, id_score (median over seeds) with id_min / id_max, boundary (median over
    the seeds that break), x_max (the last length the holding seeds reach), verdict (breaks:
    some seed breaks; holds: every learned seed holds; no_id; no_trial), seeds (where the
    seeds break, as the terminal says it), best_seed (the best seed's boundary), and the
    medians over seeds of ``beyond`` (:func:`seed_beyond`): exact_match_beyond,
    equivalence_beyond."""
    rows = table[table["shift"] == "length"] if "shift" in table else table
    by = [c for c in table.columns[1 : table.columns.get_loc("cell")]]
    cells = seed_final.drop_duplicates("trial_id")
    cells = cells.assign(cell=[cell_label(r, by) for r in cells.to_dict("records")])[["trial_id", "cell"]]
    per_cell = beyond.merge(cells, on="trial_id").groupby("cell")[["exact_match_beyond", "equivalence_beyond"]].median()
    out = []
    for row in rows.to_dict("records"):
        verdict = (
            "no_trial"
            if not row["n_usable"]
            else "no_id"
            if not row["n_learned"]
            else "breaks"
            if row["n_break"]
            else "holds"
        )
        medians = per_cell.loc[row["cell"]] if row["cell"] in per_cell.index else {}
        out.append(
            {
                "cell": row["cell"],
                "n_usable": row["n_usable"],
                "n_trials": row["n_trials"],
                "n_learned": row["n_learned"],
                "n_break": row["n_break"],
                "id_score": row["id_median"],
                "id_min": row["id_min"],
                "id_max": row["id_max"],
                "boundary": row["break_median"],
                "x_max": row["holds_to_max"],
                "verdict": verdict,
                "seeds": bd.seed_boundary_text(row),
                "best_seed": bd.best_seed_boundary_text(row),
                "exact_match_beyond": medians.get("exact_match_beyond", np.nan),
                "equivalence_beyond": medians.get("equivalence_beyond", np.nan),
            }
        )
    return pd.DataFrame(out, columns=FINDING_COLUMNS)


def _pct(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.0f}%"


def arithmetic_sentences(findings: pd.DataFrame, threshold: float = 0.5) -> list[str]:
    """One sentence per cell, medians over its seeds first, e.g. ``task.digits=2: ID exact
    match 100% (median of 2 seeds, range 98-100%); boundary 3 in 2 of 2 seeds, exact match 0%
    from there on, where 98% of answers equal f(a mod 10^n, b mod 10^n) (medians); best seed:
    3.``"""
    sentences = []
    for row in findings.to_dict("records"):
        name = row["cell"] or "the study"
        if row["verdict"] == "no_trial":
            ran = f"its {row['n_trials']} seed(s) failed" if row["n_trials"] else "no trial ran"
            sentences.append(f"{name}: no usable seed ({ran}).")
            continue
        n = int(row["n_usable"])
        spread = (
            f"median of {n} seeds, range {_pct(row['id_min'])}-{_pct(row['id_max'])}"
            if n > 1
            else "one seed: no spread"
        )
        head = f"{name}: ID exact match {_pct(row['id_score'])} ({spread})"
        if row["verdict"] == "no_id":
            sentences.append(f"{head}; no seed learned the task in distribution, so there is nothing to break.")
            continue
        text = f"{head}; boundary {row['seeds']}, exact match {_pct(row['exact_match_beyond'])} from there on"
        if not pd.isna(row["equivalence_beyond"]):
            text += f", where {_pct(row['equivalence_beyond'])} of answers equal f(a mod 10^n, b mod 10^n)"
        sentences.append(text + (" (medians)" if n > 1 else "") + f"; best seed: {row['best_seed']}.")
    return sentences


def icl_findings(gap: pd.DataFrame) -> pd.DataFrame:
    """Per cell of an :func:`analysis.icl.selection_gap` frame of one trial per seed
    (unshifted prompts): n (seeds), the seeds' median gap averaged over the ID and over
    the OOD numbers of examples, and the baseline that is most often best."""
    rows = gap[gap["shift"] == "none"]
    out = []
    for cell, part in rows.groupby("cell", sort=False):
        out.append(
            {
                "cell": cell,
                "n": int(part["n"].max()),
                "gap_id": float(part.loc[part["split"] == "id", "gap_median"].mean()),
                "gap_ood": float(part.loc[part["split"] == "ood", "gap_median"].mean()),
                "best_baseline": part["best_baseline"].mode().iloc[0] if part["best_baseline"].notna().any() else None,
            }
        )
    return pd.DataFrame(out, columns=["cell", "n", "gap_id", "gap_ood", "best_baseline"])


def icl_sentences(findings: pd.DataFrame) -> list[str]:
    """One sentence per cell: the model's excess error over the best baseline, median over seeds."""
    return [
        f"{r['cell'] or 'the study'}: normalized error {r['gap_id']:+.3f} vs the best baseline "
        f"({(r['best_baseline'] or 'none').removeprefix('nmse_')}) with ID numbers of examples, "
        f"{r['gap_ood']:+.3f} beyond them ("
        + (f"medians over {r['n']} seeds)." if r["n"] > 1 else "one seed: no spread).")
        for r in findings.to_dict("records")
    ]


def summary_text(
    study: str, trials: pd.DataFrame, final: pd.DataFrame, metric: str | None = None, threshold: float = 0.5
) -> str:
    """The end-of-sweep text table of ``study`` (see :func:`analysis.breakdown.format_summary`), one block
    per headline metric present (exact_match for arithmetic, nmse for icl) unless
    ``metric`` is given.  ``trials`` and ``final`` as :func:`analysis.load.study_frames`
    reads them."""
    if final.empty:
        return f"study {study}: no evaluations yet ({len(trials)} trials)"
    blocks = []
    for name in [metric] if metric else bd.primary_metrics(final):
        seed_final, seed_trials = bd.seed_best(final, trials, name)  # one trial per seed: the distribution
        table = bd.breakdown(seed_final, seed_trials, metric=name, threshold=threshold)
        by = [c for c in table.columns[1 : table.columns.get_loc("cell")]]
        extra = None
        if name == "exact_match" and "equivalence" in set(final["metric"]):
            found = arithmetic_findings(table, seed_beyond(seed_final, threshold), seed_final).set_index("cell")
            extra = ("equiv", {c: bd.format_value(v) for c, v in found["equivalence_beyond"].items()})
        text = bd.format_summary(table, bd.curves(seed_final, name, by=by), name, threshold, extra=extra)
        if extra:
            text += (
                "\nequiv = share of answers equal to f(a mod 10^n, b mod 10^n) at the OOD lengths from each "
                "seed's boundary on (every OOD length for a seed that holds), median over the seeds."
            )
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
            found = (
                f"between {r['low_value']} and {r['high_value']}"
                if r["low_value"] != r["high_value"]
                else f"at {r['low_value']}"
            )
        else:
            found = f"{fmt_number(r['estimate'])} [{fmt_number(r['low'])}, {fmt_number(r['high'])}]"
        outside = "" if r["in_range"] else " (the interval lies outside the axis: widen it)"
        lines.append(
            f"{head}{where}: {found} ({100 * r['level']:.0f}% interval){outside}, {int(r['trials'])} trials, "
            f"{int(r['seeds_per_point'])} seeds per point, {r['stopped']}"
        )
    return lines


def fmt_number(value: float) -> str:
    """A threshold or an interval end: 3 significant digits, whole numbers from 1000 on."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
