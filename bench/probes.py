"""Benchmark: what the structure probes cost, as a share of a trial's time.

Takes the default trial config (``study.config.trial_config`` with ``--set``
overrides: the nano model on 3-digit addition unless told otherwise) and measures, in
one run, on one device and thread count:

1. the training step: ``study.train.train`` for ``--steps`` steps after ``--warmup``
   untimed ones, timed through train's ``progress`` hook (evaluation happens after
   the timed window);
2. one evaluation (``task.evaluate``) and the representations with the probes
   (``task.representations``: linear probes, cluster and equivalence scores, and the
   attention summaries), without the attention summaries (``task.probes.attention=false``)
   and without any probe (``task.probes.enabled=false``: only the units-digit PCA), on
   the model at initialization and on the model after the timed steps; the median of
   ``--repeats`` calls each.

The probe cost of an evaluation is the difference of the representation times with and
without probes; the attention part, that with and without the attention summaries.  A
trial of ``train.steps`` steps evaluates ``train.steps / train.eval_every`` times
(probing at each one, or every ``task.probes.every`` steps), so its time is
steps x step time + evaluations x (evaluation + representations), and the probe share
is the probes' part of that, on the wall clock and on this process's CPU time (which a
shared machine disturbs less).  The larger of each cost (initial, trained) is used.
Target: under 10% at the default settings.  The last line printed is one JSON
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


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``repeats`` calls; CPU time is this process's, which a
    shared machine disturbs less than the wall clock."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def evaluation_costs(cfg: Any, model: torch.nn.Module, device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds (wall and CPU) of one evaluation, and of the representations with and without probes."""

    def variant(**probes: Any):
        return build_task(
            cfg.task.model_copy(update={"probes": cfg.task.probes.model_copy(update=probes)}),
            seed=cfg.train.seed,
            device=device,
        )

    task = build_task(cfg.task, seed=cfg.train.seed, device=device)
    plain = variant(enabled=False)
    has_attention = getattr(cfg.task.probes, "attention", None) is not None
    no_attention = variant(attention=False) if has_attention else None
    model.eval()
    out = {}
    timed = [
        ("evaluate", lambda: task.evaluate(model)),
        ("representations", lambda: task.representations(model)),
        ("representations_without_probes", lambda: plain.representations(model)),
    ]
    if no_attention is not None:
        timed.append(("representations_without_attention", lambda: no_attention.representations(model)))
    with torch.no_grad():
        task.representations(model)  # warm the sklearn imports and caches
        for name, fn in timed:
            out[f"{name}_s"], out[f"{name}_cpu_s"] = median_seconds(fn, repeats)
    for clock in ("s", "cpu_s"):
        out[f"probes_{clock}"] = max(
            out[f"representations_{clock}"] - out[f"representations_without_probes_{clock}"], 0.0
        )
        if no_attention is not None:  # the attention summaries' part of the probes
            out[f"attention_{clock}"] = max(
                out[f"representations_{clock}"] - out[f"representations_without_attention_{clock}"], 0.0
            )
    return {k: round(v, 4) for k, v in out.items()}


def probe_share(
    costs: list[dict[str, float]], step_s: float, steps: int, n_evals: int, n_probed: int, clock: str
) -> tuple[float, float, float]:
    """(trial seconds, probe seconds per trial, probe share) on one clock ("s" or "cpu_s"),
    with the larger of each cost over ``costs`` (the model at initialization and trained)."""
    worst = {
        name: max(c[f"{name}_{clock}"] for c in costs)
        for name in ("evaluate", "representations_without_probes", "probes")
    }
    trial = steps * step_s + n_evals * (worst["evaluate"] + worst["representations_without_probes"])
    probes = n_probed * worst["probes"]
    return trial + probes, probes, probes / (trial + probes)


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
    short = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={"steps": total, "eval_every": total, "log_every": 1, "checkpoint_every": None}
            )
        }
    )
    short = short.model_copy(
        update={
            "task": short.task.model_copy(update={"probes": short.task.probes.model_copy(update={"enabled": False})})
        }
    )
    marks: dict[int, float] = {}
    states: list[dict[str, Any]] = []

    def progress(step: int, losses: dict[str, float]) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks[step] = (time.perf_counter(), time.process_time())

    train(short, progress=progress, report=lambda r: states.append(r.state) if r.state is not None else None)
    step_s = (marks[total][0] - marks[args.warmup][0]) / args.steps
    step_cpu_s = (marks[total][1] - marks[args.warmup][1]) / args.steps
    trained = Transformer(cfg.model, task.io).to(device)
    trained.load_state_dict(states[-1]["model"])
    after = evaluation_costs(cfg, trained, device, args.repeats)
    print(f"after {total} steps: {after}; training step {step_s * 1000:.2f} ms ({step_cpu_s * 1000:.2f} ms CPU)")

    trial_s, probe_s, share = probe_share([at_init, after], step_s, trial_steps, n_evals, n_probed, "s")
    trial_cpu_s, probe_cpu_s, share_cpu = probe_share(
        [at_init, after], step_cpu_s, trial_steps, n_evals, n_probed, "cpu_s"
    )
    print(
        f"trial of {trial_steps} steps, {n_evals} evaluations ({n_probed} probed): ~{trial_s:.1f} s, "
        f"probes {probe_s:.1f} s = {100 * share:.1f}% of the wall time, {100 * share_cpu:.1f}% of the CPU time "
        "(target < 10%)"
    )
    attention = {}
    if "attention_s" in at_init:
        for clock in ("s", "cpu_s"):
            worst = max(c[f"attention_{clock}"] for c in (at_init, after))
            total = trial_s if clock == "s" else trial_cpu_s
            attention[f"attention_{clock}_per_trial"] = round(n_probed * worst, 2)
            attention[f"attention_share_of_trial{'' if clock == 's' else '_cpu'}"] = round(n_probed * worst / total, 4)
        print(
            f"of which the attention summaries: {attention['attention_s_per_trial']:.1f} s = "
            f"{100 * attention['attention_share_of_trial']:.1f}% of the wall time, "
            f"{100 * attention['attention_share_of_trial_cpu']:.1f}% of the CPU time"
        )
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
        "train_step_cpu_s": round(step_cpu_s, 5),
        "at_init": at_init,
        "after_training": after,
        "trial_s_estimate": round(trial_s, 2),
        "probe_s_per_trial": round(probe_s, 2),
        "probe_share_of_trial": round(share, 4),
        "trial_cpu_s_estimate": round(trial_cpu_s, 2),
        "probe_cpu_s_per_trial": round(probe_cpu_s, 2),
        "probe_share_of_trial_cpu": round(share_cpu, 4),
        **attention,
        "probe_layers": getattr(cfg.task.probes, "layers", None),
        "target_share": 0.10,
        "load_avg_1min_at_start": load_start,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
