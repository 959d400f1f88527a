"""Torch threads per trial: one against two, on an idle CPU and on one other work keeps busy.

A trial sets ``torch.set_num_threads(resources.cpus)``.  Whether a second thread pays
depends on the model (a bigger step has more to split), the pack (K members make each
kernel bigger) and on whether the cores are free: torch's OpenMP threads wait for each
other at the end of every parallel kernel, so when another process holds one of the
cores a two-thread step waits for the slower thread, thousands of times a step.

For each shape (``nano`` K=1, ``nano`` K=16, ``micro`` K=1, ``micro`` K=4 on arithmetic)
and each thread count (``--threads 1,2``) this trains one pack with the real trainer for a
few warm-up and timed steps (:func:`study.tune.plan.calibrate`, at the niceness Ray gives
its trials), first on an idle machine and then with ``--load`` busy processes (plain
Python loops at Ray's worker niceness, standing in for the study's other trials;
``--load-niceness 0`` for another user's work, to which a trial yields almost the whole CPU).  It prints the
model-steps per second and, per shape and load, two ratios: two threads over one (what a
trial gains from its second thread) and two threads over two one-thread trials side by
side (what a study gains from giving a trial both cores instead of running two trials).

    python bench/threads.py [--threads 1,2] [--load 2] [--timed 20] [--warmup 3]

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.config import trial_config  # noqa: E402
from study.tune.plan import calibrate, ray_worker_niceness  # noqa: E402

SHAPES = [("nano", 1), ("nano", 16), ("micro", 1), ("micro", 4)]


def busy(stop_at: float, niceness: int) -> None:
    """Keep one core busy until ``stop_at`` (time.time()) at ``niceness``."""
    os.nice(niceness)
    x = 0
    while time.time() < stop_at:
        x += 1


def rates(threads: list[int], warmup: int, timed: int) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for size, K in SHAPES:
        cfg = trial_config({"task": {"family": "arithmetic"}}, {"model.size": size, "pack.size": K})
        label = f"{size} K={K}"
        out[label] = {}
        for t in threads:
            measured = calibrate(cfg, threads=t, device="cpu", warmup=warmup, timed=timed)
            out[label][t] = K / measured.step_s
            print(f"  {label:12s} {t} thread{'s' * (t != 1)}: {out[label][t]:8.1f} model-steps/s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--load", type=int, default=2, help="busy processes for the loaded measurement (0: skip it)")
    parser.add_argument(
        "--load-niceness",
        type=int,
        default=ray_worker_niceness(),
        help="their niceness (default: a Ray worker's, as the study's other trials; 0: another user's work, "
        "which a trial at Ray's niceness yields to almost entirely)",
    )
    parser.add_argument("--skip-idle", action="store_true", help="measure only with the busy processes")
    parser.add_argument("--timed", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"threads bench on {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f}")
    idle: dict[str, dict[int, float]] = {}
    if not args.skip_idle:
        print("idle:")
        idle = rates(threads, args.warmup, args.timed)
    loaded: dict[str, dict[int, float]] = {}
    if args.load > 0:
        print(f"with {args.load} busy process(es) at niceness {args.load_niceness}:")
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(target=busy, args=(time.time() + 3600, args.load_niceness), daemon=True)
            for _ in range(args.load)
        ]
        for worker in workers:
            worker.start()
        try:
            time.sleep(1.0)
            loaded = rates(threads, args.warmup, args.timed)
        finally:
            for worker in workers:
                worker.terminate()
                worker.join()
    summary: dict[str, dict[str, dict[str, float]]] = {}
    lo, hi = min(threads), max(threads)
    print(f"\n{'shape':12s} {'load':>6s} {f'{hi} vs {lo} thr':>12s} {f'{hi} thr vs {hi}x{lo}':>14s}")
    for name, table in (("idle", idle), ("loaded", loaded)):
        for label, by_threads in table.items():
            gain = by_threads[hi] / by_threads[lo]
            side_by_side = by_threads[hi] / (hi // lo * by_threads[lo])
            summary.setdefault(label, {})[name] = {"gain": gain, "vs_side_by_side": side_by_side}
            print(f"{label:12s} {name:>6s} {gain:11.2f}x {side_by_side:13.2f}x")
    print(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "threads": threads,
                "load_processes": args.load,
                "load_niceness": args.load_niceness,
                "idle": idle,
                "loaded": loaded,
                "ratios": summary,
                "load_average_end": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
