"""Benchmark: a breakdown query over a large results store, against plain pandas.

Builds a synthetic store of ``--rows`` eval rows (default 10^7) the way a sweep
writes it: 20 cells x 25 trials, each trial reporting every eval step its rows
(conditions len_a x len_b x metrics) and the driver flushing one fragment per
``--flush-every`` steps; a few trials are restored and re-report their last flush
(attempt 1), and one re-reports it with the same attempt, so deduplication has real
work to do.  Then times, in one run:

1. the breakdown query through ``Store.sql``: per cell, the best trial by ID score
   (mean ``exact_match`` over the ``id`` split at the trial's final step) and its OOD
   score per ``len_a`` -- on a fresh Store (cold) and again (warm);
2. the same answer from ``pandas.read_parquet`` of the same directory + pandas
   (deduplicating as the store does, so the answers are equal; and without
   deduplication, as a lower bound for pandas);
3. appending one trial's report (rows as dicts) to the store;

first on the store as written (one fragment per flush), then after ``compact``.
The last line printed is one JSON object with every figure.

    python bench/store_query.py [--rows 10000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.store.schema import KEYS  # noqa: E402
from study.store import Store  # noqa: E402

STUDY = "bench"
N_CELLS = 20
TRIALS_PER_CELL = 25
LENGTHS = list(range(1, 11))  # len_a and len_b
ID_MAX_LEN = 4  # conditions with both lengths <= this are in distribution
METRICS = ["exact_match", "digit_acc", "carry_acc", "loss", "edit_distance"]
ROWS_PER_STEP = len(LENGTHS) ** 2 * len(METRICS)

# The breakdown as an analysis module writes it: one scan of the evals table (the
# exact_match rows, materialized once), then small aggregates.
BREAKDOWN_SQL = """
WITH em AS MATERIALIZED (
    SELECT study, cell, trial_id, step, split, len_a, value
    FROM evals WHERE metric = 'exact_match'
),
final AS (SELECT study, trial_id, max(step) AS step FROM em GROUP BY study, trial_id),
at_final AS MATERIALIZED (SELECT em.* FROM em JOIN final USING (study, trial_id, step)),
scored AS (
    SELECT study, cell, trial_id, avg(value) AS id_score
    FROM at_final WHERE split = 'id' GROUP BY study, cell, trial_id
),
best AS (
    SELECT study, cell, arg_max(trial_id, id_score) AS trial_id, max(id_score) AS id_score
    FROM scored GROUP BY study, cell
)
SELECT b.study, b.cell, b.trial_id, b.id_score, a.len_a, avg(a.value) AS ood_score
FROM at_final AS a JOIN best AS b USING (study, cell, trial_id)
WHERE a.split = 'ood'
GROUP BY b.study, b.cell, b.trial_id, b.id_score, a.len_a
ORDER BY b.cell, a.len_a
"""

# The same question written naively, reading the evals view three times: on a store of
# many small fragments every read pays DuckDB's per-file cost again.
BREAKDOWN_SQL_3_SCANS = """
WITH final AS (
    SELECT study, trial_id, max(step) AS step FROM evals WHERE metric = 'exact_match'
    GROUP BY study, trial_id
),
scored AS (
    SELECT e.study, e.cell, e.trial_id, avg(e.value) AS id_score
    FROM evals AS e JOIN final USING (study, trial_id, step)
    WHERE e.metric = 'exact_match' AND e.split = 'id'
    GROUP BY e.study, e.cell, e.trial_id
),
best AS (
    SELECT study, cell, arg_max(trial_id, id_score) AS trial_id, max(id_score) AS id_score
    FROM scored GROUP BY study, cell
)
SELECT b.study, b.cell, b.trial_id, b.id_score, e.len_a, avg(e.value) AS ood_score
FROM evals AS e JOIN final USING (study, trial_id, step) JOIN best AS b USING (study, trial_id)
WHERE e.metric = 'exact_match' AND e.split = 'ood'
GROUP BY b.study, b.cell, b.trial_id, b.id_score, e.len_a
ORDER BY b.cell, e.len_a
"""


def condition_grid() -> dict[str, np.ndarray]:
    """One eval step's conditions x metrics as columns (ROWS_PER_STEP rows)."""
    len_a, len_b, metric = np.meshgrid(LENGTHS, LENGTHS, np.arange(len(METRICS)), indexing="ij")
    len_a, len_b, metric = len_a.ravel(), len_b.ravel(), metric.ravel()
    in_dist = (len_a <= ID_MAX_LEN) & (len_b <= ID_MAX_LEN)
    return {
        "len_a": len_a.astype(np.int64),
        "len_b": len_b.astype(np.int64),
        "metric": np.array(METRICS)[metric],
        "split": np.where(in_dist, "id", "ood"),
    }


