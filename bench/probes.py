"""Benchmark: what the structure probes cost, as a share of a trial's time.

Takes the default trial config (``study.config.trial_config`` with ``--set``
overrides: the nano model on 3-digit addition unless told otherwise) and measures, in
one run, on one device and thread count:

1. the training step: ``study.train.train`` for ``--steps`` steps after ``--warmup``
   untimed ones, timed through train's ``progress`` hook (evaluation happens after
   the timed window);
2. one evaluation (``task.evaluate``) and the representations with the probes
   (``task.representations``) and without them (the same task with
   ``task.probes.enabled=false``: only the units-digit PCA), on the model at
   initialization and on the model after the timed steps; the median of
   ``--repeats`` calls each.

The probe cost of an evaluation is the difference of the two representation times.  A
trial of ``train.steps`` steps evaluates ``train.steps / train.eval_every`` times
(probing at each one, or every ``task.probes.every`` steps), so its time is
steps x step time + evaluations x (evaluation + representations), and the probe share
is the probes' part of that.  The larger of the two probe costs (initial, trained) is
used.  Target: under 10% at the default settings.  The last line printed is one JSON
object with every figure.

    python bench/probes.py [--steps 100] [--warmup 10] [--repeats 3] [--threads 1]
        [--set key=value ...]
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

from study.config import trial_config  # noqa: E402
from study.model import Transformer  # noqa: E402
from study.tasks import build_task  # noqa: E402
from study.train import pick_device, train  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluation_costs(cfg: Any, model: torch.nn.Module, device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds of one evaluation, and of the representations with and without probes."""
    task = build_task(cfg.task, seed=cfg.train.seed, device=device)
    plain = build_task(cfg.task.model_copy(update={"probes": cfg.task.probes.model_copy(update={"enabled": False})}),
                       seed=cfg.train.seed, device=device)
    model.eval()
    with torch.no_grad():
        task.representations(model)  # warm the sklearn imports and caches
        out = {
            "evaluate_s": median_seconds(lambda: task.evaluate(model), repeats),
            "representations_s": median_seconds(lambda: task.representations(model), repeats),
            "representations_without_probes_s": median_seconds(lambda: plain.representations(model), repeats),
        }
    out["probes_s"] = max(out["representations_s"] - out["representations_without_probes_s"], 0.0)
    return {k: round(v, 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed training steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="calls per evaluation timing (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (0: leave the defaults)")
    parser.add_argument("--set", action="append", default=[], help="trial config override key=value")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)  # sklearn's BLAS, as a 1-CPU trial has it
    load_start = round(os.getloadavg()[0], 2)

    cfg = trial_config(overrides=args.set)
    device = pick_device(cfg.train.device)
    trial_steps, eval_every = cfg.train.steps, cfg.train.eval_every
    every = cfg.task.probes.every if getattr(cfg.task, "probes", None) is not None else None
    n_evals = -(-trial_steps // eval_every)
    n_probed = n_evals if every is None else sum(1 for k in range(1, n_evals + 1) if (k * eval_every) % every == 0)

    torch.manual_seed(cfg.train.seed)
    task = build_task(cfg.task, seed=cfg.train.seed, device=device)
    initial = Transformer(cfg.model, task.io).to(device)
    at_init = evaluation_costs(cfg, initial, device, args.repeats)
    print(f"at initialization: {at_init}")

    total = args.warmup + args.steps
    short = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "steps": total, "eval_every": total, "log_every": 1, "checkpoint_every": None})})
    short = short.model_copy(update={"task": short.task.model_copy(update={
        "probes": short.task.probes.model_copy(update={"enabled": False})})})
    marks: dict[int, float] = {}
    states: list[dict[str, Any]] = []

    def progress(step: int, loss: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks[step] = time.perf_counter()

    train(short, progress=progress, report=lambda r: states.append(r.state) if r.state is not None else None)
    step_s = (marks[total] - marks[args.warmup]) / args.steps
    trained = Transformer(cfg.model, task.io).to(device)
    trained.load_state_dict(states[-1]["model"])
    after = evaluation_costs(cfg, trained, device, args.repeats)
    print(f"after {total} steps: {after}; training step {step_s * 1000:.2f} ms")

    probes_s = max(at_init["probes_s"], after["probes_s"])
    evaluation_s = max(at_init["evaluate_s"], after["evaluate_s"])
    plain_s = max(at_init["representations_without_probes_s"], after["representations_without_probes_s"])
    trial_s = trial_steps * step_s + n_evals * (evaluation_s + plain_s) + n_probed * probes_s
    share = n_probed * probes_s / trial_s
    print(f"trial of {trial_steps} steps, {n_evals} evaluations ({n_probed} probed): ~{trial_s:.1f} s, "
          f"probes {n_probed * probes_s:.1f} s = {100 * share:.1f}% (target < 10%)")
    figures = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "sets": args.set,
        "trial_steps": trial_steps,
        "eval_every": eval_every,
        "probe_every": every,
        "evaluations": n_evals,
        "probed_evaluations": n_probed,
        "probe_points": cfg.task.probes.points if hasattr(cfg.task.probes, "points") else None,
        "train_step_s": round(step_s, 5),
        "at_init": at_init,
        "after_training": after,
        "trial_s_estimate": round(trial_s, 2),
        "probe_s_per_trial": round(n_probed * probes_s, 2),
        "probe_share_of_trial": round(share, 4),
        "target_share": 0.10,
        "load_avg_1min_at_start": load_start,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
