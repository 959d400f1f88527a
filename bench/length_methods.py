"""Calibration of the position schemes on CPU: addition trained up to n digits, exact
match at longer lengths, per scheme and format, at a fixed step budget.

    PYTHONPATH=. python bench/length_methods.py --steps 3000 --eval-every 1500 --schemes learned coupled
    PYTHONPATH=. python bench/length_methods.py --steps 3000 --sampling lengths --schemes coupled coupled_alibi
    PYTHONPATH=. python bench/length_methods.py --quick

Defaults: unpadded operands with '+' and '=' (the format position coupling was published
with), 1 layer, 4 heads, d_model 128, max_position 16 (a wider id range slows coupled and
Abacus learning).  Measured figures: tests/test_length_generalization.py.

Prints one line per evaluation (scheme, format, step, seconds, exact match per length)
and ends with ONE JSON line: {"<scheme>/<format>": {"<step>": {"<len>": em, ...}}}.
Other work may share the CPU; the seconds are wall time as measured.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from study.config import trial_config
from study.train import train

FORMATS = {
    "padded": {"pad": True, "width": 12, "symbols": True},  # coupling gives '=' its id
    "unpadded": {"pad": False, "width": 12, "symbols": True},
    # unpadded evaluation; each training operand written with leading zeros up to a random width <= 12
    "zeropad": {"pad": False, "width": 12, "symbols": True, "random_zero_pad": True},
}


def run(
    scheme: str,
    fmt: str,
    steps: int,
    digits: int,
    lengths: list[int],
    seed: int,
    eval_every: int,
    n_layer: int,
    d_model: int,
    max_position: int = 16,
    sampling: str = "below",
    n_head: int = 4,
) -> dict[str, dict[str, float]]:
    cfg = trial_config(
        {
            "task": {
                "op": "add",
                "digits": digits,
                "sampling": sampling,
                "train_set": "fresh",
                "reverse": True,
                "eval_lengths": lengths,
                "eval_grid": "diagonal",
                "eval_examples": 200,
                **FORMATS[fmt],
                "width": max(FORMATS[fmt]["width"], max(lengths)),
            },
            "model": {
                "n_layer": n_layer,
                "n_head": n_head,
                "d_model": d_model,
                "dropout": 0.0,
                "pos_encoding": scheme,
                "max_position": max_position,
            },
            "train": {
                "steps": steps,
                "batch_size": 64,
                "lr": 1e-3,
                "warmup_steps": 200,
                "schedule": "cosine",
                "eval_every": eval_every,
                "log_every": eval_every,
                "seed": seed,
                "device": "cpu",
            },
        }
    )
    curve: dict[str, dict[str, float]] = {}
    start = time.perf_counter()

    def report(r) -> None:
        em = {
            str(row["len_a"]): round(row["value"], 3)
            for row in r.rows.get("evals", [])
            if row["metric"] == "exact_match"
        }
        if em:
            curve[str(r.step)] = em
            print(
                f"{scheme}/{fmt} step {r.step} {time.perf_counter() - start:.0f}s loss {r.metrics.get('loss', float('nan')):.3f} {em}",
                flush=True,
            )

    train(cfg, report=report)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schemes", nargs="+", default=["learned", "coupled", "abacus", "coupled_alibi"])
    parser.add_argument("--formats", nargs="+", default=["unpadded"])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--digits", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=[5, 6, 8, 10])
    parser.add_argument("--n-layer", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-position", type=int, default=16, help="coupled/abacus/randomized id range")
    parser.add_argument("--sampling", default="below", choices=["below", "D", "ab", "lengths"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="300 steps, to check that it runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.eval_every = 300, 300
    figures = {}
    for scheme in args.schemes:
        for fmt in args.formats:
            figures[f"{scheme}/{fmt}"] = run(
                scheme,
                fmt,
                args.steps,
                args.digits,
                args.lengths,
                args.seed,
                args.eval_every,
                args.n_layer,
                args.d_model,
                args.max_position,
                args.sampling,
                args.n_head,
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