def flush_table(trial: str, cell: str, steps: list[int], rng: np.random.Generator) -> pa.Table:
    """The eval rows a trial reports for some steps: one row per step x condition x metric."""
    grid = condition_grid()
    n = len(steps) * ROWS_PER_STEP
    return pa.table(
        {
            "trial_id": pa.array([trial] * n),
            "cell": pa.array([cell] * n),
            "step": np.repeat(np.array(steps, dtype=np.int64), ROWS_PER_STEP),
            "split": np.tile(grid["split"], len(steps)),
            "metric": np.tile(grid["metric"], len(steps)),
            "value": rng.random(n),
            "len_a": np.tile(grid["len_a"], len(steps)),
            "len_b": np.tile(grid["len_b"], len(steps)),
        }
    )


def build(store: Store, rows: int, flush_every: int) -> dict[str, Any]:
    """Write the synthetic study; return what was written."""
    n_trials = N_CELLS * TRIALS_PER_CELL
    n_steps = max(1, rows // (n_trials * ROWS_PER_STEP))
    rng = np.random.default_rng(0)
    fragments = 0
    restored = 0
    for t in range(n_trials):
        cell = f"model.size={t % N_CELLS}|task.digits=3"
        trial = f"trial_{t:05d}"
        steps = [100 * (s + 1) for s in range(n_steps)]
        chunks = [steps[i : i + flush_every] for i in range(0, n_steps, flush_every)]
        for chunk in chunks:
            store.append("evals", flush_table(trial, cell, chunk, rng), study=STUDY, attempt=0)
            fragments += 1
        if t % 25 == 3:  # restored from its last checkpoint: re-reports the last flush
            store.append("evals", flush_table(trial, cell, chunks[-1], rng), study=STUDY, attempt=1)
            fragments += 1
            restored += 1
        if t % 100 == 7:  # restored without a new attempt number
            store.append("evals", flush_table(trial, cell, chunks[-1], rng), study=STUDY, attempt=0)
            fragments += 1
            restored += 1
    return {"trials": n_trials, "steps": n_steps, "fragments": fragments, "restored_trials": restored}


def pandas_breakdown(root: str, dedup: bool) -> pd.DataFrame:
    """The breakdown with pandas alone: read the directory (the exact_match rows, the
    columns needed), deduplicate as the store does, group."""
    keys = KEYS["evals"]
    columns = sorted(set(keys) | {"cell", "attempt", "written_at", "value"})
    evals = pd.read_parquet(
        os.path.join(root, "evals"),
        columns=[c for c in columns if c != "study"] + ["study"],
        filters=[("metric", "==", "exact_match")],
    )
    evals["study"] = evals["study"].astype(str)
    if dedup:
        evals = evals.sort_values(["attempt", "written_at"], kind="stable")
        evals = evals.drop_duplicates(keys, keep="last")
    final = evals.groupby(["study", "trial_id"], as_index=False)["step"].max()
    at_final = evals.merge(final, on=["study", "trial_id", "step"])
    scored = (
        at_final[at_final["split"] == "id"]
        .groupby(["study", "cell", "trial_id"], as_index=False)["value"]
        .mean()
        .rename(columns={"value": "id_score"})
    )
    best = scored.loc[scored.groupby(["study", "cell"])["id_score"].idxmax()]
    ood = at_final[at_final["split"] == "ood"].merge(best, on=["study", "cell", "trial_id"])
    out = ood.groupby(["study", "cell", "trial_id", "id_score", "len_a"], as_index=False)["value"].mean()
    out = out.rename(columns={"value": "ood_score"})
    return out.sort_values(["cell", "len_a"]).reset_index(drop=True)


def timed(fn: Any) -> tuple[float, Any]:
    """(wall-clock seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def cpu_timed(fn: Any) -> tuple[float, float, Any]:
    """(wall-clock seconds, CPU seconds of this process, all threads, result) of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - start, time.process_time() - start_cpu, result


def same_answer(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    cols = ["cell", "trial_id", "len_a"]
    a = a.sort_values(cols).reset_index(drop=True)
    b = b.sort_values(cols).reset_index(drop=True)
    return (
        len(a) == len(b)
        and (a["trial_id"].astype(str).to_numpy() == b["trial_id"].astype(str).to_numpy()).all()
        and np.allclose(a["ood_score"].to_numpy(float), b["ood_score"].to_numpy(float))
    )


def one_report(step: int) -> list[dict[str, Any]]:
    """One trial's report at one eval step, as the sweep driver receives it."""
    grid = condition_grid()
    return [
        {
            "trial_id": "trial_new",
            "step": step,
            "split": str(grid["split"][i]),
            "metric": str(grid["metric"][i]),
            "value": 0.5,
            "len_a": int(grid["len_a"][i]),
            "len_b": int(grid["len_b"][i]),
        }
        for i in range(ROWS_PER_STEP)
    ]


def measure(root: str, label: str, repeats: int) -> dict[str, Any]:
    """Time the breakdown through the store and through pandas on the store at ``root``."""
    cold, cold_cpu, answer = cpu_timed(lambda: Store(root, create=False).sql(BREAKDOWN_SQL))
    store = Store(root, create=False)
    store.sql(BREAKDOWN_SQL)
    warm = min(timed(lambda: store.sql(BREAKDOWN_SQL))[0] for _ in range(repeats))
    three_scans, answer3 = timed(lambda: Store(root, create=False).sql(BREAKDOWN_SQL_3_SCANS))
    frame_s, _ = timed(
        lambda: Store(root, create=False).frame(
            "evals",
            where="metric = 'exact_match'",
            columns=["study", "cell", "trial_id", "step", "split", "len_a", "value"],
        )
    )
    pandas_s, pandas_cpu, expected = cpu_timed(lambda: pandas_breakdown(root, dedup=True))
    naive_s, _ = timed(lambda: pandas_breakdown(root, dedup=False))
    same = same_answer(answer, expected) and same_answer(answer3, expected)
    fragments = len(store.fragments("evals"))
    print(f"[{label}] {fragments} fragments")
    print(f"  Store.sql breakdown, fresh Store:       {cold:7.3f} s  (CPU {cold_cpu:.3f} s)")
    print(f"  Store.sql breakdown, warm Store:        {warm:7.3f} s  (best of {repeats})")
    print(f"  Store.sql breakdown reading evals 3x:   {three_scans:7.3f} s  (fresh Store)")
    print(f"  Store.frame of the exact_match rows:    {frame_s:7.3f} s  (fresh Store, to pandas)")
    print(
        f"  pandas read_parquet + dedup + groupby:  {pandas_s:7.3f} s  (CPU {pandas_cpu:.3f} s; "
        f"{pandas_s / cold:.1f}x the fresh store query)"
    )
    print(f"  pandas without dedup (wrong once trials are restored): {naive_s:7.3f} s")
    print(f"  same answer as pandas: {same}  ({len(answer)} rows)")
    return {
        "fragments": fragments,
        "store_query_cold_s": round(cold, 4),
        "store_query_cold_cpu_s": round(cold_cpu, 4),
        "store_query_warm_s": round(warm, 4),
        "store_query_3_scans_cold_s": round(three_scans, 4),
        "store_frame_exact_match_s": round(frame_s, 4),
        "pandas_dedup_s": round(pandas_s, 4),
        "pandas_dedup_cpu_s": round(pandas_cpu, 4),
        "pandas_no_dedup_s": round(naive_s, 4),
        "speedup_vs_pandas": round(pandas_s / cold, 2),
        "speedup_vs_pandas_no_dedup": round(naive_s / cold, 2),
        "same_answer": bool(same),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="eval rows to write (default 10^7)")
    parser.add_argument("--flush-every", type=int, default=4, help="eval steps per fragment (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="warm query repetitions (default 3)")
    parser.add_argument("--keep", help="build the store in this directory and keep it (reused if present)")
    parser.add_argument("--no-compact", action="store_true", help="skip the compacted measurement")
    args = parser.parse_args(argv)

    workdir = args.keep or tempfile.mkdtemp(prefix="oodstudy-bench-")
    root = os.path.join(workdir, "store")
    figures: dict[str, Any] = {
        "rows_requested": args.rows,
        "cpus": os.cpu_count(),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
    }
    try:
        store = Store(root)
        if store.fragments("evals"):
            print(f"reusing the store at {root}")
            built: dict[str, Any] = {"reused": True}
        else:
            build_s, built = timed(lambda: build(store, args.rows, args.flush_every))
            built["build_s"] = round(build_s, 1)
        rows = int(store.sql("SELECT count(*) AS n FROM evals")["n"].iloc[0])
        raw = int(store.sql("SELECT count(*) AS n FROM evals_raw")["n"].iloc[0])
        print(f"store {root}: {raw} eval rows stored, {rows} after deduplication; {built}")
        figures.update(built, stored_rows=raw, rows=rows)

        figures["fragmented"] = measure(root, "one fragment per flush", args.repeats)

        report = one_report(10**6)
        append_store = Store(os.path.join(workdir, "append_store"))
        append_times = []
        for i in range(20):
            append_times.append(
                timed(lambda: append_store.append("evals", report, study=STUDY, cell="c", attempt=i))[0]
            )
        append_s = statistics.median(append_times)
        print(f"append of one report ({ROWS_PER_STEP} rows as dicts): median {append_s * 1000:.1f} ms")
        figures["append_one_report_s"] = round(append_s, 4)
        figures["append_rows"] = ROWS_PER_STEP

        if not args.no_compact:
            compact_s, _ = timed(lambda: Store(root).compact(STUDY))
            print(f"compact: {compact_s:.1f} s")
            figures["compact_s"] = round(compact_s, 2)
            figures["compacted"] = measure(root, "compacted", args.repeats)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    figures["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    headline = figures.get("compacted", figures["fragmented"])
    print(
        f"target: query < 2 s and >= 3x pandas -> fragmented {figures['fragmented']['store_query_cold_s']} s "
        f"({figures['fragmented']['speedup_vs_pandas']}x); compacted {headline['store_query_cold_s']} s "
        f"({headline['speedup_vs_pandas']}x)"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
