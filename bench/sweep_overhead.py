"""Benchmark: trials per second through the sweep service against bare Ray Tune.

Both sides run the same trivial trainable -- it reports ``--reports`` results with a
metric and returns; no training -- on one local Ray (``--cpus`` CPUs, 1 CPU per
trial, actors reused), with the same number of trials, so what differs is the
machinery around the trials:

- service: the Tuner of ``oodstudy run`` as ``study.tune.runner.build_tuner`` builds it --
  ``study.tune.search.CellSearcher`` (one Optuna study per grid cell, TPE, in a journal
  file), the store callback (``study.tune.callbacks.StoreCallback``) and the progress
  line, ``num_samples=-1``, failure and checkpoint configs.  The trainable also
  reports ``--rows`` eval rows and as many curve rows per report, in the ``rows``
  format of ``run_trial``, so the store callback really writes them to a Parquet
  store (read back after each run to check that every trial and row arrived);
- bare: ``tune.Tuner`` with ``num_samples=N`` over a ``tune.loguniform`` space
  (Tune's random search), the same trainable without the rows, no callbacks.

Both run in the environment ``study.tune.runner.prepare_environment`` sets (result
buffer 1, state snapshots every 2 s; Tune's own result loggers on).  The Tuner is
built here the way ``build_tuner`` builds it, since ``build_tuner`` always runs
``run_trial``.  ``run_sweep`` compacts the study's store partitions after the fit:
that is timed apart and shown both ways (trials/s with and without it).
With ``--checkpoint`` every report of both sides carries a small checkpoint, as
``run_trial``'s reports do (then the store callback flushes at every report).

Only ``Tuner.fit`` is timed, after one small untimed warmup run; the sides alternate
for ``--repeats`` rounds and the medians are compared.  Each run is also split into
the time to the first trial's start, from there to the last trial's end, and after
it, with the number of worker processes that ran trials; for the service, the
driver seconds spent in the store callback and in the searcher.  Ray is shut down at
the end.  The last line printed is one JSON object with every figure.

    python bench/sweep_overhead.py [--trials 64] [--cells 4] [--reports 3] [--rows 4]
        [--cpus 2] [--repeats 3] [--checkpoint] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.tune import runner  # noqa: E402  (imports no Ray at module level)
from study.config import SweepSpec  # noqa: E402
from study.store import Store  # noqa: E402

METRIC = "id_exact_match"


def trivial_trainable(config: dict[str, Any], reports: int, rows: int, checkpoint: bool) -> None:
    """Report ``reports`` results shaped like run_trial's, with ``rows`` small rows per table."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id() or "local"
    for step in range(1, reports + 1):
        score = step / reports
        result: dict[str, Any] = {
            METRIC: score,
            "loss": 1.0 - score,
            "step": step,
            "status": "completed" if step == reports else "running",
            "n_params": 0,
            "device": "cpu",
            "node": platform.node(),
        }
        if rows:
            result["rows"] = {
                "evals": [
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "split": "id" if i % 2 == 0 else "ood",
                        "metric": "exact_match",
                        "value": score,
                        "len_a": i + 1,
                        "len_b": i + 1,
                    }
                    for i in range(rows)
                ],
                "curves": [
                    {"trial_id": trial_id, "step": step, "metric": f"m{i}", "value": float(i)} for i in range(rows)
                ],
            }
        if checkpoint:
            with tempfile.TemporaryDirectory() as directory:
                with open(os.path.join(directory, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(result)


def make_spec(workdir: str, name: str, trials: int, cells: int) -> SweepSpec:
    """A study of ``cells`` grid cells x ``trials / cells`` trials, one tuned axis (TPE)."""
    spec = SweepSpec.model_validate(
        {
            "name": name,
            "base": {"model": {"size": "nano"}},  # validated per trial by the store callback; not trained
            "grid": {"train.seed": list(range(cells))},
            "tune": {
                "metric": METRIC,
                "mode": "max",
                "trials_per_grid_point": math.ceil(trials / cells),
                "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
                "sampler": "tpe",
            },
            "resources": {"cpus": 1},
            "store": os.path.join(workdir, "store"),
        }
    )
    spec.check_trials()
    return spec


def time_hooks(obj: Any, names: tuple[str, ...], totals: dict[str, float]) -> None:
    """Wrap ``obj``'s methods ``names`` so that the seconds spent in each add up in ``totals``."""
    for name in names:
        method = getattr(obj, name)
        key = f"{type(obj).__name__}.{name}"
        totals.setdefault(key, 0.0)

        def timed(*a: Any, _method=method, _key=key, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return _method(*a, **kw)
            finally:
                totals[_key] += time.perf_counter() - started

        setattr(obj, name, timed)


STORE_HOOKS = (
    "on_step_begin",
    "on_trial_start",
    "on_trial_result",
    "on_checkpoint",
    "on_trial_complete",
    "on_experiment_end",
)


def timed_cell_searcher(spec: SweepSpec, journal_path: str, totals: dict[str, float]):
    """A ``CellSearcher`` whose seconds in suggest / on_trial_complete / save add up in ``totals``.

    (A subclass rather than wrapped methods: the searcher's state, its ``__dict__``, is pickled.)
    """
    from study.tune.search import CellSearcher

    def timed(name: str):
        method = getattr(CellSearcher, name)

        def wrapper(self: CellSearcher, *a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(self, *a, **kw)
            finally:
                totals[f"CellSearcher.{name}"] = totals.get(f"CellSearcher.{name}", 0.0) + time.perf_counter() - started

        return wrapper

    timed_class = type(
        "TimedCellSearcher", (CellSearcher,), {name: timed(name) for name in ("suggest", "on_trial_complete", "save")}
    )
    return timed_class(spec, journal_path)


def service_tuner(spec: SweepSpec, args: argparse.Namespace, hook_seconds: dict[str, float], timeline):
    """The Tuner of ``study.tune.runner.build_tuner`` (no early stopping), with the trivial trainable;
    the driver-side seconds of the store callback and the searcher add up in ``hook_seconds``."""
    from ray import tune

    trainable = tune.with_parameters(
        trivial_trainable, reports=args.reports, rows=args.rows, checkpoint=args.checkpoint
    )
    from study.tune.callbacks import StoreCallback

    callbacks = runner.default_callbacks(spec)  # gauges, store writer, progress line, ..., ForgetRows last
    time_hooks(next(c for c in callbacks if isinstance(c, StoreCallback)), STORE_HOOKS, hook_seconds)
    searcher = timed_cell_searcher(spec, runner.journal_path(spec), hook_seconds)
    return runner.build_tuner(
        spec, trainable=trainable, searcher=searcher, callbacks=[*callbacks[:-1], timeline, callbacks[-1]]
    )


def bare_tuner(workdir: str, name: str, trials: int, args: argparse.Namespace, timeline):
    """Plain Ray Tune: random search over one axis, same trainable without rows (the timeline
    callback, on both sides, only reads the clock)."""
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(trivial_trainable, reports=args.reports, rows=0, checkpoint=args.checkpoint),
        {"cpu": 1, "gpu": 0},
    )
    return tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(1e-4, 1e-2)},
        tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=os.path.join(workdir, "bare_runs"), callbacks=[timeline], verbose=0
        ),
    )


