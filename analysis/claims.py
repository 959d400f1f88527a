"""A study's claims (the spec's ``expect`` list) checked against its store: one row per
claim and cell, a verdict and the measured seed distribution beside the published value.

Pure functions of the frames :mod:`analysis.load` reads.  A seed's value is the claim's
metric averaged over the final-step eval rows that match the claim's condition, read
from the seed's best trial (each grid point's best Optuna trial by the study's tuned
metric: its ``score``).  The seeds of a cell are pooled as a distribution, never as the
best seed: the median with quartiles and range, ``n`` and how many seeds satisfy the
comparison (Zhou et al., arXiv 2402.09371: length generalization varies widely across
seeds; Cho et al., arXiv 2405.20671, report medians over runs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import NOT_SCORED, UNFINISHED, cell_axes, cell_label
from study.claims_config import CONDITION_COLUMNS, Claim, matches

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_MEASURABLE = "not measurable yet"
COLUMNS = [
    "claim",
    "finding",
    "source",
    "metric",
    "condition",
    "cell",
    "verdict",
    "n",
    "median",
    "q25",
    "q75",
    "min",
    "max",
    "held",
    "published",
    "reference",
    "unfinished",
]


def best_per_seed(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The usable trials, one per grid point: the best by ``score`` in ``mode`` ("max" or
    "min"; ties and missing scores: the smallest trial_id)."""
    usable = trials[~trials["status"].isin(NOT_SCORED)].copy()
    usable["_rank"] = -usable["score"] if mode == "max" else usable["score"]
    usable = usable.sort_values(["_rank", "trial_id"], na_position="last", kind="stable")
    return usable.drop_duplicates("grid_point").drop(columns="_rank")


def seed_values(claim: Claim, tables: dict[str, pd.DataFrame], best: pd.DataFrame) -> pd.DataFrame:
    """One row per seed (grid point) of the claim's cells with rows at its condition:
    cell, grid_point, trial_id, value (the metric's mean over the matching rows of the
    claim's table: ``tables["evals"]``, final evaluations with a ``metric`` column, or
    ``tables["representations"]``, final probe scores with a ``kind`` column)."""
    by = cell_axes(best)
    final = tables[claim.table]
    name = "metric" if claim.table == "evals" else "kind"
    rows = final[(final[name] == claim.metric) & final["trial_id"].isin(best["trial_id"])]
    if claim.at:
        rows = rows[np.array([matches(r, claim.at) for r in rows[list(claim.at)].to_dict("records")], dtype=bool)]
    value = rows.groupby("trial_id")["value"].mean().dropna()  # NaN: undefined there (no wrong answer to compare)
    seeds = best[best["trial_id"].isin(value.index)]
    if claim.cells:
        seeds = seeds[np.array([matches(r, claim.cells) for r in seeds[by].to_dict("records")], dtype=bool)]
    return pd.DataFrame(
        {
            "cell": [cell_label(r, by) for _, r in seeds.iterrows()],
            "grid_point": seeds["grid_point"].to_numpy(),
            "trial_id": seeds["trial_id"].to_numpy(),
            "value": seeds["trial_id"].map(value).to_numpy(dtype=float),
        }
    )


def check_claim(
    i: int, claim: Claim, trials: pd.DataFrame, tables: dict[str, pd.DataFrame], mode: str
) -> list[dict[str, Any]]:
    """The rows of one claim: one per cell it applies to (one row with cell "" when no cell
    of the study has a value yet)."""
    best = best_per_seed(trials, mode)
    by = cell_axes(trials)
    seeds = seed_values(claim, tables, best)
    unfinished = trials[trials["status"].isin(UNFINISHED)]
    other_cell = math.nan  # than: the other cell's median, one reference for every cell
    if claim.than is not None:
        other = seed_values(claim.model_copy(update={"cells": claim.than}), tables, best)
        other_cell = float(other["value"].median()) if len(other) else math.nan
    if claim.than_metric is not None:  # each seed's own reference: the other metric where it is read
        refs = seed_values(claim.model_copy(update={"metric": claim.than_metric}), tables, best)
        seeds = seeds.merge(refs[["grid_point", "value"]].rename(columns={"value": "ref"}), on="grid_point")
    else:
        seeds = seeds.assign(ref=other_cell)
    base = {
        "claim": i,
        "finding": claim.finding,
        "source": claim.source,
        "metric": claim.metric,
        "condition": claim.condition(),
        "published": claim.published(),
    }
    cells = sorted(seeds["cell"].unique()) or [""]
    out = []
    for cell in cells:
        mine = seeds[seeds["cell"] == cell]
        values, refs = mine["value"].to_numpy(dtype=float), mine["ref"].to_numpy(dtype=float)
        reference = float(np.median(refs)) if len(refs) else other_cell
        waiting = int(sum(cell_label(r, by) == cell for _, r in unfinished.iterrows())) if cell else len(unfinished)
        out.append(
            {
                **base,
                "cell": cell,
                **distribution(values),
                "reference": reference,
                "unfinished": waiting,
                **verdict(claim, values, refs, reference, waiting),
            }
        )
    return out


