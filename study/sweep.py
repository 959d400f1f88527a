"""Build and run a study on Ray Tune: local or cluster Ray, store callback, resume, status.

``run_sweep(spec)`` validates the spec, starts (or attaches to) Ray, and runs a
``ray.tune.Tuner`` whose trials are :func:`run_trial`.  Trials only *report*; the
driver's :class:`StoreCallback` appends their rows to the store and flushes a trial's
rows before Tune acknowledges that trial's checkpoint, so every row at or before a
trial's latest checkpoint is durable.  A retried or restored trial re-reports the
steps after its checkpoint; the store keeps the latest attempt of each row key.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from study.config import ConfigError, SweepSpec, TrialConfig, load_sweep_spec

SPEC_FILE = "oodstudy_spec.json"


# --------------------------------------------------------------------------- the trainable


def run_trial(config: dict[str, Any], fail_once_at_step: int | None = None) -> None:
    """One Ray Tune trial: train the config's model, reporting metrics, rows and checkpoints.

    ``fail_once_at_step`` raises once, after the report at that step, in a trial's
    first attempt: it exists to exercise retries from checkpoints.
    """
    import torch
    from ray import tune

    from study.train import Report, load_state, save_state, train

    cfg = TrialConfig.model_validate(config["trial"])
    context = tune.get_context()
    trial_id = context.get_trial_id() or "local"
    cpus = int(context.get_trial_resources().required_resources.get("CPU", 1)) if context.get_trial_resources() else 1
    torch.set_num_threads(max(1, cpus))
    restore = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            restore = load_state(os.path.join(directory, "state.pt"))
    first_attempt = restore is None

    def report(r: Report) -> None:
        metrics = {
            **r.metrics,
            "step": r.step,
            "status": r.status,
            "n_params": r.n_params,
            "device": r.device,
            "node": platform.node(),
            "rows": r.rows,
        }
        if r.state is None:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as directory:
                save_state(r.state, os.path.join(directory, "state.pt"))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        if fail_once_at_step is not None and first_attempt and r.step >= fail_once_at_step and not r.done:
            raise RuntimeError(f"injected failure after step {r.step}")

    train(cfg, trial_id=trial_id, restore=restore, report=report)


# --------------------------------------------------------------------------- the store callback


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _make_store_callback(store_uri: str, study: str, metric: str):
    from ray.tune import Callback

    class StoreCallback(Callback):
        """Driver side: buffer each trial's reported rows, append them to the store.

        A trial's buffer is flushed when its checkpoint is saved (before Tune records
        the checkpoint) and when the trial ends.  Rows reported after a trial's last
        checkpoint by an attempt that then fails are dropped: the retry resumes from
        that checkpoint and reports those steps again.
        """

        def __init__(self) -> None:
            self.store_uri, self.study, self.metric = store_uri, study, metric
            self._reset()

        def _reset(self) -> None:
            self._store = None
            self.buffers: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = {}  # trial -> (table, attempt) -> rows
            self.trial_rows: dict[str, dict[str, Any]] = {}
            self.seen_trials = False

        def __getstate__(self) -> dict[str, Any]:
            return {"store_uri": self.store_uri, "study": self.study, "metric": self.metric}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)
            self._reset()

        @property
        def store(self):
            if self._store is None:
                from study.store import Store

                self._store = Store(self.store_uri)
            return self._store

        def _trial_row(self, trial) -> dict[str, Any]:
            if trial.trial_id not in self.trial_rows:
                self.trial_rows[trial.trial_id] = {
                    "trial_id": trial.trial_id,
                    "grid": json.dumps(trial.config.get("grid", {})),
                    "config": json.dumps(TrialConfig.model_validate(trial.config["trial"]).to_dict()),
                    "status": "pending",
                    "start_time": _now(),
                    "end_time": None,
                    "node": None,
                    "device": None,
                    "n_params": None,
                    "steps": 0,
                    "score": None,
                    "error": None,
                }
            return self.trial_rows[trial.trial_id]

        def _flush(self, trial) -> None:
            """Append a trial's buffered rows and its trials row; the buffer is emptied only
            once everything is written, so a failed write loses nothing."""
            cell, attempt = trial.config.get("cell", "all"), int(trial.num_failures)
            buffer = self.buffers.get(trial.trial_id, {})
            for (table, reported_attempt), rows in list(buffer.items()):
                if rows:
                    self.store.append(table, rows, study=self.study, attempt=reported_attempt, cell=cell)
                del buffer[(table, reported_attempt)]
            row = self.trial_rows.get(trial.trial_id)
            if row is not None:
                self.store.append("trials", [row], study=self.study, attempt=attempt, cell=cell)

        def on_step_begin(self, iteration, trials, **info) -> None:
            if not self.seen_trials and trials:
                self.seen_trials = True
                self._close_orphans(trials)

        def _close_orphans(self, trials) -> None:
            """After a driver crash: trials in the store that the restored run does not know."""
            import pandas as pd

            known = {t.trial_id for t in trials}
            frame = self.store.frame("trials", study=self.study)
            orphans = frame[(frame["status"].isin(["pending", "running"])) & ~frame["trial_id"].isin(known)]
            for _, row in orphans.iterrows():
                record = {k: row[k] for k in ("trial_id", "grid", "config", "start_time", "node", "device", "n_params", "steps", "score")}
                record = {k: (None if pd.isna(v) else v) for k, v in record.items()}
                record.update(status="abandoned", end_time=_now(), error="driver stopped before the trial was recorded")
                self.store.append("trials", [record], study=self.study, attempt=int(row["attempt"]) + 1, cell=row["cell"])

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self._trial_row(trial)["status"] = "running"

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            rows = result.pop("rows", None) or {}
            buffer = self.buffers.setdefault(trial.trial_id, {})
            attempt = int(trial.num_failures)  # rows keep the attempt that reported them
            for table, table_rows in rows.items():
                buffer.setdefault((table, attempt), []).extend(table_rows)
            row = self._trial_row(trial)
            row.update(
                status=result.get("status", "running"),
                node=result.get("node"),
                device=result.get("device"),
                n_params=result.get("n_params"),
                steps=result.get("step"),
                score=result.get(self.metric),
            )

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
            self._flush(trial)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            row = self._trial_row(trial)
            last = trial.last_result or {}
            status = last.get("status", "running")
            row.update(status="pruned" if status == "running" else status, end_time=_now())
            self._flush(trial)

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            self.buffers.pop(trial.trial_id, None)  # the retry re-reports everything after its checkpoint
            row = self._trial_row(trial)
            row.update(status="retrying", error=_error_text(trial))
            self._flush(trial)
            row.update(status="running", error=None)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            row = self._trial_row(trial)
            row.update(status="failed", end_time=_now(), error=_error_text(trial))
            self._flush(trial)

        def on_experiment_end(self, trials, **info) -> None:
            for trial in trials:
                if trial.trial_id in self.buffers:
                    self._flush(trial)

    return StoreCallback()


def _error_text(trial) -> str | None:
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text()[-2000:] if path and os.path.exists(path) else "trial raised an error"
    except OSError:
        return "trial raised an error"


# --------------------------------------------------------------------------- progress


def _make_progress_callback(spec: SweepSpec):
    from ray.tune import Callback

    n_cells, quota = len(spec.cells()), spec.tune.trials_per_cell

    class ProgressLine(Callback):
        """One live line: cells done, trials running/done, ETA."""

        def __init__(self) -> None:
            self.started = time.monotonic()
            self.last_print = 0.0
            self.interactive = sys.stderr.isatty()

        def on_step_end(self, iteration, trials, **info) -> None:
            now = time.monotonic()
            if now - self.last_print < (1.0 if self.interactive else 30.0):
                return
            self.last_print = now
            print(self.line(trials), end="\r" if self.interactive else "\n", file=sys.stderr, flush=True)

        def line(self, trials) -> str:
            done = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
            running = sum(t.status == "RUNNING" for t in trials)
            per_cell: dict[str, int] = {}
            for t in done:
                per_cell[t.config.get("cell", "all")] = per_cell.get(t.config.get("cell", "all"), 0) + 1
            cells_done = sum(n >= quota for n in per_cell.values())
            total = n_cells * quota
            elapsed = time.monotonic() - self.started
            eta = elapsed / len(done) * (total - len(done)) if done else float("nan")
            eta_text = f"{eta / 60:.1f} min" if eta == eta else "?"
            return (f"[{spec.name}] cells {cells_done}/{n_cells} done | trials {running} running, "
                    f"{len(done)}/{total} done | elapsed {elapsed / 60:.1f} min | ETA {eta_text}   ")

        def on_experiment_end(self, trials, **info) -> None:
            print(self.line(trials), file=sys.stderr, flush=True)

    return ProgressLine()


# --------------------------------------------------------------------------- running


def storage_path(spec: SweepSpec) -> str:
    """Ray Tune's run directory: the spec's, else ``<store>/_runs`` (absolute for local paths)."""
    path = spec.storage_path or join_uri(spec.store, "_runs")
    return path if "://" in path else str(Path(path).expanduser().resolve())


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...``, keeping a URI's query (e.g. ``?endpoint_override=...``) at the end."""
    root, _, query = base.partition("?")
    return "/".join([root.rstrip("/"), *parts]) + (f"?{query}" if query else "")


