"""Benchmark: training throughput of the real training step, per model preset.

For each model preset in ``--sizes`` (on the arithmetic task by default, or the
in-context regression task with ``--task icl``), runs ``study.train.train`` itself --
batch sampling, forward (bf16 autocast on CUDA), loss, backward, gradient clipping
and the AdamW step, exactly as a trial runs them -- for ``--warmup`` + ``--steps``
steps and times the last ``--steps`` through train's ``progress`` hook (the device
is synchronised at each mark).  The trial config is ``study.config.trial_config``'s
default for the task with ``--set`` overrides; evaluation runs only once, after
the timed window, on a shrunken evaluation set (``task.eval_examples=1`` /
``task.eval_prompts=1``, untimed; ``--set`` can change that too).

Reports examples/s, tokens/s (positions per sequence x examples/s), achieved FLOP/s
from ``Transformer.flops_per_example(seq_len)`` (checked against
``torch.utils.flop_counter`` on one step; that counter does not see the fused CPU
attention kernel that runs when dropout is 0, so there it comes out lower by the
attention's share), and the ratio of that rate to the dense
matmul rate of the same device and dtype measured in the same run (a square matmul,
fp32 2048 on CPU, bf16 8192 on CUDA; timed before and after the training runs, the
faster of the two is the reference).  ``--threads`` (default 1, as a trial with
``resources.cpus=1`` runs) applies to both the training and the matmul.  The last
line printed is one JSON object with every figure.

Packs: for each K in ``--packs`` other than 1, the same preset also runs as a pack of K
members (``study.train.train_pack``, ``--pack-steps`` timed steps); its examples/s count
every member's examples, and its FLOP/s share says how much better a pack uses the device.

    python bench/train_step.py [--sizes nano,micro,mini] [--task arithmetic|icl]
        [--steps 20] [--warmup 3] [--batch-size 64] [--device auto|cpu|cuda]
        [--threads 1] [--matmul-size N] [--packs 1,16] [--pack-steps 5] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.config import MODEL_PRESETS, TrialConfig, parse_value, trial_config  # noqa: E402
from study.model import Transformer  # noqa: E402
from study.tasks import build_task  # noqa: E402
from study.train import pack_members, pick_device, train, train_pack, uses_bf16  # noqa: E402

# Evaluation is not timed, but it runs once at the end of every train() call: keep it small.
SMALL_EVAL: dict[str, dict[str, Any]] = {
    "arithmetic": {"task.eval_examples": 1},
    "icl": {"task.eval_prompts": 1},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, bf16: bool):
    """The autocast context train() uses around the forward pass."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def matmul_flops_per_s(device: torch.device, bf16: bool, n: int, min_seconds: float = 1.0) -> float:
    """Best FLOP/s of an n x n @ n x n matmul over a few timed rounds (after warmup)."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with autocast(device, bf16):
        for _ in range(3):
            a @ b
        synchronize(device)
        # matmuls per round so that a round lasts about min_seconds / 5
        started = time.perf_counter()
        a @ b
        synchronize(device)
        one = max(time.perf_counter() - started, 1e-6)
        per_round = max(1, int(min_seconds / 5 / one))
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(per_round):
                a @ b
            synchronize(device)
            best = min(best, (time.perf_counter() - started) / per_round)
    return 2.0 * n**3 / best


def probe(cfg: TrialConfig, device: torch.device, bf16: bool) -> dict[str, Any]:
    """Sequence length, parameter count and FLOPs per training example (the model's
    formula, and what torch's flop counter counts in one forward + backward)."""
    task = build_task(cfg.task, seed=cfg.train.seed, device=device)
    model = Transformer(cfg.model, task.io).to(device)
    batch_size = 4
    batch = task.train_batch(batch_size, 0, torch.Generator(device=device).manual_seed(cfg.train.seed))
    seq_len = int(batch.inputs.shape[1])
    with FlopCounterMode(display=False) as counter:
        with autocast(device, bf16):
            output = model(batch.inputs)
        task.loss(output.float(), batch).backward()
    return {
        "seq_len": seq_len,
        "n_params": model.n_params(),
        "flops_per_example": model.flops_per_example(seq_len),
        "flops_per_example_counted": counter.get_total_flops() / batch_size,
    }


def time_training(cfg: TrialConfig, warmup: int, device: torch.device) -> tuple[float, str]:
    """Seconds for the steps after ``warmup`` of ``train(cfg)``, and the run's status."""
    marks: dict[int, float] = {}

    def progress(step: int, losses: dict[str, float]) -> None:
        synchronize(device)
        marks[step] = time.perf_counter()

    if cfg.pack.size == 1:
        result = train(cfg, trial_id="bench", progress=progress)
    else:
        result = train_pack(pack_members(cfg), progress=progress)[0]
    if result.status != "completed":
        return float("nan"), result.status
    return marks[cfg.train.steps] - marks[warmup], result.status


def config_for(args: argparse.Namespace, size: str, pack: int = 1) -> TrialConfig:
    total = args.warmup + (args.steps if pack == 1 else args.pack_steps)
    overrides: dict[str, Any] = dict(SMALL_EVAL[args.task])
    overrides.update(_parse_sets(args.set))
    overrides.update(
        {
            "model.size": size,
            "train.device": args.device,
            "train.steps": total,
            "train.eval_every": total,  # evaluate once, after the timed window
            "train.log_every": args.warmup,  # progress marks at the end of warmup and at the end
            "pack.size": pack,
        }
    )
    if args.batch_size is not None:
        overrides["train.batch_size"] = args.batch_size
    return trial_config({"task": {"family": args.task}}, overrides)


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    """``["model.dropout=0", ...]`` -> ``{"model.dropout": 0, ...}`` (values read as YAML)."""
    parsed: dict[str, Any] = {}
    for text in sets:
        if "=" not in text:
            raise SystemExit(f"--set {text!r}: expected dotted.key=value, e.g. --set model.dropout=0")
        key, value = text.split("=", 1)
        parsed[key.strip()] = parse_value(value)
    return parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="nano,micro,mini", help=f"comma list of {', '.join(MODEL_PRESETS)}")
    parser.add_argument("--task", choices=["arithmetic", "icl"], default="arithmetic")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them (>= 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's train.batch_size")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; a trial runs with resources.cpus of them (default 1); 0: torch's default",
    )
    parser.add_argument("--matmul-size", type=int, default=None, help="default 2048 on CPU, 8192 on CUDA")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="trial config override, e.g. --set model.pos_encoding=rope",
    )
    parser.add_argument("--packs", default="1,16", help="pack sizes K per preset (1: a single model)")
    parser.add_argument("--pack-steps", type=int, default=5, help="timed steps of a pack (K > 1)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in MODEL_PRESETS]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(MODEL_PRESETS)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    first = config_for(args, sizes[0])
    device = pick_device(first.train.device)
    bf16 = uses_bf16(first.train, device)
    dtype = "bf16" if bf16 else "fp32"
    n = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({where}), {dtype}; task {args.task}; torch {torch.__version__}")

    matmul_before = matmul_flops_per_s(device, bf16, n)
    print(f"matmul {n}x{n} {dtype}: {matmul_before / 1e9:.1f} GFLOP/s (before)")

    packs = [int(k) for k in args.packs.split(",") if k.strip()]
    results: list[dict[str, Any]] = []
    for size, pack in ((s, k) for s in sizes for k in packs):
        cfg = config_for(args, size, pack)
        probed = probe(cfg, device, bf16)
        seq_len, formula = probed["seq_len"], probed["flops_per_example"]
        counted = probed["flops_per_example_counted"]
        seconds, status = time_training(cfg, args.warmup, device)
        batch_size = cfg.train.batch_size
        timed_steps = cfg.train.steps - args.warmup
        examples_per_s = pack * timed_steps * batch_size / seconds
        row = {
            "size": size,
            "pack": pack,
            "shape": list(cfg.model.shape),
            "n_params": probed["n_params"],
            "seq_len": seq_len,
            "batch_size": batch_size,
            "steps": timed_steps,
            "status": status,
            "seconds": round(seconds, 4),
            "ms_per_step": round(1000 * seconds / timed_steps, 2),
            "examples_per_s": round(examples_per_s, 1),
            "tokens_per_s": round(examples_per_s * seq_len, 1),
            "flops_per_example": formula,
            "flops_per_example_counted": counted,
            "flops_per_s": examples_per_s * formula,
        }
        results.append(row)
        print(
            f"{size:>8} K={pack:<3}{row['n_params']:>10,} params  T={seq_len:<3} B={batch_size:<4} "
            f"{row['ms_per_step']:>8.1f} ms/step  {row['examples_per_s']:>10,.0f} ex/s  "
            f"{row['tokens_per_s']:>12,.0f} tok/s  {row['flops_per_s'] / 1e9:>8.2f} GFLOP/s  "
            f"(formula/counted FLOPs {formula / counted:.4f}){'' if status == 'completed' else '  ' + status}"
        )

    matmul_after = matmul_flops_per_s(device, bf16, n)
    matmul = max(matmul_before, matmul_after)
    print(f"matmul {n}x{n} {dtype}: {matmul_after / 1e9:.1f} GFLOP/s (after); reference {matmul / 1e9:.1f} GFLOP/s")
    for row in results:
        row["ratio_to_matmul"] = round(row["flops_per_s"] / matmul, 4)
        print(f"{row['size']:>8} K={row['pack']:<3} achieved / matmul FLOP/s = {row['ratio_to_matmul']:.3f}")

    figures = {
        "device": str(device),
        "device_name": where,
        "dtype": dtype,
        "task": args.task,
        "threads": torch.get_num_threads(),
        "matmul_size": n,
        "matmul_flops_per_s_before": matmul_before,
        "matmul_flops_per_s_after": matmul_after,
        "matmul_flops_per_s": matmul,
        "sets": args.set,
        "results": results,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
