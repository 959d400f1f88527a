"""Benchmark: the explicit attention path's softmax, written out (``study.model.RowSoftmax``)
against torch's ``Tensor.softmax``, in one run on one device.

Two figures per pack size K: (1) forward + backward of the softmax alone on the default
trial's attention scores (``nano``: [K * 64, 4 heads, T, T], causally masked); (2) one whole
training step of the default trial (``nano``, dropout 0.1, which takes the explicit path),
once with each softmax, alternating so a shared machine's drift cancels.  Ratios > 1: the
written-out one is faster.  The last line is one JSON object with every figure.

    python bench/attention_softmax.py [--ks 1,16] [--threads 1] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import study.model as model_module  # noqa: E402
from study.config import trial_config  # noqa: E402
from study.model import RowSoftmax, Transformer  # noqa: E402
from study.tasks import build_task  # noqa: E402
from study.train import make_optimizer  # noqa: E402


def seconds_per_call(call, seconds: float) -> float:
    call(), call()
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds or n < 3:
        call()
        n += 1
    return (time.perf_counter() - started) / n


def softmax_alone(K: int, T: int, seconds: float) -> dict[str, float]:
    mask = torch.full((T, T), float("-inf")).triu(1)
    scores = (torch.randn(K * 64, 4, T, T) + mask).requires_grad_()
    grad = torch.randn_like(scores)
    timed = {}
    for name, softmax in (("torch", lambda x: x.softmax(-1)), ("written_out", RowSoftmax.apply)):
        timed[name] = seconds_per_call(lambda: torch.autograd.grad(softmax(scores), scores, grad), seconds)
    return {
        "torch_ms": 1e3 * timed["torch"],
        "written_out_ms": 1e3 * timed["written_out"],
        "ratio": timed["torch"] / timed["written_out"],
    }


def training_step(K: int, seconds: float) -> dict[str, float]:
    cfg = trial_config(overrides={"train.seed": 0})
    task = build_task(cfg.task, seed=0, device=torch.device("cpu"))
    batch = task.train_batch(cfg.train.batch_size, 0, torch.Generator().manual_seed(0))
    tokens = batch.inputs.expand(K, *batch.inputs.shape)
    targets = batch.targets.expand(K, *batch.targets.shape)
    model = Transformer(cfg.model, task.io, n_members=K, seeds=list(range(K)))
    optimizer = make_optimizer(model, cfg.train)
    lr, wd = torch.full((K,), cfg.train.lr), torch.full((K,), cfg.train.weight_decay)

    def step() -> None:
        for p in optimizer.params:
            p.grad = None
        logits = model(tokens)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
        optimizer.step(lr, wd)

    written_out = model_module.attention_softmax
    timed = {"torch": 0.0, "written_out": 0.0}
    for _ in range(3):  # alternate, so drift on a shared machine cancels
        model_module.attention_softmax = lambda x: x.softmax(-1)
        timed["torch"] += seconds_per_call(step, seconds / 3)
        model_module.attention_softmax = written_out
        timed["written_out"] += seconds_per_call(step, seconds / 3)
    return {
        "torch_ms": 1e3 * timed["torch"] / 3,
        "written_out_ms": 1e3 * timed["written_out"] / 3,
        "ratio": timed["torch"] / timed["written_out"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,16", help="pack sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per figure and softmax")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    T = trial_config().task.digits * 3 + 6  # about the default trial's sequence length
    figures = {"threads": args.threads, "torch": torch.__version__, "load_avg_1min": os.getloadavg()[0], "packs": []}
    print(f"cpu, {args.threads} thread(s), torch {torch.__version__}, load average {figures['load_avg_1min']:.2f}")
    for K in [int(k) for k in args.ks.split(",")]:
        alone, step = softmax_alone(K, T, args.seconds), training_step(K, args.seconds)
        figures["packs"].append({"K": K, "softmax": alone, "training_step": step})
        print(
            f"K={K:<3} softmax fwd+bwd  torch {alone['torch_ms']:7.2f} ms  written out {alone['written_out_ms']:7.2f} ms"
            f"  ratio {alone['ratio']:.2f}"
        )
        print(
            f"      training step    torch {step['torch_ms']:7.2f} ms  written out {step['written_out_ms']:7.2f} ms"
            f"  ratio {step['ratio']:.2f}"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