def journal_path(spec: SweepSpec) -> str:
    """The Optuna journal file: beside the run directory when local, else under ./.oodstudy."""
    root = storage_path(spec)
    base = Path(root) / spec.name if "://" not in root else Path(".oodstudy") / spec.name
    base.mkdir(parents=True, exist_ok=True)
    return str(base / "optuna.journal")


def check_optuna_storage(spec: SweepSpec) -> None:
    """With a remote run directory a local journal would not survive a move of the driver."""
    if "://" in storage_path(spec) and not spec.optuna_storage:
        raise ConfigError(
            f"the run directory {storage_path(spec)} is remote, so the Optuna studies need a storage "
            "every driver can reach: set optuna_storage (e.g. postgresql://user@host/optuna)"
        )


def check_resources_locally(spec: SweepSpec) -> None:
    """Before starting an embedded Ray: can this machine run even one trial?"""
    import torch

    cpus = os.cpu_count() or 1
    if spec.resources.cpus > cpus:
        raise ConfigError(f"resources.cpus={spec.resources.cpus} but this machine has {cpus} CPUs; "
                          "lower resources.cpus or attach to a cluster with --address")
    gpus = torch.cuda.device_count()
    if spec.resources.gpus > gpus:
        raise ConfigError(f"resources.gpus={spec.resources.gpus} but this machine has {gpus} GPUs; "
                          "set resources.gpus=0 or attach to a GPU cluster with --address")


