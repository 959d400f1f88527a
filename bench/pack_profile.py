"""Profile of one pack training step: where a pack of K spends its time, per model.

``bench/pack.py`` measured the in-context ``micro`` pack of 8 at well under 1x the per-model
rate of one model alone while K = 4 was about 1x.  This splits one step of the real trainer's
loop (the same pieces :func:`study.train.train_pack` calls, in the same order) into its phases
(batches, forward, loss, backward, clip, optimizer) and, with ``torch.profiler``, into the
operators that take the most time, each as milliseconds per step per model, for every K in
``--ks``, next to the pack's activation working set (bytes of one layer's largest
activation, the MLP hidden state) against this CPU's L2 and L3 caches.  A phase or an
operator whose time per model grows with K is where a pack stops paying.

    python bench/pack_profile.py [--preset icl_micro|micro|nano] [--ks 1,4,8] [--steps 6]
        [--warmup 3] [--threads 1] [--top 8]

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.config import trial_config  # noqa: E402
from study.model import Transformer  # noqa: E402
from study.tasks import build_task  # noqa: E402
from study.train import clip_and_mask, make_optimizer, member_losses, pack_members, stack_inputs, stack_positions  # noqa: E402

PRESETS = {"nano": ("arithmetic", "nano"), "micro": ("arithmetic", "micro"), "icl_micro": ("icl", "micro")}
PHASES = ("batches", "forward", "loss", "backward", "clip", "optimizer")


def cache_sizes() -> dict[str, str]:
    """L2 and L3 as lscpu prints them (empty where it cannot tell)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    return {
        line.split(":")[0].strip().split()[0]: line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.strip().startswith(("L2 cache", "L3 cache"))
    }


def build(preset: str, K: int):
    family, size = PRESETS[preset]
    cfg = trial_config({"task": {"family": family}}, {"model.size": size, "pack.size": K, "train.device": "cpu"})
    members = pack_members(cfg)
    tasks = [build_task(m.task, seed=m.train.seed, device=torch.device("cpu")) for m in members]
    model = Transformer(members[0].model, tasks[0].io, n_members=K, seeds=[m.train.seed for m in members])
    generators = [torch.Generator().manual_seed(m.train.seed) for m in members]
    return members, tasks, model, make_optimizer(model, members[0].train), generators


def one_step(members, tasks, model, optimizer, generators, step: int, clock: dict[str, float] | None) -> torch.Tensor:
    """One training step as the trainer takes it; ``clock`` gathers seconds per phase."""
    tc, K = members[0].train, len(members)
    marks = [time.perf_counter()]

    def mark() -> None:
        marks.append(time.perf_counter())

    batches = [task.train_batch(tc.batch_size, step, g) for task, g in zip(tasks, generators)]
    mark()
    output = model(stack_inputs(batches), positions=stack_positions(batches))
    mark()
    losses = member_losses(tasks, output, batches)
    mark()
    for p in model.parameters():
        p.grad = None
    losses.sum().backward()
    mark()
    active = torch.ones(K, dtype=torch.bool)
    clip_and_mask(list(model.parameters()), active, tc.grad_clip)
    mark()
    optimizer.step(torch.full((K,), tc.lr), torch.full((K,), tc.weight_decay))
    mark()
    if clock is not None:
        for name, a, b in zip(PHASES, marks, marks[1:]):
            clock[name] += b - a
    return output


def measure(preset: str, K: int, steps: int, warmup: int, top: int) -> dict:
    members, tasks, model, optimizer, generators = build(preset, K)
    model.train()
    for step in range(warmup):
        one_step(members, tasks, model, optimizer, generators, step, None)
    clock: dict[str, float] = defaultdict(float)
    for step in range(warmup, warmup + steps):
        output = one_step(members, tasks, model, optimizer, generators, step, clock)
    ops: dict[str, float] = defaultdict(float)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for step in range(warmup + steps, warmup + 2 * steps):
            one_step(members, tasks, model, optimizer, generators, step, None)
    for event in prof.key_averages():
        ops[event.key] += event.self_cpu_time_total / 1e3  # ms
    per_model = 1e3 / (steps * K)
    mc = members[0].model
    T = output.shape[2]
    hidden_bytes = K * members[0].train.batch_size * T * 4 * mc.shape[2] * 4  # the MLP's hidden state, fp32
    return {
        "K": K,
        "step_ms": sum(clock.values()) * 1e3 / steps,
        "per_model_ms": sum(clock.values()) * per_model,
        "phases_ms_per_model": {name: clock[name] * per_model for name in PHASES},
        "ops_ms_per_model": {
            name: ms / (steps * K) for name, ms in sorted(ops.items(), key=lambda item: -item[1])[: max(top, 1) * 3]
        },
        "tokens": T,
        "mlp_hidden_mib": hidden_bytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="icl_micro", choices=sorted(PRESETS))
    parser.add_argument("--ks", default="1,4,8")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    caches = cache_sizes()
    print(
        f"pack step profile: {args.preset}, K in {ks}, {args.steps} timed + {args.steps} profiled steps after "
        f"{args.warmup} warm-up, {args.threads} thread(s); caches {caches or 'unknown'}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    results = [measure(args.preset, K, args.steps, args.warmup, args.top) for K in ks]
    base = results[0]
    print(f"\n{'phase (ms per step per model)':32s}" + "".join(f"{'K=' + str(r['K']):>10s}" for r in results))
    for name in PHASES:
        print(f"{name:32s}" + "".join(f"{r['phases_ms_per_model'][name]:10.2f}" for r in results))
    print(f"{'all':32s}" + "".join(f"{r['per_model_ms']:10.2f}" for r in results))
    print(
        f"{'rate per model vs K=' + str(base['K']):32s}"
        + "".join(f"{base['per_model_ms'] / r['per_model_ms']:9.2f}x" for r in results)
    )
    print(f"{'MLP hidden state (MiB)':32s}" + "".join(f"{r['mlp_hidden_mib']:10.1f}" for r in results))
    names = sorted(
        {name for r in results for name in list(r["ops_ms_per_model"])[: args.top]},
        key=lambda name: -results[-1]["ops_ms_per_model"].get(name, 0.0),
    )
    print(f"\n{'operator (ms per step per model)':32s}" + "".join(f"{'K=' + str(r['K']):>10s}" for r in results))
    for name in names:
        print(f"{name[:32]:32s}" + "".join(f"{r['ops_ms_per_model'].get(name, 0.0):10.2f}" for r in results))
    print(json.dumps({"preset": args.preset, "threads": args.threads, "caches": caches, "results": results}))


if __name__ == "__main__":
    main()
