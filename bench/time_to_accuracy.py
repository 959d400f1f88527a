"""Benchmark: wall time until the default nano addition trial reaches 99% ID exact match.

Trains the default trial config (nano, 3-digit addition, the 2308.08268 setup) with
``train.stop_when: {metric: id_exact_match, at_least: --target, for_evals: 1}``,
evaluating every ``--eval-every`` steps on ``--eval-examples`` examples per condition
(the crossing check; the default trial evaluates 512), up to ``--max-steps``, two ways in one run:

- one model alone (seed ``--seed``): the wall time, evaluation included, until it
  crosses the target, and the crossing step;
- a pack of ``--pack`` seeds (``--seed``, ``--seed`` + 1, ...): the wall time of the
  whole pack until its last member crosses, divided by the pack size (the cost per
  model), the wall time at which each member crossed, and the median and spread
  (min, quartiles, max) of the crossing steps over the seeds.

A member that never crosses within ``--max-steps`` counts as not crossed (listed); so does
one still running when a run reaches ``--max-minutes`` of wall time (the run stops at
the next evaluation after that).  On one CPU thread a nano step of one model takes
~25 ms, so the crossing (2.5K-6K steps) of one model takes minutes and a pack of 16
about 16 times that (the pack bench's ratio ~1.2-1.4 off); ``--quick`` runs a small version
(2-digit addition, a pack of 4, up to 600 steps, target 0.5) in minutes, to check that it works.
The last line is one JSON object with every figure.

    python bench/time_to_accuracy.py [--quick] [--pack 16] [--target 0.99]
        [--eval-every 250] [--eval-examples 32] [--max-steps 8000] [--max-minutes 0]
        [--seed 0] [--threads 1] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.config import TrialConfig, trial_config  # noqa: E402
from study.train import PackReport, pack_members, train_pack  # noqa: E402


# --quick: 2-digit addition with a small evaluation, which crosses 50% within a few hundred steps
QUICK = {
    "task.digits": 2,
    "task.width": 3,
    "task.eval_max_len": 3,
    "task.eval_examples": 64,
    "task.train_fraction": 0.2,
    "train.lr": 3e-3,
    "model.dropout": 0.0,
}


def config(args: argparse.Namespace, size: int) -> TrialConfig:
    return trial_config(
        overrides={
            **(QUICK if args.quick else {}),
            "pack.size": size,
            "train.seed": args.seed,
            "task.eval_examples": args.eval_examples,
            "train.steps": args.max_steps,
            "train.eval_every": args.eval_every,
            "train.log_every": args.eval_every,
            "train.device": args.device,
            "train.stop_when": {"metric": "id_exact_match", "at_least": args.target, "for_evals": 1},
        }
    )


class OutOfTime(Exception):
    """Raised by the report hook once a run has used its --max-minutes."""


def run(cfg: TrialConfig, max_seconds: float) -> dict[str, Any]:
    """Train the pack of ``cfg``; when each member crossed (seconds since the start, step)."""
    members = pack_members(cfg)
    crossed: dict[int, tuple[float, int]] = {}
    started = time.perf_counter()
    reached = [0]

    def report(pack: PackReport) -> None:
        reached[0] = pack.step
        for member in pack.members:
            if member.status == "converged":
                crossed[int(member.trial_id)] = (time.perf_counter() - started, member.step)
        elapsed = time.perf_counter() - started
        print(f"    step {pack.step}: {len(crossed)}/{len(members)} crossed, {elapsed:.0f} s", flush=True)
        if max_seconds and elapsed > max_seconds and len(crossed) < len(members):
            raise OutOfTime

    try:
        statuses = [r.status for r in train_pack(members, [str(k) for k in range(len(members))], report=report)]
    except OutOfTime:
        statuses = ["converged" if k in crossed else "out_of_time" for k in range(len(members))]
    seconds = time.perf_counter() - started
    steps = [crossed[k][1] for k in sorted(crossed)]
    return {
        "members": len(members),
        "seconds": round(seconds, 2),
        "seconds_per_model": round(seconds / len(members), 2),
        "crossed": len(crossed),
        "not_crossed_seeds": [m.train.seed for k, m in enumerate(members) if k not in crossed],
        "crossing_seconds": [round(crossed[k][0], 2) for k in sorted(crossed)],
        "crossing_steps": steps,
        "statuses": statuses,
        "last_step": reached[0],
    }


def spread(steps: list[int]) -> dict[str, float] | None:
    if not steps:
        return None
    q = statistics.quantiles(steps, n=4, method="inclusive") if len(steps) > 1 else [steps[0]] * 3
    return {"min": min(steps), "q1": q[0], "median": statistics.median(steps), "q3": q[2], "max": max(steps)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a small version: 2-digit addition, pack 4, up to 600 steps, target 0.5"
    )
    parser.add_argument("--pack", type=int, default=16, help="seeds in the pack")
    parser.add_argument("--target", type=float, default=0.99, help="ID exact match to reach")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--max-steps", type=int, default=8000)
    parser.add_argument("--eval-examples", type=int, default=32, help="evaluation examples per condition")
    parser.add_argument("--only", choices=["alone", "pack"], help="run one of the two (default: both)")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="wall-time cap per run (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args(argv)
    if args.quick:
        args.pack, args.max_steps, args.eval_every, args.target = 4, 600, 50, 0.5
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_at_start = round(os.getloadavg()[0], 2)
    print(
        f"nano addition to {args.target:.0%} ID exact match: eval every {args.eval_every}, at most "
        f"{args.max_steps} steps; {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    alone = pack = None
    if args.only != "pack":
        alone = run(config(args, 1), args.max_minutes * 60)
        print(
            f"alone (seed {args.seed}): {alone['seconds']:.1f} s, crossed at steps {alone['crossing_steps']}",
            flush=True,
        )
    if args.only != "alone":
        pack = run(config(args, args.pack), args.max_minutes * 60)
        print(
            f"pack of {args.pack}: {pack['seconds']:.1f} s in all, {pack['seconds_per_model']:.1f} s per model; "
            f"{pack['crossed']}/{args.pack} crossed; crossing steps {pack['crossing_steps']}",
            flush=True,
        )
    steps = spread(pack["crossing_steps"]) if pack else None
    if steps:
        print("crossing step over seeds: " + ", ".join(f"{k} {v:g}" for k, v in steps.items()), flush=True)
    figures = {
        "target": args.target,
        "eval_every": args.eval_every,
        "eval_examples": args.eval_examples,
        "max_minutes": args.max_minutes,
        "max_steps": args.max_steps,
        "threads": torch.get_num_threads(),
        "load_avg_1min_at_start": load_at_start,
        "alone": alone,
        "pack": pack,
        "crossing_step_spread": steps,
        "per_model_speedup": round(alone["seconds"] / pack["seconds_per_model"], 3)
        if alone and pack and alone["crossed"] and pack["crossed"] == args.pack
        else None,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
