"""Run a study on Ray Tune: connect (embedded local Ray or a cluster), check, build the
Tuner, run it, and keep the spec copy that ``resume`` and ``status`` read.

``run_sweep(spec)`` validates what can be checked before Ray starts (the store, the
Optuna storage, the resources), starts (or attaches to) Ray, and runs a
``ray.tune.Tuner`` whose trials are :func:`study.tune.trial.run_trial`, whose
searcher is :class:`~study.tune.search.CellSearcher` and whose driver callbacks are
:func:`default_callbacks`.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from study.config import ConfigError, SweepSpec, TrialConfig
from study.store import Store, join_uri
from study.tune.trial import run_trial

SPEC_FILE = "oodstudy_spec.json"


def storage_path(spec: SweepSpec) -> str:
    """Ray Tune's run directory: the spec's, else ``<store>/_runs`` (absolute for local paths)."""
    path = spec.storage_path or join_uri(spec.store, "_runs")
    return path if "://" in path else str(Path(path).expanduser().resolve())


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


def write_spec_copy(spec: SweepSpec) -> None:
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
    from study.tune.callbacks import ProgressLine, StoreCallback

    return [StoreCallback(spec.store, spec.name, spec.tune.metric), ProgressLine(spec)]


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

    from study.tune.search import CellSearcher, PerCellScheduler

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
        trains = [TrialConfig.model_validate(spec.trial_raw(point, {})).train for point in spec.grid_points()]
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


def prepare_environment() -> None:
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
    check_optuna_storage(spec)
    Store(spec.store)  # refuses a path that is not a store before any Ray work
    import torch  # noqa: F401  (loaded before Ray: inside a Ray job, MKL fails to load torch after ray.init)
    import ray

    if address is None and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        check_resources_locally(spec)
    prepare_environment()
    connect_ray(address)
    check_resources_on_cluster(spec)
    if not resume:
        write_spec_copy(spec)
    tuner = build_tuner(spec, fail_once_at_step=fail_once_at_step, tune_table=tune_table, restore=resume)
    results = tuner.fit()
    Store(spec.store).compact(spec.name)  # one fragment per partition keeps later reads fast
    return results
