"""Time the breakdown table of a large arithmetic study straight from the store.

Builds (or reuses, with ``--store DIR``) a synthetic study of about 10^7 eval rows:
48 cells (4 model sizes x 4 training lengths x 3 mixture weights) x 20 seeds x 26
evaluation steps x 100 conditions (len_a, len_b in 1..10) x 4 metrics, with one trial
per cell retried (its last two steps re-reported by attempt 1, so deduplication has
real work).  Then times what a report does first: read the trials, read each trial's
final-step exact-match rows (filtered inside the store's DuckDB SQL) and compute the
breakdown (ID score, OOD score per length, boundary, spread over seeds) of every cell.

    python bench/breakdown_query.py                 # build in a temp dir, time, delete
    python bench/breakdown_query.py --store /tmp/big   # build once there, reuse afterwards

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import breakdown as bd
from analysis import load
from study.store import Store

STUDY = "bench"
SIZES = ["nano", "micro", "mini", "small"]
DIGITS = [2, 3, 4, 5]
MIX = [0.0, 0.2, 0.5]
METRICS = ["exact_match", "digit_acc", "equivalence", "equivalence_of_wrong"]


def build(store: Store, seeds: int, steps: int, max_len: int) -> int:
    """Write the synthetic study; return the number of eval rows written."""
    rng = np.random.default_rng(0)
    la, lb = (g.ravel() for g in np.meshgrid(np.arange(1, max_len + 1), np.arange(1, max_len + 1), indexing="ij"))
    length = np.maximum(la, lb)
    n_cond, n_metric = len(la), len(METRICS)
    trials, written = [], 0
    start = pd.Timestamp("2025-01-01", tz="UTC")
    for c, (size, digits, mix) in enumerate(itertools.product(SIZES, DIGITS, MIX)):
        reach = digits + SIZES.index(size) * 0.7 + mix * 2  # where this cell's accuracy collapses
        ids = [f"c{c:02d}-s{s:02d}" for s in range(seeds)]
        for s, trial_id in enumerate(ids):
            grid = {"model.size": size, "task.digits": digits, "task.mix_weight": mix, "train.seed": s}
            failed = s == seeds - 1 and c % 7 == 0  # a few failed trials (their rows stay in the store)
            trials.append(
                {
                    "trial_id": trial_id,
                    "cell": "|".join(f"{k}={v}" for k, v in grid.items()),
                    "grid": json.dumps(grid),
                    "status": "failed" if failed else "completed",
                    "config": json.dumps(
                        {
                            "task": {"family": "arithmetic", "digits": digits, "mix_weight": mix},
                            "model": {"size": size},
                            "train": {"seed": s, "lr": 1e-3},
                        }
                    ),
                    "start_time": start,
                    "end_time": start + pd.Timedelta(minutes=5),
                    "steps": steps * 100,
                    "n_params": 10_000 * (1 + SIZES.index(size)),
                    "node": "n0",
                    "device": "cpu",
                }
            )
        # one block per cell: trial x step x condition x metric
        n = seeds * steps * n_cond * n_metric
        trial = np.repeat(np.arange(seeds), steps * n_cond * n_metric)
        step = np.tile(np.repeat(np.arange(1, steps + 1) * 100, n_cond * n_metric), seeds)
        cond = np.tile(np.repeat(np.arange(n_cond), n_metric), seeds * steps)
        metric = np.tile(np.arange(n_metric), seeds * steps * n_cond)
        progress = 1 - np.exp(-step / (steps * 25.0))
        shift = reach + rng.normal(0, 0.5, seeds)[trial]
        acc = progress / (1 + np.exp(3.0 * (length[cond] - shift))) + rng.normal(0, 0.01, n)
        value = np.clip(np.where(metric == 2, 0.97, acc), 0, 1)
        value = np.where(metric == 3, np.where(acc < 1, 0.95, np.nan), value)
        ood = length[cond] > digits
        cells = np.array([t["cell"] for t in trials[-seeds:]], dtype=object)
        frame = pd.DataFrame(
            {
                "trial_id": np.array(ids, dtype=object)[trial],
                "cell": cells[trial],
                "step": step,
                "split": np.where(ood, "ood", "id"),
                "metric": np.array(METRICS, dtype=object)[metric],
                "value": value,
                "len_a": la[cond],
                "len_b": lb[cond],
            }
        )
        store.append("evals", frame, study=STUDY)
        retried = frame[(frame["trial_id"] == ids[0]) & (frame["step"] > (steps - 2) * 100)]
        store.append("evals", retried.assign(value=retried["value"] * 0.99), study=STUDY, attempt=1)
        written += n
    store.append("trials", pd.DataFrame(trials), study=STUDY)
    return written


def breakdown_once(uri: str) -> dict[str, float]:
    """Open the store, load what the breakdown needs, compute it; seconds per phase."""
    t0 = time.perf_counter()
    store = Store(uri, create=False)
    trials = load.trials(store, STUDY, config="none")
    t1 = time.perf_counter()
    final = load.final_evals(store, STUDY, metrics=["exact_match"], trials_frame=trials)
    t2 = time.perf_counter()
    table = bd.breakdown(final, trials, metric="exact_match")
    t3 = time.perf_counter()
    return {
        "trials_s": t1 - t0,
        "final_evals_s": t2 - t1,
        "breakdown_s": t3 - t2,
        "total_s": t3 - t0,
        "final_rows": len(final),
        "cells": len(table),
        "table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store directory to build once and reuse (default: a temp dir)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=26)
    parser.add_argument("--max-len", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (the first includes opening costs)")
    args = parser.parse_args()

    temp = None if args.store else tempfile.mkdtemp(prefix="oodstudy-bench-")
    uri = args.store or temp
    try:
        build_s = 0.0
        existing = Path(uri, "_oodstudy.json").exists() and STUDY in Store(uri, create=False).studies()
        if existing:
            rows = int(Store(uri, create=False).sql(f"SELECT count(*) AS n FROM evals WHERE study = '{STUDY}'")["n"][0])
        else:
            t = time.perf_counter()
            rows = build(Store(uri, create=True), args.seeds, args.steps, args.max_len)
            build_s = time.perf_counter() - t
        runs = [breakdown_once(uri) for _ in range(args.repeat)]
        table = runs[0].pop("table")
        for r in runs[1:]:
            r.pop("table")
        print(
            f"store {uri}: {rows:,} eval rows, {runs[0]['final_rows']:,} final exact-match rows, "
            f"{runs[0]['cells']} cells" + (f" (built in {build_s:.1f} s)" if build_s else " (reused)")
        )
        for i, r in enumerate(runs):
            print(
                f"run {i + 1}: trials {r['trials_s']:.2f} s, final evals {r['final_evals_s']:.2f} s, "
                f"breakdown {r['breakdown_s']:.2f} s, total {r['total_s']:.2f} s"
            )
        print(
            table[["cell", "n_usable", "n_failed", "id_score", "boundary", "boundary_q25", "boundary_q75"]]
            .head(8)
            .to_string(index=False, float_format=lambda v: f"{v:.2f}")
        )
        best = min(r["total_s"] for r in runs)
        print(
            json.dumps(
                {
                    "bench": "breakdown_query",
                    "rows": rows,
                    "final_rows": runs[0]["final_rows"],
                    "cells": runs[0]["cells"],
                    "build_s": round(build_s, 2),
                    "first_total_s": round(runs[0]["total_s"], 3),
                    "best_total_s": round(best, 3),
                    "final_evals_s": round(min(r["final_evals_s"] for r in runs), 3),
                    "breakdown_s": round(min(r["breakdown_s"] for r in runs), 3),
                    "rows_per_s": round(rows / best),
                }
            )
        )
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