def make_timeline():
    """A Tune callback that notes when the first trial starts and the last one ends, and the
    worker processes that ran trials (Tune adds ``pid`` to every result): with actors
    reused, fewer processes than trials."""
    from ray.tune import Callback

    class Timeline(Callback):
        def __init__(self) -> None:
            self.first_start: float | None = None
            self.last_end: float | None = None
            self.pids: set[int] = set()

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            if self.first_start is None:
                self.first_start = time.perf_counter()

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.pids.add(result.get("pid"))

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.last_end = time.perf_counter()

    return Timeline()


def timed_fit(tuner, timeline) -> dict[str, float]:
    """Seconds of ``tuner.fit()``, split into head (to the first trial's start), body (to the
    last trial's end) and tail (the rest); trials run, trials that errored, worker processes."""
    started = time.perf_counter()
    grid = tuner.fit()
    ended = time.perf_counter()
    first, last = timeline.first_start or started, timeline.last_end or ended
    return {
        "seconds": ended - started,
        "head": first - started,
        "body": last - first,
        "tail": ended - last,
        "trials": len(grid),
        "errors": grid.num_errors,
        "processes": len(timeline.pids),
    }


def check_store(spec: SweepSpec, trials: int, args: argparse.Namespace) -> dict[str, int]:
    """What the store callback wrote: trials (completed) and rows, against what was reported."""
    store = Store(spec.store, create=False)
    found = {
        "trials": len(store.frame("trials", study=spec.name)),
        "completed": int((store.frame("trials", study=spec.name)["status"] == "completed").sum()),
        "evals": len(store.frame("evals", study=spec.name)),
        "curves": len(store.frame("curves", study=spec.name)),
    }
    expected = trials * args.reports * args.rows
    ok = found["trials"] == found["completed"] == trials and found["evals"] == found["curves"] == expected
    print(
        f"store check: {found} (expected {trials} completed trials, {expected} rows per table): "
        f"{'ok' if ok else 'MISMATCH'}"
    )
    return {**found, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=64, help="trials per run (rounded up to a multiple of --cells)")
    parser.add_argument("--cells", type=int, default=4, help="grid cells of the service's study")
    parser.add_argument("--reports", type=int, default=3, help="results each trial reports")
    parser.add_argument("--rows", type=int, default=4, help="eval rows and curve rows per report (service)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating; medians reported")
    parser.add_argument("--checkpoint", action="store_true", help="a small checkpoint with every report")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    if min(args.trials, args.cells, args.reports, args.cpus, args.repeats) < 1 or args.rows < 0:
        parser.error("--trials, --cells, --reports, --cpus and --repeats must be >= 1, --rows >= 0")
    trials = math.ceil(args.trials / args.cells) * args.cells

    # the service's Tune environment, for both sides, before Ray Tune is imported
    runner.prepare_environment()
    import ray

    workdir = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="sweep_overhead_")
    os.makedirs(workdir, exist_ok=True)
    figures: dict[str, Any] = {
        "trials": trials,
        "cells": args.cells,
        "reports": args.reports,
        "rows": args.rows,
        "cpus": args.cpus,
        "checkpoint": args.checkpoint,
        "ray": ray.__version__,
    }
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "service": []}
    checks: list[dict[str, int]] = []
    hook_seconds: list[dict[str, float]] = []
    try:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        # one small untimed run so that both sides find Ray's workers started
        warm = timed_fit(bare_tuner(workdir, "warmup", args.cpus, args, make_timeline()), make_timeline())
        print(
            f"Ray {ray.__version__} on {args.cpus} CPUs; {trials} trials x {args.reports} reports per run "
            f"(warmup run {warm['seconds']:.1f} s)"
        )
        for repeat in range(args.repeats):
            # alternate which side goes first, so that a drift in the machine's load hits both
            for side in ("bare", "service") if repeat % 2 == 0 else ("service", "bare"):
                timeline = make_timeline()
                if side == "bare":
                    run = timed_fit(bare_tuner(workdir, f"bare_{repeat}", trials, args, timeline), timeline)
                else:
                    spec = make_spec(workdir, f"service_{repeat}", trials, args.cells)
                    Store(spec.store)  # as run_sweep does before any Ray work
                    hooks: dict[str, float] = {}
                    run = timed_fit(service_tuner(spec, args, hooks, timeline), timeline)
                    run["driver_hooks"] = sum(hooks.values())
                    started = time.perf_counter()
                    Store(spec.store).compact(spec.name)  # as run_sweep does after the fit
                    run["compact"] = time.perf_counter() - started
                    hook_seconds.append(hooks)
                runs[side].append(run)
                print(
                    f"{side:>7} #{repeat}: {run['trials']} trials ({run['errors']} errors) in "
                    f"{run['seconds']:.2f} s = {trials / run['seconds']:.2f} trials/s "
                    f"(to first start {run['head']:.2f} s, trials {run['body']:.2f} s, after the last "
                    f"{run['tail']:.2f} s; {run['processes']} worker processes)"
                )
                if side == "service":
                    busy: dict[str, float] = {}
                    for key, value in hooks.items():
                        busy[key.split(".", 1)[0]] = busy.get(key.split(".", 1)[0], 0.0) + value
                    print(
                        "         driver seconds in "
                        + ", ".join(f"{k} {v:.3f}" for k, v in busy.items())
                        + f"; compact after the fit {run['compact']:.2f} s"
                    )
                    checks.append(check_store(spec, trials, args))
    finally:
        ray.shutdown()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    def median(side: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[side])

    bare_rate, service_rate = trials / median("bare", "seconds"), trials / median("service", "seconds")
    ratio = service_rate / bare_rate
    service_compact_rate = trials / statistics.median(run["seconds"] + run["compact"] for run in runs["service"])
    compact_ratio = service_compact_rate / bare_rate
    print(
        f"trials/s (median of {args.repeats}): service {service_rate:.2f}, bare Tune {bare_rate:.2f}; "
        f"service / bare = {ratio:.3f}; target >= 0.8: {'met' if ratio >= 0.8 else 'missed'}"
    )
    print(
        f"with the compaction after the fit: service {service_compact_rate:.2f} trials/s; "
        f"service / bare = {compact_ratio:.3f}"
    )
    figures.update(
        bare_trials_per_s=round(bare_rate, 3),
        service_trials_per_s=round(service_rate, 3),
        service_over_bare=round(ratio, 4),
        service_with_compact_trials_per_s=round(service_compact_rate, 3),
        service_with_compact_over_bare=round(compact_ratio, 4),
        runs={
            side: [{k: round(v, 4) for k, v in run.items()} for run in side_runs] for side, side_runs in runs.items()
        },
        service_hook_seconds=[{k: round(v, 4) for k, v in hooks.items()} for hooks in hook_seconds],
        store_checks=checks,
        load_avg_1min_at_end=round(os.getloadavg()[0], 2),
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
