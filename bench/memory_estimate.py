"""How close the trial memory estimate (study/memory.py) is to a trial's real peak.

For each config, a fresh process imports torch, records its resident memory, runs
``train`` for two steps and one evaluation on the CPU, and reports the high-water mark
of its resident memory (Linux ``VmHWM``) above that starting point.  Printed: the
estimate, the measured peak growth and their ratio (>= 1: the estimate bounds the
trial).  Ends with one JSON line.  Other work may share the CPU; memory does not care.

    python bench/memory_estimate.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHORT = ["train.steps=2", "train.eval_every=2", "train.log_every=1", "train.device=cpu"]
CONFIGS = {
    "nano defaults": [],
    "eval_examples 4096": ["task.eval_examples=4096"],
    "batch 2048": ["train.batch_size=2048"],
    "micro, width 8": ["model.size=micro", "task.width=8", "task.eval_max_len=8", "task.train_set=fresh"],
    "eval batch 32768": ["task.eval_examples=4096", "task.eval_batch_size=32768"],
    "micro, width 40, index hints": [
        "model.size=micro",
        "task.width=40",
        "task.index_hints=true",
        "task.pad=true",
        "task.digits=10",
        "task.train_set=fresh",
        "task.eval_lengths=[10,40]",
        "task.eval_grid=diagonal",
        "task.eval_examples=64",
        "task.eval_batch_size=512",
    ],
    "icl defaults": ["task.family=icl"],
    "icl batch 1024, n_dims 40": ["task.family=icl", "train.batch_size=1024", "task.n_dims=40"],
}

CHILD = """
import json, sys
import torch
torch.set_num_threads(1)
from study.config import trial_config
from study.train import train

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

cfg = trial_config({}, json.loads(sys.argv[1]))
start = status("VmRSS")
train(cfg)
print(json.dumps({"peak_growth": status("VmHWM") - start}))
"""


def measure(overrides: list[str]) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(overrides + SHORT)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth"]


def main() -> None:
    sys.path.insert(0, str(REPO))
    from study.config import trial_config
    from study.memory import estimate_trial_memory

    figures = {}
    print(f"{'config':28s} {'estimate MiB':>13s} {'measured MiB':>13s} {'ratio':>6s}")
    only = sys.argv[1:]  # names of configs to measure (default: all)
    for name, overrides in CONFIGS.items():
        if only and name not in only:
            continue
        estimate = estimate_trial_memory(trial_config({}, overrides + SHORT)).total
        measured = measure(overrides)
        ratio = estimate / max(measured, 1)
        figures[name] = {
            "estimate_mib": round(estimate / 2**20, 1),
            "measured_mib": round(measured / 2**20, 1),
            "ratio": round(ratio, 2),
        }
        print(f"{name:28s} {estimate / 2**20:13.1f} {measured / 2**20:13.1f} {ratio:6.2f}")
    ratios = [f["ratio"] for f in figures.values()]
    print(
        json.dumps({"bench": "memory_estimate", "min_ratio": min(ratios), "max_ratio": max(ratios), "configs": figures})
    )


if __name__ == "__main__":
    main()
