"""``oodstudy trial``: one trial in-process (no Ray), then its ID/OOD table."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from study.errors import ConfigError
from study.naming import trials_row


def _trial(args: argparse.Namespace) -> int:
    from study.config import load_trial_config

    cfg = load_trial_config(args.spec, args.set or [])
    from study.memory import available_bytes, check_fits
    from study.train import pick_device, train  # torch import only once the config is known to be good

    try:
        device = pick_device(cfg.train.device)
    except RuntimeError as err:
        raise ConfigError(str(err)) from None
    check_fits(cfg, *available_bytes(device.type))
    threads = check_threads(args.threads)
    store = _open_store(args, cfg)
    import torch

    torch.set_num_threads(threads)  # as a sweep's trial with resources.threads = threads
    if cfg.pack.size > 1:
        return _trial_pack(cfg, args)
    line = ProgressLine(cfg.train.steps)

    def progress(step: int, losses: dict[str, float]) -> None:
        if not args.json:
            (loss,) = losses.values()
            print("\r" + line.text(step, loss), end="", file=sys.stderr, flush=True)

    def record(report) -> None:  # every evaluation's rows, as a sweep's store callback writes them
        for table, rows in report.rows.items():
            if rows:
                store.append(table, rows, study=args.study, cell="")

    trial_id = local_trial_id() if store is not None else "local"
    lease = None
    if store is not None:
        from study.store.lease import StudyLease

        lease = StudyLease(args.store, args.study)
        lease.acquire("trial")  # one writer per study: a sweep's driver, or this trial
    try:
        result = train(cfg, trial_id=trial_id, progress=progress, report=record if store is not None else None)
        if store is not None:
            row = trials_row(
                trial_id=trial_id,
                grid=json.dumps({}),
                config=json.dumps(cfg.to_dict()),
                status=result.status,
                device=result.device,
                n_params=result.n_params,
                steps=result.steps,
            )
            store.append("trials", [row], study=args.study, cell="")
    finally:
        if lease is not None:
            lease.release()
    if not args.json:
        print(file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "config": cfg.to_dict(),
                    "status": result.status,
                    "steps": result.steps,
                    "n_params": result.n_params,
                    "device": result.device,
                    "seconds": round(result.seconds, 3),
                    "metrics": _finite(result.metrics),
                    "eval_rows": [_finite(r) for r in result.eval_rows],
                }
            )
        )
    else:
        print(
            f"status {result.status} after {result.steps} steps, {result.n_params:,} parameters, "
            f"{result.device}, {result.seconds:.1f} s"
        )
        print(eval_table(result.eval_rows))
        print("summary: " + "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()))
    return 0 if result.status == "completed" else 1


# Torch threads of `oodstudy trial` unless --threads says otherwise.  One: on a shared 2-core
# machine torch's default of 2 threads ran 200 steps of the default trial in 33 s against 9 s
# with one (a new user's measurement), and a sweep's trial runs with resources.threads (default 1).
DEFAULT_THREADS = 1


def check_threads(threads: int) -> int:
    """``--threads``: at least 1 and at most this machine's CPUs."""
    import os

    cpus = os.cpu_count() or 1
    if not 1 <= threads <= cpus:
        raise ConfigError(
            f"--threads {threads}: give 1 to {cpus} (this machine's CPUs); 1 is fastest on a shared machine"
        )
    return threads


class ProgressLine:
    """``step 1300/4000  loss 0.0869  41 steps/s  ETA 1.1 min``: the step rate measured from
    the first step seen, and the time left at that rate."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.first: tuple[float, int] | None = None

    def text(self, step: int, loss: float, now: float | None = None) -> str:
        import time

        now = time.monotonic() if now is None else now
        if self.first is None:
            self.first = (now, step)
        seconds, steps = now - self.first[0], step - self.first[1]
        line = f"step {step}/{self.total}  loss {loss:.4f}"
        if seconds > 0 and steps > 0:
            rate = steps / seconds
            left = (self.total - step) / rate
            eta = f"{left / 60:.1f} min" if left >= 60 else f"{left:.0f} s"
            line += f"  {rate:.0f} steps/s  ETA {eta}"
        return line


def _open_store(args: argparse.Namespace, cfg):
    """The store ``--store`` names (created when missing), or None; refused before training,
    as is a ``--study`` that cannot name a study (the rule of a spec's ``name``)."""
    if not args.store:
        return None
    from study.config import check_study_name, shown
    from study.store import Store

    if cfg.pack.size > 1:
        raise ConfigError(
            "--store records one trial; drop pack.size (or run the pack as a sweep, whose store holds every member)"
        )
    try:
        check_study_name(args.study)
    except ConfigError as err:
        raise ConfigError(f"--study {shown(args.study)}: {err}") from None
    Store.check_target(args.store)  # a store this process cannot write is refused here, not after training
    store = Store(args.store, create=True)
    check_not_a_sweep(args.store, args.study)
    return store


def check_not_a_sweep(store_uri: str, study: str) -> None:
    """``trial --store`` adds a trial to a study of its own: never to a sweep's study (whose
    driver owns it, and whose analysis would read a stray trial as one of its grid)."""
    import pyarrow.fs as pafs

    from study.config import SweepSpec
    from study.tune.runner import SPEC_FILE, run_filesystem

    fs, root = run_filesystem(SweepSpec(name=study, store=store_uri))
    if fs.get_file_info(f"{root}/{study}/{SPEC_FILE}").type != pafs.FileType.NotFound:
        raise ConfigError(
            f"--study {study}: that study in {store_uri} is a sweep's; a single trial goes to a study "
            "of its own: pass another --study (e.g. --study one)"
        )


def local_trial_id() -> str:
    """A trial's id in the store: ``local-<UTC time>-<random>``, new for every run, so that a
    second ``trial --store`` into the same study adds a trial instead of replacing the first."""
    import datetime as dt
    import uuid

    return f"local-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _trial_pack(cfg, args: argparse.Namespace) -> int:
    """``--set pack.size=K``: K seeds (train.seed, +1, ...) trained at once in one pack."""
    from study.train import pack_members, train_pack

    members = pack_members(cfg)
    results = train_pack(members, [f"local-{k}" for k in range(len(members))])
    if args.json:
        print(
            json.dumps(
                {
                    "members": [
                        {
                            "config": m.to_dict(),
                            "trial_id": r.trial_id,
                            "status": r.status,
                            "steps": r.steps,
                            "n_params": r.n_params,
                            "device": r.device,
                            "seconds": round(r.seconds, 3),
                            "metrics": _finite(r.metrics),
                            "eval_rows": [_finite(row) for row in r.eval_rows],
                        }
                        for m, r in zip(members, results)
                    ]
                }
            )
        )
    else:
        print(
            f"pack of {len(members)} on {results[0].device}, {results[0].n_params:,} parameters each, "
            f"{results[0].seconds:.1f} s"
        )
        for m, r in zip(members, results):
            summary = "  ".join(f"{k}={v:.4f}" for k, v in r.metrics.items())
            print(f"seed {m.train.seed}: status {r.status} after {r.steps} steps; {summary}")
    return 0 if all(r.status in ("completed", "converged") for r in results) else 1


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
    p.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"torch threads (default {DEFAULT_THREADS}: fastest on a shared machine; "
        "more may pay for large models on idle cores)",
    )
    p.add_argument(
        "--store",
        help="also write the trial's rows (evals, curves, representations) to this store, "
        "trial_id 'local', as a sweep would (created when missing)",
    )
    p.add_argument("--study", default="trial", help="study name in --store (default: trial)")
    p.set_defaults(func=_trial)
