"""What an arithmetic model answers beyond its boundary.

An OOD "failure" is often an equivalence: the model answers f(a mod 10^n, b mod 10^n),
the representative of the input's residue class in its training domain.  Per cell and
condition this module sets the exact-match rate beside the equivalence rate, the chance
level a perfectly equivalence-following model reaches under a modulus, and the share of
wrong answers that are equivalence answers.
"""

from __future__ import annotations

import pandas as pd

from analysis.breakdown import condition_keys, best_trials, sort_cells, cell_distribution, trial_scores
from analysis.load import cell_axes, cell_label

METRICS = ("exact_match", "equivalence", "chance", "equivalence_of_wrong")


def equivalence_table(
    final: pd.DataFrame, by: list[str] | None = None, length: str = "max", ood_only: bool = True
) -> pd.DataFrame:
    """Exact match vs equivalence vs chance per cell and condition.

    The best trial of a cell is chosen by ID exact match.  Columns: family, the
    ``by`` axes (default: every non-seed grid axis), cell, shift ("length"), x (the
    operand length, max(len_a, len_b) by default; see ``length``), split (and
    len_a, len_b with ``length="pair"``), best_trial, then for the best trial
    exact_match, equivalence, chance, equivalence_of_wrong (NaN where the study has
    no such metric, e.g. chance without a modulus, or where nothing was wrong),
    equivalence_gap (equivalence - exact_match: the answers that are "wrong" only by
    residue class), and over the cell's usable trials n, exact_match_median,
    equivalence_median, equivalence_of_wrong_median.  Only OOD rows unless
    ``ood_only=False``.
    """
    em = trial_scores(final, "exact_match", length)
    by = cell_axes(em) if by is None else list(by)
    best = best_trials(em, "exact_match", by)
    cond = condition_keys(length)
    keys = ["family"] + by + cond
    out = None
    for metric in METRICS:
        scores = em if metric == "exact_match" else trial_scores(final, metric, length)
        if scores.empty:
            continue
        s = cell_distribution(scores, by, cond, "score", best).rename(
            columns={"best": metric, "median": f"{metric}_median"}
        )
        s = s[keys + (["n", "best_trial"] if out is None else []) + [metric, f"{metric}_median"]]
        out = s if out is None else out.merge(s, on=keys, how="left")
    if out is None:
        return pd.DataFrame(columns=keys + ["best_trial"] + list(METRICS))
    for metric in METRICS:
        if metric not in out:
            out[metric] = float("nan")
            out[f"{metric}_median"] = float("nan")
    out["equivalence_gap"] = out["equivalence"] - out["exact_match"]
    if ood_only:
        out = out[out["split"] == "ood"]
    out.insert(1 + len(by), "cell", [cell_label(r, by) for r in out[by].to_dict("records")] if by else "")
    columns = (
        ["family"]
        + by
        + ["cell"]
        + cond
        + [
            "best_trial",
            "exact_match",
            "equivalence",
            "chance",
            "equivalence_of_wrong",
            "equivalence_gap",
            "n",
            "exact_match_median",
            "equivalence_median",
            "equivalence_of_wrong_median",
        ]
    )
    return sort_cells(out[columns], by, ["x"] + (["len_a", "len_b"] if length == "pair" else []))