def distribution(values: np.ndarray) -> dict[str, Any]:
    if not len(values):
        return {"n": 0, "median": math.nan, "q25": math.nan, "q75": math.nan, "min": math.nan, "max": math.nan}
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {
        "n": len(values),
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def verdict(claim: Claim, values: np.ndarray, refs: np.ndarray, reference: float, unfinished: int) -> dict[str, Any]:
    """reproduced / not reproduced / not measurable yet (no seed with a value, a ``than``
    cell without one, or trials of the cell still to end), and how many seeds hold: each
    seed against the bound of its own reference ``refs`` (the same for every seed unless the
    claim has a ``than_metric``), the median against the bound of the median ``reference``."""
    bound = claim.bound(reference)
    seed_bounds = [claim.bound(r) for r in refs]
    held = int(sum(claim.holds(v, b) for v, b in zip(values, seed_bounds) if math.isfinite(b)))
    if not len(values) or not math.isfinite(bound) or unfinished:
        return {"verdict": NOT_MEASURABLE, "held": held}
    ok = claim.holds(float(np.median(values)), bound) if claim.pool == "median" else held >= claim.share * len(values)
    return {"verdict": REPRODUCED if ok else NOT_REPRODUCED, "held": held}


def check_claims(
    claims: list[Claim], trials: pd.DataFrame, final: pd.DataFrame, mode: str, structure: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every claim checked: :data:`COLUMNS`, one row per claim and cell, in claim order.
    ``final``: the final eval rows (:func:`analysis.load.final_evals`); ``structure``: the
    final probe scores (:func:`analysis.load.structure_scores` with ``final=True``), needed
    only by claims on the representations table."""
    empty = pd.DataFrame(columns=["trial_id", "kind", "value", *CONDITION_COLUMNS["representations"]])
    tables = {"evals": final, "representations": structure if structure is not None else empty}
    rows = [row for i, claim in enumerate(claims) for row in check_claim(i, claim, trials, tables, mode)]
    return pd.DataFrame(rows, columns=COLUMNS)


def _num(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.3g}"


def claim_line(row: dict[str, Any]) -> str:
    """One claim's line: verdict, finding [source], cell, the measured distribution and
    the published comparison, e.g. ``reproduced      | OOD answers equal the ID equivalent
    [2407.17963 D_4] | task.digits=3 | equivalence_of_wrong at split=ood: median 0.98 (IQR
    0.97-0.99, range 0.95-1; 4 seeds, 4 hold) | published >= 0.9``."""
    n = int(row["n"])
    if n == 0:
        measured = "no seed has a value yet"
    else:
        spread = (
            f"IQR {_num(row['q25'])}-{_num(row['q75'])}, range {_num(row['min'])}-{_num(row['max'])}; " if n > 1 else ""
        )
        seeds = f"{n} seed{'s' if n > 1 else ''}" + (" (one seed: no spread)" if n == 1 else "")
        measured = f"median {_num(row['median'])} ({spread}{seeds}, {int(row['held'])} hold)"
    published = row["published"]
    if math.isfinite(row["reference"]):
        published += f" = {_num(row['reference'])}"
    waiting = f"; {int(row['unfinished'])} trial(s) still to end" if row["unfinished"] else ""
    cell = row["cell"] or "all cells"
    return (
        f"{row['verdict']:<18} | {row['finding']} [{row['source']}] | {cell} | {row['metric']} at "
        f"{row['condition']}: {measured}{waiting} | published {published}"
    )


def claim_lines(table: pd.DataFrame) -> list[str]:
    return [claim_line(row) for row in table.to_dict("records")]


def tally(table: pd.DataFrame) -> str:
    """``claims: 3 reproduced, 1 not reproduced, 0 not measurable yet (of 4)``."""
    counts = table["verdict"].value_counts()
    parts = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in (REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE))
    return f"claims: {parts} (of {len(table)})"
