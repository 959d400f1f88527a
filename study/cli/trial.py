"""``oodstudy trial``: one trial in-process (no Ray), then its ID/OOD table."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any



def _trial(args: argparse.Namespace) -> int:
    from study.config import load_trial_config

    cfg = load_trial_config(args.spec, args.set or [])
    from study.train import train  # torch import only once the config is known to be good

    def progress(step: int, loss: float) -> None:
        if not args.json:
            print(f"\rstep {step}/{cfg.train.steps}  loss {loss:.4f}", end="", file=sys.stderr, flush=True)

    result = train(cfg, trial_id="local", progress=progress)
    if not args.json:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps({
            "config": cfg.to_dict(),
            "status": result.status,
            "steps": result.steps,
            "n_params": result.n_params,
            "device": result.device,
            "seconds": round(result.seconds, 3),
            "metrics": _finite(result.metrics),
            "eval_rows": [_finite(r) for r in result.eval_rows],
        }))
    else:
        print(f"status {result.status} after {result.steps} steps, {result.n_params:,} parameters, "
              f"{result.device}, {result.seconds:.1f} s")
        print(eval_table(result.eval_rows))
        print("summary: " + "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()))
    return 0 if result.status == "completed" else 1


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: write it as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def eval_table(eval_rows: list[dict[str, Any]]) -> str:
    """The final evaluation as a table: one row per condition, one column per metric."""
    import pandas as pd

    if not eval_rows:
        return "(no evaluation)"
    frame = pd.DataFrame(eval_rows)
    if "len_a" in frame:
        index = ["split", "len_a", "len_b"]
    else:
        n_max = int(frame["n_context"].max())
        shown = sorted({0, 1, n_max // 4, n_max // 2, n_max})
        frame = frame[frame["n_context"].isin(shown)]
        index = ["split", "shift", "shift_value", "n_context"]
    table = frame.pivot_table(index=index, columns="metric", values="value", aggfunc="mean")
    return table.to_string(float_format=lambda v: f"{v:.3f}")


def add_trial_command(sub) -> None:
    p = sub.add_parser("trial", help="run one trial in-process (no Ray) and print its ID/OOD table")
    p.add_argument("spec", nargs="?", help="trial YAML (or a sweep spec: its base is used); defaults if omitted")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set model.size=micro")
    p.add_argument("--json", action="store_true", help="print one JSON object with config, metrics and rows")
    p.set_defaults(func=_trial)
