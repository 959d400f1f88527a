"""Benchmark: a pack of K models against the same K models trained one after another.

Two parts, both measured in one run on one device:

1. Implementations of one pack training step (fixed batch, forward, cross-entropy,
   backward, AdamW; ``nano`` on arithmetic, batch ``--batch-size``, K = ``--impl-k``):
   ``sequential`` (K one-member models, one step each), ``vmap`` (torch.func:
   ``stack_module_state`` + ``functional_call`` + ``vmap`` over one-member models),
   ``batched`` (``study.model``'s per-member weights, members merged into the batch for
   attention) and, with ``--compile``, ``batched`` under ``torch.compile``.  Each as
   examples/s and as a ratio to ``sequential``.
2. The real trainer: ``study.train.train_pack`` with K members against
   ``study.train.train`` of one member (K of them one after another run at that
   member's rate), for K in ``--ks`` on ``nano`` (arithmetic), and ``--ks-small`` on
   ``micro`` (arithmetic) and the in-context ``micro`` (icl).  Everything a trial does
   per step is in it: each member's batch from its own generator, forward, loss,
   backward, clipping, the pack AdamW.  Each pack measurement is next to a fresh solo
   measurement, and the ratio is taken between the two, so slow drifts of a shared
   machine cancel out.  A run is cut off at its last timed step, before the final
   evaluation (which is not part of the comparison and would dominate the bench's time).
3. Evaluation: ``evaluate_pack`` of K ``nano`` members (one batched greedy decode for
   the whole pack) against ``evaluate`` of each member on its own, on the default
   arithmetic evaluation grid with ``--eval-examples`` examples per condition, for K in
   ``--eval-ks``.  The members are untrained (their answers take the most Jacobi passes).

The last line is one JSON object with every figure.

    python bench/pack.py [--ks 1,4,16,32,64] [--ks-small 1,4,8] [--steps 4] [--warmup 2]
        [--batch-size 64] [--threads 1] [--device auto|cpu|cuda] [--compile]
        [--eval-ks 1,4,16] [--eval-examples 64]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.config import TrialConfig, trial_config  # noqa: E402
from study.model import Transformer  # noqa: E402
from study.tasks import build_task  # noqa: E402
from study.train import make_optimizer, pack_members, pick_device, train, train_pack, uses_bf16  # noqa: E402

PRESETS = {  # name -> (task family, model size, evaluation shrunk to one example per condition)
    "nano": ("arithmetic", "nano", {"task.eval_examples": 1}),
    "micro": ("arithmetic", "micro", {"task.eval_examples": 1}),
    "icl_micro": ("icl", "micro", {"task.eval_prompts": 1}),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- part 1: implementations


def time_steps(step, device: torch.device, seconds: float) -> float:
    """Seconds per call of ``step()``: two warmup calls, then as many as fit in ``seconds``."""
    step(), step()
    synchronize(device)
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds or n < 3:
        step()
        n += 1
    synchronize(device)
    return (time.perf_counter() - started) / n


def implementation_steps(K: int, batch_size: int, device: torch.device, bf16: bool, compile_too: bool):
    """name -> a function doing one training step of K nano members on a fixed batch."""
    cfg = trial_config(overrides={"train.seed": 0})
    task = build_task(cfg.task, seed=0, device=device)
    batch = task.train_batch(batch_size, 0, torch.Generator(device=device).manual_seed(0))
    V = task.io.n_out
    tokens, targets = batch.inputs.expand(K, *batch.inputs.shape), batch.targets.expand(K, *batch.targets.shape)
    autocast = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    lr, wd = torch.full((K,), 5e-4, device=device), torch.full((K,), 0.1, device=device)

    def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().reshape(-1, V), target.reshape(-1), reduction="sum") / target[0].numel()

    singles = [Transformer(cfg.model, task.io, seeds=[k]).to(device) for k in range(K)]
    single_opts = [make_optimizer(m, cfg.train) for m in singles]

    def sequential() -> None:
        for model, opt in zip(singles, single_opts):
            for p in model.parameters():
                p.grad = None
            with autocast():
                out = model(batch.inputs)
            cross_entropy(out, batch.targets).backward()
            opt.step(lr[:1], wd[:1])

    base = copy.deepcopy(singles[0]).to("meta")
    params, buffers = stack_module_state(singles)  # each [K, 1, ...]
    vmap_opt = make_optimizer(singles[0], cfg.train)
    vmap_opt.params = list(params.values())
    vmap_opt.exp_avg = [torch.zeros_like(p) for p in vmap_opt.params]
    vmap_opt.exp_avg_sq = [torch.zeros_like(p) for p in vmap_opt.params]

    def one_member(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched_forward = vmap(one_member, randomness="different")

    def vmapped() -> None:
        for p in vmap_opt.params:
            p.grad = None
        with autocast():
            out = batched_forward(params, buffers, tokens)
        cross_entropy(out, targets).backward()
        vmap_opt.step(lr, wd)

    def batched_step(model, opt):
        def step() -> None:
            for p in opt.params:
                p.grad = None
            with autocast():
                out = model(tokens)
            cross_entropy(out, targets).backward()
            opt.step(lr, wd)

        return step

    pack = Transformer(cfg.model, task.io, n_members=K, seeds=list(range(K))).to(device)
    steps = {"sequential": sequential, "vmap": vmapped, "batched": batched_step(pack, make_optimizer(pack, cfg.train))}
    if compile_too:
        compiled = Transformer(cfg.model, task.io, n_members=K, seeds=list(range(K))).to(device)
        steps["batched_compiled"] = batched_step(torch.compile(compiled), make_optimizer(compiled, cfg.train))
    return steps


def measure_implementations(
    K: int, batch_size: int, device: torch.device, bf16: bool, compile_too: bool, seconds: float
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, step in implementation_steps(K, batch_size, device, bf16, compile_too).items():
        try:
            started = time.perf_counter()
            per_step = time_steps(step, device, seconds)
            figures[name] = {
                "examples_per_s": round(K * batch_size / per_step, 1),
                "setup_and_run_s": round(time.perf_counter() - started, 1),
            }
        except Exception as err:  # e.g. no compiler for torch.compile: report it, keep the others
            figures[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        shown = figures[name].get("examples_per_s", figures[name].get("error"))
        print(f"  {name:>17}  K={K}: {shown} ex/s", flush=True)
    reference = figures["sequential"]["examples_per_s"]
    for row in figures.values():
        if "examples_per_s" in row:
            row["ratio_to_sequential"] = round(row["examples_per_s"] / reference, 3)
    return figures


# --------------------------------------------------------------------------- part 2: the trainer


def config_for(preset: str, K: int, args: argparse.Namespace) -> TrialConfig:
    family, size, small_eval = PRESETS[preset]
    total = args.warmup + args.steps
    overrides = {
        **small_eval,
        "model.size": size,
        "pack.size": K,
        "train.device": args.device,
        "train.steps": total,
        "train.eval_every": total,
        "train.log_every": args.warmup,
        "train.batch_size": args.batch_size,
    }
    return trial_config({"task": {"family": family}}, overrides)


class Timed(Exception):
    """Raised by the progress hook after the last timed step: the run ends before its evaluation."""


def examples_per_s(cfg: TrialConfig, warmup: int, device: torch.device) -> float:
    """Examples per second (all members together) over the steps after ``warmup``."""
    marks: dict[int, float] = {}

    def progress(step: int, losses: dict[str, float]) -> None:
        synchronize(device)
        marks[step] = time.perf_counter()
        if step == cfg.train.steps:
            raise Timed

    members = pack_members(cfg)
    try:
        if len(members) == 1:
            train(members[0], trial_id="bench", progress=progress)
        else:
            train_pack(members, progress=progress)
    except Timed:
        pass
    timed = cfg.train.steps - warmup  # steps between the two marks
    return len(members) * timed * cfg.train.batch_size / (marks[cfg.train.steps] - marks[warmup])


def measure_trainer(preset: str, ks: list[int], args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for K in ks:
        solo_args = argparse.Namespace(**{**vars(args), "steps": max(args.steps, args.solo_steps)})
        sequential = examples_per_s(config_for(preset, 1, solo_args), args.warmup, device)
        packed = examples_per_s(config_for(preset, K, args), args.warmup, device)
        row = {
            "preset": preset,
            "K": K,
            "pack_examples_per_s": round(packed, 1),
            "sequential_examples_per_s": round(sequential, 1),
            "ratio": round(packed / sequential, 3),
        }
        rows.append(row)
        print(
            f"  {preset:>9} K={K:<3} pack {packed:>10,.0f} ex/s   one after another {sequential:>10,.0f} ex/s"
            f"   ratio {row['ratio']:.2f}",
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------- part 3: evaluation


def measure_evaluation(ks: list[int], examples: int, device: torch.device, bf16: bool) -> list[dict[str, Any]]:
    """Seconds of one evaluation of K nano members: batched over the pack vs one member at a time."""
    rows = []
    for K in ks:
        cfg = trial_config(overrides={"task.eval_examples": examples, "train.device": str(device)})
        tasks = [build_task(cfg.task, seed=k, device=device) for k in range(K)]
        model = Transformer(cfg.model, tasks[0].io, n_members=K, seeds=list(range(K))).to(device).eval()
        autocast = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731

        def timed(evaluate) -> float:
            with torch.no_grad(), autocast():
                synchronize(device)
                started = time.perf_counter()
                evaluate()
                synchronize(device)
            return time.perf_counter() - started

        one_by_one = timed(lambda: [task.evaluate(model.member(k)) for k, task in enumerate(tasks)])
        packed = timed(lambda: type(tasks[0]).evaluate_pack(tasks, model))
        row = {
            "K": K,
            "examples_per_member": examples * len(tasks[0].conditions),
            "pack_s": round(packed, 3),
            "one_by_one_s": round(one_by_one, 3),
            "ratio": round(one_by_one / packed, 3),
        }
        rows.append(row)
        print(
            f"  evaluation K={K:<3} pack {packed:7.2f} s   one by one {one_by_one:7.2f} s   ratio {row['ratio']:.2f}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="1,4,16,32,64", help="pack sizes for nano")
    parser.add_argument("--ks-small", default="1,4,8", help="pack sizes for micro and the in-context micro")
    parser.add_argument("--presets", default="nano,micro,icl_micro", help=f"comma list of {', '.join(PRESETS)}")
    parser.add_argument("--steps", type=int, default=4, help="timed steps of a pack")
    parser.add_argument("--solo-steps", type=int, default=12, help="timed steps of the one-member reference")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="per member")
    parser.add_argument("--impl-k", type=int, default=16, help="K for part 1 (0 skips part 1)")
    parser.add_argument("--impl-seconds", type=float, default=2.0, help="timed seconds per implementation")
    parser.add_argument("--compile", action="store_true", help="also time the batched model under torch.compile")
    parser.add_argument("--eval-ks", default="1,4,16", help="pack sizes for the evaluation part (empty: skip)")
    parser.add_argument("--eval-examples", type=int, default=64, help="evaluation examples per condition")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    presets = [p for p in args.presets.split(",") if p]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    bf16 = uses_bf16(trial_config(overrides={"train.device": args.device}).train, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"device {device} ({where}), {'bf16' if bf16 else 'fp32'}; torch {torch.__version__}; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    started = time.perf_counter()

    implementations: dict[str, Any] = {}
    if args.impl_k > 0:
        print(f"1. one training step of {args.impl_k} nano members, batch {args.batch_size} each", flush=True)
        implementations = measure_implementations(
            args.impl_k, args.batch_size, device, bf16, args.compile, args.impl_seconds
        )
    print("2. the trainer: train_pack of K members vs train of one member (K one after another)", flush=True)
    trainer: list[dict[str, Any]] = []
    for preset in presets:
        ks = [int(k) for k in (args.ks if preset == "nano" else args.ks_small).split(",") if k]
        trainer += measure_trainer(preset, ks, args, device)

    evaluation: list[dict[str, Any]] = []
    eval_ks = [int(k) for k in args.eval_ks.split(",") if k]
    if eval_ks:
        print(
            f"3. evaluation of K nano members ({args.eval_examples} examples per condition): "
            "evaluate_pack vs evaluate one member at a time",
            flush=True,
        )
        evaluation = measure_evaluation(eval_ks, args.eval_examples, device, bf16)

    timed = {name: row["examples_per_s"] for name, row in implementations.items() if "examples_per_s" in row}
    figures = {
        "device": str(device),
        "device_name": where,
        "dtype": "bf16" if bf16 else "fp32",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "implementations_k": args.impl_k,
        "implementations": implementations,
        "fastest_implementation": max(timed, key=timed.get) if timed else None,
        "trainer": trainer,
        "evaluation": evaluation,
        "seconds": round(time.perf_counter() - started, 1),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
