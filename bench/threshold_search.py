"""Benchmark: threshold search against a grid and against bisection, on a synthetic trainable.

The trainable: a seed's success at axis value x is a coin with the known logistic
probability ``P(x) = 1 / (1 + exp(-slope * (x - centre)))`` (plus ``--lapse`` either way),
the coin drawn from a generator seeded by (case, seed, x): the noise comes from the seed.
Each case draws the curve's centre uniformly in the inner 90% of the axis [0, 1] and its
10%-90% width log-uniformly in ``--widths`` (steepness varied); the true threshold is
where P(x) = ``--target`` (the centre at 0.5).

Three ways to find it, each with ``--seeds`` seeds per point, all on the same coins:

- threshold search (:class:`study.tune.threshold.ThresholdSearcher`, driven directly, no
  Ray): stops at an interval narrower than ``--tolerance`` or at ``--budget`` trials;
- a grid of the same resolution (points every ``--tolerance``, ends included), every point
  with the same seeds: its trial count, and the same posterior fitted to its outcomes
  (its interval's coverage and width, for comparison);
- plain bisection with seeds: train the seeds at the midpoint, majority vote (success
  share >= target), halve the bracket until it is narrower than the tolerance; its
  interval is the last bracket.

Reported: coverage (true threshold inside the reported interval; the issue asks >= 90%
for the threshold search), mean trials (<= 1/3 of the grid's), mean interval width and
|estimate - truth|, per method, and the threshold search's figures by steepness (steeper
and shallower half of the cases).  Last line: one JSON object with every figure.

    python bench/threshold_search.py [--cases 100] [--seeds 4] [--tolerance 0.05] [--budget 64]
        [--widths 0.01,0.1] [--target 0.5] [--lapse 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.tune.threshold import CellState, ThresholdSearch, cell_summary, make_model  # noqa: E402
from study.tune.threshold_searcher import Searcher, ThresholdSearcher  # noqa: E402

AXIS = "task.mix_weight"


def coin(case: int, seed: int, x: float, centre: float, slope: float, lapse: float) -> bool:
    """One seed's success at x: a draw from P(x), the generator seeded by (case, seed, x)."""
    p = lapse + (1 - 2 * lapse) / (1 + math.exp(-slope * (x - centre)))
    rng = np.random.default_rng([case, seed, int(round(x * 1e9))])
    return bool(rng.random() < p)


def build(point: dict[str, Any], value: Any, seed: int) -> dict[str, Any]:
    return {"task": {"mix_weight": value}, "train": {"seed": seed}}


def run_search(search: ThresholdSearch, case: int, centre: float, slope: float, lapse: float) -> dict[str, Any]:
    searcher = ThresholdSearcher(search, [{}], build)
    n = 0
    while (config := searcher.suggest(f"t{n}")) is not Searcher.FINISHED:
        assert config is not None  # one cell, one point at a time, answered at once
        x, seed = config["trial"]["task"]["mix_weight"], config["trial"]["train"]["seed"]
        success = coin(case, seed, x, centre, slope, lapse)
        searcher.on_trial_complete(f"t{n}", {"id_exact_match": 1.0 if success else 0.0, "status": "completed"})
        n += 1
    row = searcher.rows()[0]
    return {
        "trials": row["trials"],
        "low": row["low"],
        "high": row["high"],
        "estimate": row["estimate"],
        "points": row["points"],
        "stopped": row["stopped"],
    }


def run_grid(search: ThresholdSearch, case: int, centre: float, slope: float, lapse: float) -> dict[str, Any]:
    n_points = int(round(search.span / search.tolerance)) + 1
    xs = np.linspace(search.low, search.high, n_points)
    cell = CellState(id="all", point={})
    for x in xs:
        t = search.position(float(x))
        for seed in range(search.seeds_per_point):
            cell.outcomes.append((t, coin(case, seed, t, centre, slope, lapse)))
    s = cell_summary(search, make_model(search), cell)
    return {"trials": n_points * search.seeds_per_point, "low": s["low"], "high": s["high"], "estimate": s["estimate"]}


def run_bisection(search: ThresholdSearch, case: int, centre: float, slope: float, lapse: float) -> dict[str, Any]:
    lo, hi, trials = search.low, search.high, 0
    while hi - lo >= search.tolerance:
        mid = search.position((lo + hi) / 2)
        wins = sum(coin(case, seed, mid, centre, slope, lapse) for seed in range(search.seeds_per_point))
        trials += search.seeds_per_point
        if wins / search.seeds_per_point >= search.target:  # success here: the threshold is below
            hi = mid
        else:
            lo = mid
    return {"trials": trials, "low": lo, "high": hi, "estimate": (lo + hi) / 2}