def check_resources_on_cluster(spec: SweepSpec) -> None:
    """Some alive node must offer the per-trial CPUs and GPUs, else no trial could ever start."""
    import ray

    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        if res.get("CPU", 0) >= spec.resources.cpus and res.get("GPU", 0) >= spec.resources.gpus:
            return
    raise ConfigError(
        f"no node of the cluster offers resources.cpus={spec.resources.cpus} and "
        f"resources.gpus={spec.resources.gpus} for one trial; lower them or add such a node"
    )


def connect_ray(address: str | None) -> None:
    """Attach to a cluster (``auto``, ``ray://...``, or RAY_ADDRESS from ``ray job submit``),
    or start an embedded local Ray with its dashboard bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=False)
        return
    # address="local": always a new embedded Ray, even if `ray start` left a cluster on this machine
    context = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    if getattr(context, "dashboard_url", None):
        print(f"Ray dashboard: http://{context.dashboard_url}", file=sys.stderr)


def _write_spec_copy(spec: SweepSpec) -> None:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage_path(spec))
    directory = f"{root}/{spec.name}"
    fs.create_dir(directory, recursive=True)
    with fs.open_output_stream(f"{directory}/{SPEC_FILE}") as out:
        out.write(spec.model_dump_json(indent=2).encode())


def read_spec_copy(name: str, store: str, storage: str | None = None) -> SweepSpec:
    import pyarrow.fs as pafs

    try:
        probe = SweepSpec(name=name, store=store, storage_path=storage)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{name!r} cannot be a study name: {err.errors()[0]['msg'] if hasattr(err, 'errors') else err}") from None
    fs, root = pafs.FileSystem.from_uri(storage_path(probe))
    path = f"{root}/{name}/{SPEC_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise ConfigError(f"no study named {name!r} under {storage_path(probe)}; "
                          "check the name and --store (or --storage-path) of the run")
    with fs.open_input_stream(path) as f:
        return SweepSpec.model_validate_json(f.read())


def default_callbacks(spec: SweepSpec) -> list:
    """The driver callbacks of every study: the store writer and the progress line."""
    return [_make_store_callback(spec.store, spec.name, spec.tune.metric), _make_progress_callback(spec)]


def build_tuner(
    spec: SweepSpec,
    *,
    trainable=None,
    searcher=None,
    callbacks: list | None = None,
    fail_once_at_step: int | None = None,
    tune_table: bool = False,
    restore: bool = False,
):
    """The Tuner of a study. ``trainable``, ``searcher`` and ``callbacks`` default to the
    service's own (:func:`run_trial`, :class:`CellSearcher`, :func:`default_callbacks`)."""
    from ray import tune

    from study.search import CellSearcher, PerCellScheduler

    trainable = tune.with_resources(
        trainable or tune.with_parameters(run_trial, fail_once_at_step=fail_once_at_step),
        {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus},
    )
    path = storage_path(spec)
    if restore:
        experiment = join_uri(path, spec.name)
        if not tune.Tuner.can_restore(experiment):
            raise ConfigError(f"{experiment} holds no resumable run; start it with `oodstudy run`")
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    scheduler = None
    if spec.early_stopping.type == "asha":
        trains = [TrialConfig.model_validate(spec.trial_raw(cell, {})).train for cell in spec.cells()]
        n_evals = max(math.ceil(t.steps / t.eval_every) for t in trains)  # reports per trial, the last included
        scheduler = PerCellScheduler(
            spec.tune.metric, spec.tune.mode, spec.early_stopping.grace_period,
            spec.early_stopping.reduction_factor, max_t=n_evals,
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher or CellSearcher(spec, journal_path(spec)),
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=spec.max_concurrent or None,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=path,
            callbacks=default_callbacks(spec) if callbacks is None else callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=1 if tune_table else 0,
        ),
    )