def summarize(runs: list[dict[str, Any]], truths: list[float]) -> dict[str, float]:
    inside = [r["low"] <= t <= r["high"] for r, t in zip(runs, truths)]
    return {
        "coverage": round(sum(inside) / len(runs), 4),
        "mean_trials": round(statistics.mean(r["trials"] for r in runs), 2),
        "mean_width": round(statistics.mean(r["high"] - r["low"] for r in runs), 4),
        "mean_abs_error": round(statistics.mean(abs(r["estimate"] - t) for r, t in zip(runs, truths)), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100, help="random true thresholds (>= 20)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per point")
    parser.add_argument("--tolerance", type=float, default=0.05, help="interval width to stop at, share of the axis")
    parser.add_argument("--budget", type=int, default=64, help="most trials per search")
    parser.add_argument("--widths", default="0.01,0.1", help="10%%-90%% widths of the true curves (log-uniform)")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--lapse", type=float, default=0.0, help="chance of the wrong outcome far from the threshold")
    parser.add_argument("--interval", type=float, default=0.9, help="credible level")
    parser.add_argument("--seed", type=int, default=0, help="seeds the draw of the cases")
    args = parser.parse_args()
    load_start = round(os.getloadavg()[0], 2)

    search = ThresholdSearch(
        axis=AXIS,
        low=0.0,
        high=1.0,
        tolerance=args.tolerance,
        budget=args.budget,
        seeds_per_point=args.seeds,
        target=args.target,
        interval=args.interval,
        success={"metric": "id_exact_match", "op": ">=", "value": 0.9},
    )
    w_lo, w_hi = (float(w) for w in args.widths.split(","))
    rng = np.random.default_rng(args.seed)
    ln9 = math.log(9.0)
    cases = []
    for case in range(args.cases):
        width = math.exp(rng.uniform(math.log(w_lo), math.log(w_hi)))  # 10%-90% width of the curve
        slope = 2 * ln9 / width
        centre = rng.uniform(0.05, 0.95)
        p = (args.target - args.lapse) / (1 - 2 * args.lapse)
        true = centre + math.log(p / (1 - p)) / slope  # where P(x) = target
        cases.append((case, width, slope, centre, true))

    print(
        f"threshold search bench: {args.cases} cases, {args.seeds} seeds per point, tolerance {args.tolerance}, "
        f"budget {args.budget}, target {args.target}, curve widths {w_lo}-{w_hi}, lapse {args.lapse}"
    )
    results: dict[str, list[dict[str, Any]]] = {"search": [], "grid": [], "bisection": []}
    started = time.perf_counter()
    for case, width, slope, centre, true in cases:
        s = run_search(search, case, centre, slope, args.lapse)
        g = run_grid(search, case, centre, slope, args.lapse)
        b = run_bisection(search, case, centre, slope, args.lapse)
        for name, r in (("search", s), ("grid", g), ("bisection", b)):
            results[name].append(r)
        print(
            f"  case {case:2d}: true {true:.3f} width {width:.3f} | search [{s['low']:.3f}, {s['high']:.3f}] "
            f"{s['trials']:3d} trials {s['stopped']:9s} {'in ' if s['low'] <= true <= s['high'] else 'OUT'} | "
            f"bisection [{b['low']:.3f}, {b['high']:.3f}] {'in ' if b['low'] <= true <= b['high'] else 'OUT'}"
        )
    seconds = time.perf_counter() - started
    truths = [c[4] for c in cases]
    figures = {name: summarize(runs, truths) for name, runs in results.items()}
    order = sorted(range(len(cases)), key=lambda i: cases[i][1])  # by width: steep first
    half = len(order) // 2
    by_steepness = {
        label: summarize([results["search"][i] for i in idx], [truths[i] for i in idx])
        for label, idx in (("steeper_half", order[:half]), ("shallower_half", order[half:]))
    }
    converged = sum(r["stopped"] == "converged" for r in results["search"]) / len(cases)
    ratio = figures["search"]["mean_trials"] / figures["grid"]["mean_trials"]

    print()
    for name, f in figures.items():
        print(
            f"{name:>10}: coverage {f['coverage']:.0%}  mean trials {f['mean_trials']:6.1f}  "
            f"mean width {f['mean_width']:.3f}  mean |error| {f['mean_abs_error']:.3f}"
        )
    for label, f in by_steepness.items():
        print(f"  search, {label.replace('_', ' ')}: coverage {f['coverage']:.0%}  mean trials {f['mean_trials']:.1f}")
    print(
        f"threshold search: {converged:.0%} of cells converged, the rest stopped at the budget; trials "
        f"{ratio:.2f} of the grid's (need <= 0.33), coverage {figures['search']['coverage']:.0%} (need >= 90%); "
        f"{seconds / len(cases) * 1000:.0f} ms per case for all three"
    )
    print(
        json.dumps(
            {
                "bench": "threshold_search",
                "cases": args.cases,
                "seeds_per_point": args.seeds,
                "tolerance": args.tolerance,
                "budget": args.budget,
                "target": args.target,
                "interval": args.interval,
                "widths": [w_lo, w_hi],
                "lapse": args.lapse,
                "grid_points": int(round(1 / args.tolerance)) + 1,
                **{f"{name}_{key}": value for name, f in figures.items() for key, value in f.items()},
                **{f"search_{label}_{key}": value for label, f in by_steepness.items() for key, value in f.items()},
                "search_converged_share": round(converged, 4),
                "search_trials_over_grid": round(ratio, 4),
                "coverage_ok": figures["search"]["coverage"] >= 0.9,
                "trials_ok": ratio <= 1 / 3,
                "seconds": round(seconds, 2),
                "load_avg_1min_at_start": load_start,
                "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