def _prepare_environment() -> None:
    # the experiment state (searcher included) is snapshotted at least every 2 s,
    # so a killed driver loses at most a couple of seconds of bookkeeping
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    fail_once_at_step: int | None = None,
    tune_table: bool = False,
):
    """Run (or resume) a study to completion; returns Tune's ResultGrid."""
    from study.store import Store

    check_optuna_storage(spec)
    Store(spec.store)  # refuses a path that is not a store before any Ray work
    import torch  # noqa: F401  (loaded before Ray: inside a Ray job, MKL fails to load torch after ray.init)
    import ray

    if address is None and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        check_resources_locally(spec)
    _prepare_environment()
    connect_ray(address)
    check_resources_on_cluster(spec)
    if not resume:
        _write_spec_copy(spec)
    tuner = build_tuner(spec, fail_once_at_step=fail_once_at_step, tune_table=tune_table, restore=resume)
    results = tuner.fit()
    Store(spec.store).compact(spec.name)  # one fragment per partition keeps later reads fast
    return results


# --------------------------------------------------------------------------- status


def study_status(spec: SweepSpec) -> "Any":
    """Per cell: planned, completed, running, failed/diverged/pruned, best score (a DataFrame)."""
    import pandas as pd

    from study.config import cell_id
    from study.store import Store, StoreError

    planned = {cell_id(c): spec.tune.trials_per_cell for c in spec.cells()}
    try:
        trials = Store(spec.store, create=False).frame("trials", study=spec.name)
    except StoreError:  # no store yet: nothing has run
        trials = pd.DataFrame(columns=["cell", "status", "score"])
    rows = []
    for cid, n in planned.items():
        mine = trials[trials["cell"] == cid]
        scores = mine.loc[mine["status"] == "completed", "score"].dropna()
        best = (scores.max() if spec.tune.mode == "max" else scores.min()) if len(scores) else float("nan")
        counts = mine["status"].value_counts()
        finished = int(sum(counts.get(s, 0) for s in ("completed", "failed", "diverged", "pruned")))
        running = int(counts.get("running", 0) + counts.get("retrying", 0))
        rows.append({
            "cell": cid,
            "planned": n,
            "completed": int(counts.get("completed", 0)),
            "running": running,
            "failed": int(counts.get("failed", 0)),
            "diverged": int(counts.get("diverged", 0)),
            "pruned": int(counts.get("pruned", 0)),
            "pending": max(0, n - finished - running),
            f"best_{spec.tune.metric}": best,
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- CLI


def _print_summary(spec: SweepSpec) -> None:
    from analysis.breakdown import summary_table
    from study.store import Store

    print(study_status(spec).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    print(summary_table(Store(spec.store, create=False), spec.name))


def _cmd_run(args) -> int:
    overrides = list(args.set or [])
    if args.store:
        overrides.append(f"store={args.store}")
    if args.name:
        overrides.append(f"name={args.name}")
    spec = load_sweep_spec(args.spec, overrides)
    run_sweep(spec, address=args.address, tune_table=args.tune_table)
    _print_summary(spec)
    print(f"\nresults in {spec.store} (study {spec.name}); analyse with: "
          f"oodstudy report --store {spec.store} --study {spec.name} --out report/{spec.name}")
    return 0


def _cmd_resume(args) -> int:
    spec = read_spec_copy(args.name, args.store, args.storage_path)
    run_sweep(spec, address=args.address, resume=True, tune_table=args.tune_table)
    _print_summary(spec)
    return 0


def _cmd_status(args) -> int:
    spec = read_spec_copy(args.name, args.store, args.storage_path)
    table = study_status(spec)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    done = int((table["planned"] - table["pending"] - table["running"]).sum())
    print(f"\n{done}/{int(table['planned'].sum())} trials finished")
    return 0


def add_sweep_commands(sub) -> None:
    p = sub.add_parser("run", help="run a sweep spec on Ray Tune (embedded local Ray unless --address)")
    p.add_argument("spec", help="search_spaces/<name>.yaml")
    p.add_argument("--store", help="results store URI (overrides the spec's)")
    p.add_argument("--name", help="study name (overrides the spec's)")
    p.add_argument("--address", help="Ray cluster address: auto, ray://host:10001, ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override, e.g. --set train.steps=500 or --set grid.model.size=[nano]")
    p.add_argument("--tune-table", action="store_true", help="also print Ray Tune's status table")
    p.set_defaults(func=_cmd_run)

    for name, func, text in (("resume", _cmd_resume, "finish an interrupted study"),
                             ("status", _cmd_status, "cells done/running/pending and best score per cell")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help="study name")
        p.add_argument("--store", default="./results", help="results store URI")
        p.add_argument("--storage-path", help="Ray Tune run directory if not <store>/_runs")
        if name == "resume":
            p.add_argument("--address", help="Ray cluster address")
            p.add_argument("--tune-table", action="store_true")
        p.set_defaults(func=func)
