"""Run a study on Ray Tune: connect (embedded local Ray or a cluster), check, build the
Tuner, run it, and keep the spec copy that ``resume`` and ``status`` read.

``run_sweep(spec)`` validates what can be checked before Ray starts (the store, the
Optuna storage, the resources), starts (or attaches to) Ray, and runs a
``ray.tune.Tuner`` whose trials are :func:`study.tune.trial.run_trial`, whose
searcher is :class:`~study.tune.search.CellSearcher` and whose driver callbacks are
:func:`default_callbacks`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from shlex import quote
from typing import Any

import pyarrow.fs as pafs

from study.config import ConfigError, SweepSpec, TrialConfig
from study.errors import StoreError
from study.interrupt import reset_ctrl_c, sigterm_blocked, stop_on_sigterm
from study.memory import available_bytes, check_fits
from study.naming import cell_id, corner_sets
from study.store import join_uri, open_filesystem  # Store (duckdb, pandas): imported where a sweep runs
from study.store.lease import StudyLease
from study.store.schema import ENDED
from study.tune.autopack import resolve_pack_size
from study.tune.progress import board_title
from study.tune.recovery import set_aside_damaged_run_state
from study.tune.trial import named_trainable, run_trial

SPEC_FILE = "oodstudy_spec.json"
LOOPBACK = "127.0.0.1"
# Seconds to wait for an answering address to turn out to be a Ray cluster.
ATTACH_WAIT_S = 6


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


def trial_configs(spec: SweepSpec) -> list[tuple[str, TrialConfig]]:
    """(where, config) of every grid point at the corners of the tuned axes (as ``check_trials``)."""
    corners = corner_sets(spec.tune.params)
    out = []
    for point in spec.grid_points():
        for params in corners:
            where = ", ".join(f"{k}={v}" for k, v in {**point, **params}.items()) or "the base config"
            out.append((where, TrialConfig.model_validate(spec.trial_raw(point, params))))
    return out


def check_memory(spec: SweepSpec, budget: int, where: str) -> None:
    """Every trial of the study must fit ``budget`` bytes (see :mod:`study.memory`)."""
    for context, cfg in trial_configs(spec):
        check_fits(cfg, budget, where, context=context)


def check_resources_locally(spec: SweepSpec) -> None:
    """Before starting an embedded Ray: can this machine run even one trial?"""
    import torch

    cpus = os.cpu_count() or 1
    if spec.resources.cpus > cpus:
        raise ConfigError(
            f"resources.cpus={spec.resources.cpus} but this machine has {cpus} CPUs; "
            "lower resources.cpus or attach to a cluster with --address"
        )
    gpus = torch.cuda.device_count()
    if spec.resources.gpus > gpus:
        raise ConfigError(
            f"resources.gpus={spec.resources.gpus} but this machine has {gpus} GPUs; "
            "set resources.gpus=0 or attach to a GPU cluster with --address"
        )
    device = "cuda" if spec.resources.gpus > 0 else "cpu"
    check_memory(spec, *available_bytes(device, spec.resources.gpus))


def check_resources_on_cluster(spec: SweepSpec) -> None:
    """Some alive node must offer the per-trial CPUs and GPUs (and, for CPU trials, the
    memory a trial needs), else no trial could ever start."""
    import ray

    fitting = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        if res.get("CPU", 0) >= spec.resources.cpus and res.get("GPU", 0) >= spec.resources.gpus:
            fitting.append(res)
    if not fitting:
        raise ConfigError(
            f"no node of the cluster offers resources.cpus={spec.resources.cpus} and "
            f"resources.gpus={spec.resources.gpus} for one trial; lower them or add such a node"
        )
    if spec.resources.gpus == 0:
        memory = max(int(res.get("memory", 0)) for res in fitting)
        if memory:
            check_memory(spec, memory, "the memory of the cluster's largest fitting node")


# filesystems every node of a cluster can mount at the same path (FUSE mounts of buckets included)
SHARED_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "ceph", "glusterfs", "beegfs", "9p"}


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem ``path`` is (or would be) on, from /proc/mounts (None elsewhere)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    target = Path(path).resolve()
    best = max((m for m in mounts if target.is_relative_to(m[0])), key=lambda m: len(m[0]), default=None)
    return best[1] if best else None


def check_storage_on_cluster(spec: SweepSpec, hosts: set[str], fs_type: str | None) -> None:
    """On a cluster of several machines, Tune's run directory (checkpoints) and the Optuna journal
    beside it must be reachable from every node: a bucket, or a shared filesystem."""
    path = storage_path(spec)
    if len(hosts) < 2 or "://" in path:
        return
    if fs_type and (fs_type in SHARED_FILESYSTEMS or fs_type.startswith("fuse.")):
        return
    raise ConfigError(
        f"the run directory {path} is on this node's own disk ({fs_type or 'unknown filesystem'}) but the "
        f"cluster has {len(hosts)} machines, whose trials could not reach its checkpoints, and the Optuna "
        "journal there would stay on one node; set --store (or storage_path) to s3://... or gs://... with "
        "optuna_storage: <RDB URL, e.g. postgresql://user@host/optuna>, or to a path on NFS mounted on every node"
    )


def cluster_hosts() -> set[str]:
    """The addresses of the machines of the connected cluster's alive nodes."""
    import ray

    return {node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` or ``ray://host:port`` address must accept a TCP connection and a
    gRPC handshake within ``timeout_s`` each (else ray.init would retry, or hang, for
    minutes); ``auto`` is left to Ray, and so is the handshake when Ray uses TLS."""
    if address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if "://" in target or not sep or not host or not port.isdigit():
        raise ConfigError(
            f"--address {address}: expected host:port (the GCS, e.g. 10.0.0.5:6379), "
            "ray://host:10001 (Ray Client) or auto; pass one of these (the dashboard's "
            "http:// address is for `ray job submit`)"
        )
    kind = "Ray Client port (10001 by default)" if address.startswith("ray://") else "GCS port (6379 by default)"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        cause = f"no answer within {timeout_s:g} s" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise ConfigError(
            f"--address {address}: no Ray cluster answers there ({cause}); check "
            f"that `ray start --head` runs on {host}, that {port} is its {kind} and that no firewall blocks "
            "it, or drop --address to run an embedded local Ray"
        ) from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # the handshake below is a plaintext one
    import grpc  # Ray's GCS and Ray Client speak gRPC; a port that does not would hang ray.init

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise ConfigError(
            f"--address {address}: something answers there, but not gRPC as a Ray cluster does (no "
            f"handshake within {timeout_s:g} s); check that {port} is the {kind} of `ray start --head` "
            f"on {host}, not another service (the dashboard's http:// port is for `ray job submit`)"
        ) from None
    finally:
        channel.close()


def connect_ray(address: str | None, study: str | None = None) -> str | None:
    """Attach to a cluster (``auto``, ``host:port``, ``ray://...``, or RAY_ADDRESS from
    ``ray job submit``), or start an embedded local Ray bound to loopback.

    Embedded, every port listens on 127.0.0.1: Ray binds its node address, the GCS,
    raylet, object manager, worker, dashboard agent, metrics export and runtime-env
    agent ports to the node IP, and a node IP on loopback is what Ray picks for a
    single-machine instance when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off (Ray's
    own switch, read by ``ray._private.ray_constants``); the dashboard is bound with
    ``dashboard_host``.  Token authentication is on as well (Ray's default for a new
    local instance).  Returns the embedded dashboard's ``host:port`` (None otherwise).
    ``study`` names the driver on the dashboard's Jobs page (its ``job_name`` metadata,
    ``oodstudy <study>``).
    """
    import ray
    from ray.job_config import JobConfig

    if ray.is_initialized():
        return None
    job_config = JobConfig(metadata={"job_name": job_name(study)}) if study else None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_address(address)
        # Ray retries a GCS that does not answer once a second, 20 times; a port that
        # accepts TCP but is no GCS (a proxy, another service) gets ATTACH_WAIT_S seconds
        wait_key = "RAY_gcs_server_port_wait_time_s"
        before = os.environ.get(wait_key)
        os.environ.setdefault(wait_key, str(ATTACH_WAIT_S))
        try:
            # Ray types job_config as JobConfig though its default is None (and None is what it reads as "none")
            ray.init(address=address, log_to_driver=False, job_config=job_config)  # type: ignore[arg-type]
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as err:
            raise ConfigError(
                f"--address {address}: cannot attach to a Ray cluster there "
                f"({' '.join(str(err).split())[:300]}); check the address, the cluster's "
                "Ray version and its token (RAY_AUTH_TOKEN)"
            ) from None
        finally:
            if before is None:
                os.environ.pop(wait_key, None)
        return None
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"  # for Ray processes started below
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when ray.init picks the node IP
    # address="local": always a new embedded Ray, even if `ray start` left a cluster on this machine.
    # Its processes start with SIGTERM blocked (a signal mask is inherited), as Ray blocks SIGINT
    # for them: `timeout` or `kill -- -PGID` signal the whole process group, and the driver must
    # outlive neither its GCS nor its raylet while it stops Tune gracefully (Ray's shutdown
    # still ends them).
    with sigterm_blocked(), dashboard_agent_port(free_port(LOOPBACK)):
        context = ray.init(
            address="local",
            _node_ip_address=LOOPBACK,
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            log_to_driver=False,
            job_config=job_config,  # type: ignore[arg-type]  # Ray: JobConfig with a None default
        )
    dashboard = getattr(context, "dashboard_url", None) or None
    if dashboard:
        print(dashboard_hint(dashboard, study), file=sys.stderr)
    return dashboard


def job_name(study: str) -> str:
    """The name of a study's driver on the dashboard's Jobs page (its ``job_name`` metadata)."""
    return f"oodstudy {study}"


def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def dashboard_agent_port(port: int) -> Iterator[None]:
    """While it is open, a local Ray started by ``ray.init`` runs its dashboard agent's HTTP
    server on ``port``.  Ray 2.60's ``ray.init`` has no argument for that port and always asks
    for 52365 (``RayParams``' default); when another Ray on the machine holds it, the agent
    cannot bind, and the dashboard's Log tabs answer HTTP 500 for the whole run.  ``ray.init``
    builds its parameters through the module attribute replaced here, so the port is given
    the way ``ray start --dashboard-agent-listen-port`` gives it."""
    from ray._private import parameter

    original = getattr(parameter, "RayParams", None)
    if original is None:  # another Ray: its own default port, as before
        yield
        return

    class WithAgentPort(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("dashboard_agent_listen_port", port)
            super().__init__(*args, **kwargs)

    parameter.RayParams = WithAgentPort  # type: ignore[misc]
    try:
        yield
    finally:
        parameter.RayParams = original  # type: ignore[misc]


def dashboard_hint(url: str, study: str | None = None) -> str:
    """How to open the embedded dashboard: its URL, the token it asks for when token
    authentication is on (Ray 2.60 turns it on for a new local Ray unless RAY_AUTH_MODE=disabled),
    and where the study shows there: its driver's job, and the progress board's log (a
    driver's own output is on the dashboard only for jobs sent through the Jobs API)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        token_auth = is_token_auth_enabled()
    except ImportError:  # another Ray version: go by the documented switch
        token_auth = os.environ.get("RAY_AUTH_MODE", "token").lower() == "token"
    hint = f"Ray dashboard: http://{url}"
    if token_auth:
        hint += " (it asks for a token: paste the output of `ray get-auth-token`)"
    if study:
        hint += (
            f"; the study is the job named '{job_name(study)}' on the Jobs page, and its progress lines "
            f"are the log of the actor '{board_title(study)}' listed there"
        )
    return hint


def run_filesystem(spec: SweepSpec):
    """``(pyarrow filesystem, root path in it)`` of the run directory, opened as the store opens
    its URIs (an ``s3://...?endpoint_override=...`` query, small files in a single PUT), for
    Tune (``storage_filesystem``) and the spec copy alike."""
    return open_filesystem(storage_path(spec))


def write_spec_copy(spec: SweepSpec) -> None:
    fs, root = run_filesystem(spec)
    directory = f"{root}/{spec.name}"
    fs.create_dir(directory, recursive=True)
    with fs.open_output_stream(f"{directory}/{SPEC_FILE}") as out:
        out.write(spec.model_dump_json(indent=2).encode())


def read_spec_copy(name: str, store: str, storage: str | None = None) -> SweepSpec:
    import pyarrow.fs as pafs

    try:
        probe = SweepSpec(name=name, store=store, storage_path=storage)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise ConfigError(
            f"{name!r} cannot be a study name: {err.errors()[0]['msg'] if hasattr(err, 'errors') else err}"
        ) from None
    fs, root = run_filesystem(probe)
    path = f"{root}/{name}/{SPEC_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        # a path that is a file holds no study: say so rather than "no study named"
        option, given = ("--storage-path", storage) if storage is not None else ("--store", store)
        given_fs, given_root = open_filesystem(given)
        if given_fs.get_file_info(given_root).type == pafs.FileType.File:
            what = "a run directory" if storage is not None else "a store"
            raise ConfigError(
                f"{option} {given}: is a file, not {what}; pass the directory the run wrote "
                f"(e.g. {option} ./results{'/_runs' if storage is not None else ''})"
            )
        raise ConfigError(
            f"no study named {name!r} under {storage_path(probe)}; "
            "check the name and --store (or --storage-path) of the run"
        )
    with fs.open_input_stream(path) as f:
        spec = SweepSpec.model_validate_json(f.read())
    if storage is None:  # found in <store>/_runs: that store is the study's, whatever cwd the run had
        spec = spec.model_copy(update={"store": store, "storage_path": None})
    return spec


def default_callbacks(spec: SweepSpec, searcher=None) -> list:
    """The driver callbacks of every study: the gauges, the store writer and the progress
    line (each reads Tune's results, in any order); with a threshold search, the writer of
    its ``thresholds`` rows (it reads them off ``searcher``); last, :class:`ForgetRows`,
    which takes the rows out of each result once the others have read them."""
    from study.tune.callbacks import ForgetRows, ProgressLine, StoreCallback, StudyGauges, ThresholdTable

    callbacks = [
        StudyGauges(spec),
        StoreCallback(spec.store, spec.name, spec.tune.metric),
        ProgressLine(spec, storage_path(spec)),
    ]
    if spec.threshold is not None and searcher is not None and hasattr(searcher, "rows"):
        callbacks.append(ThresholdTable(spec.store, spec.name, searcher))
    return callbacks + [ForgetRows()]


def trial_name(trial) -> str:
    """A trial's name in Tune's output, logs and run directory: its cell, then its id."""
    return f"{trial.config.get('cell', 'all')}_{trial.trial_id}"


def trial_dirname(trial) -> str:
    """:func:`trial_name` with only characters that are safe in a directory name."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", ",", trial_name(trial))


def ended_members(spec: SweepSpec) -> dict[str, dict]:
    """Member trial id -> its trials row (status, steps, score, ...) for every member the
    store records as ended: what a resumed run must not train again."""
    import pandas as pd

    from study.store import Store

    trials = Store(spec.store, create=False).frame("trials", study=spec.name)
    done = trials[trials["status"].isin(ENDED)]
    columns = ["status", "steps", "score", "n_params", "device", "node"]
    return {
        row["trial_id"]: {c: (None if pd.isna(row[c]) else row[c]) for c in columns}
        for row in done[["trial_id", *columns]].to_dict("records")
    }


def ended_per_point(spec: SweepSpec) -> dict[str, int]:
    """Grid point id -> how many of its trials the store records as ended."""
    from study.store import Store

    trials = Store(spec.store, create=False).frame("trials", study=spec.name)
    return trials[trials["status"].isin(ENDED)].groupby("cell").size().to_dict()


def threshold_trial(spec: SweepSpec, point: dict, value, seed: int) -> dict:
    """The raw trial config of one seed of a threshold search: the cell's grid point, the
    axis value and the seed (a module-level function: Tune pickles the searcher)."""
    assert spec.threshold is not None, "a threshold search's spec"
    return spec.trial_raw({**point, spec.threshold.axis: value, "train.seed": seed}, {})


def threshold_records(spec: SweepSpec) -> list:
    """The finished seeds of a threshold study as the store records them, for a resume
    without readable Tune state (see :func:`records_from_trials`)."""
    from study.store import Store

    return records_from_trials(Store(spec.store, create=False).frame("trials", study=spec.name), spec.threshold)


def records_from_trials(trials, search) -> list:
    """Every ended seed of a threshold study as a :class:`~study.tune.threshold.Record`, from the store's
    ``trials`` rows (a pandas frame with ``grid`` (JSON), ``status``, ``score`` and, when
    present, ``start_time``), in the order the seeds started: its cell (the grid point less
    the axis and the seed), axis value and seed from ``grid``, its outcome by
    :func:`~study.tune.threshold.outcome` from the status and ``score`` (which holds the success metric in a
    threshold study).  Trials that did not end, or without the axis in their grid, are left
    out.  A resume without Tune state and the report both read the search this way."""
    import json

    import pandas as pd

    from study.tune.threshold import Record, outcome

    if trials.empty:
        return []
    ended = trials[trials["status"].isin(ENDED)]
    if "start_time" in ended:
        ended = ended.sort_values("start_time", kind="stable")
    out = []
    for row in ended.to_dict("records"):
        grid = json.loads(row["grid"] or "{}") if isinstance(row.get("grid"), str) else {}
        if search.axis not in grid:
            continue
        cell = cell_id({k: v for k, v in grid.items() if k != search.axis})
        score = None if pd.isna(row.get("score")) else row["score"]
        out.append(
            Record(cell, grid[search.axis], grid.get("train.seed"), outcome(search.success, row["status"], score))
        )
    return out


def threshold_searcher(spec: SweepSpec, records=()):
    """The study's :class:`~study.tune.threshold.ThresholdSearcher`: one search per grid
    point of the other axes (the cells), seeds as trials or packs."""
    import functools

    from study.tune.threshold_searcher import ThresholdSearcher

    assert spec.threshold is not None, "a threshold search's spec"
    return ThresholdSearcher(
        spec.threshold,
        spec.grid_points(),
        functools.partial(threshold_trial, spec),
        pack_size=spec.pack_size,
        study=spec.name,
        records=records,
    )


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

    ended = ended_members(spec) if restore else None
    resources = {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus}
    if trainable is not None:
        trainable = tune.with_resources(trainable, resources)
    else:  # resources on the function first: Tune's class of it is then the named one itself
        function = tune.with_parameters(
            run_trial, fail_once_at_step=fail_once_at_step, ended=ended, threads=spec.resources.threads
        )
        trainable = named_trainable(tune.with_resources(function, resources))
    path = storage_path(spec)
    # a remote run directory goes to Tune as a filesystem and a path inside it
    filesystem, root = run_filesystem(spec) if "://" in path else (None, path)
    if restore:
        experiment = f"{root}/{spec.name}"
        if filesystem is None:  # a local run directory: set aside what a cut-short write left unreadable
            for source, target in set_aside_damaged_run_state(experiment):
                print(
                    f"oodstudy: {source} cannot be read (a write cut short, e.g. by a full disk); "
                    f"set aside as {target}",
                    file=sys.stderr,
                )
        if tune.Tuner.can_restore(experiment, storage_filesystem=filesystem):
            return tune.Tuner.restore(
                experiment, trainable=trainable, resume_errored=True, storage_filesystem=filesystem
            )
        ended_points = ended_per_point(spec)
        print(
            f"oodstudy: no readable Ray Tune state in {join_uri(path, spec.name)}; continuing study {spec.name} "
            f"from the store: {sum(ended_points.values())} trials ended there and count, the others start over",
            file=sys.stderr,
        )
        if searcher is None and spec.threshold is not None:
            searcher = threshold_searcher(spec, threshold_records(spec))
        searcher = searcher or CellSearcher(spec, journal_path(spec), ended=ended_points)
    if searcher is None and spec.threshold is not None:
        searcher = threshold_searcher(spec)
    if callbacks is None:
        callbacks = default_callbacks(spec, searcher)
    scheduler = None
    if spec.early_stopping.type == "asha":
        trains = [TrialConfig.model_validate(spec.trial_raw(point, {})).train for point in spec.grid_points()]
        n_evals = max(math.ceil(t.steps / t.eval_every) for t in trains)  # reports per trial, the last included
        scheduler = PerCellScheduler(
            spec.tune.metric,
            spec.tune.mode,
            spec.early_stopping.grace_period,
            spec.early_stopping.reduction_factor,
            max_t=n_evals,
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher or CellSearcher(spec, journal_path(spec)),
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=spec.max_concurrent or None,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=root,
            storage_filesystem=filesystem,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=1 if tune_table else 0,
        ),
    )


class InterruptWatch(logging.Filter):
    """Watches Ray Tune's log for its Ctrl-C handling: Tune stops the trials, saves the
    experiment and returns from ``fit`` as if done, logging that it was interrupted (with
    a ``Tuner.restore`` hint that oodstudy users do not need; it is dropped, the CLI
    prints ``oodstudy resume`` instead)."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Stop signal received"):
            self.interrupted = True
        return "has been interrupted, but the most recent state was saved" not in message


def prepare_environment() -> None:
    # the experiment state (searcher included) is snapshotted at least every 2 s,
    # so a killed driver loses at most a couple of seconds of bookkeeping
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")


def with_absolute_paths(spec: SweepSpec) -> SweepSpec:
    """The spec with its local ``store`` and ``storage_path`` made absolute (against the
    current directory), so that the spec copy ``status`` and ``resume`` read names the
    same places from any directory."""
    update = {}
    for field in ("store", "storage_path"):
        value = getattr(spec, field)
        if value and "://" not in value:
            update[field] = str(Path(value).expanduser().resolve())
    return spec.model_copy(update=update) if update else spec


def check_new_study(spec: SweepSpec) -> None:
    """``run`` starts a study: refuse one that already exists in the store (rows, or the
    spec copy of an earlier run), pointing at ``resume`` and ``--name``."""
    from study.store import Store

    fs, root = run_filesystem(spec)
    copy = fs.get_file_info(f"{root}/{spec.name}/{SPEC_FILE}").type != pafs.FileType.NotFound
    try:
        in_store = spec.name in Store(spec.store, create=False).studies()
    except StoreError:  # no store yet
        in_store = False
    if copy or in_store:
        where = (
            "has rows in the store" if in_store else f"was started before (its spec copy is in {storage_path(spec)})"
        )
        raise StoreError(
            f"study {spec.name} already exists: it {where}; continue it with: "
            f"oodstudy resume {quote(spec.name)} --store {quote(spec.store)}, or pick a new --name for a new study"
        )


def check_resumable_store(spec: SweepSpec) -> None:
    """``resume`` continues a study in its store: the store must be there (a resume never
    makes a new, empty store somewhere else)."""
    from study.store import Store

    Store(spec.store, create=False)


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    fail_once_at_step: int | None = None,
    tune_table: bool = False,
):
    """Run (or resume) a study to completion; returns Tune's ResultGrid.

    Everything that can refuse the run does so before anything is written: the
    Optuna storage, the store URI (probed, not created), this machine's CPUs, GPUs and
    memory (embedded Ray), the cluster's address and nodes.  Then the driver takes the
    study's lease (:mod:`study.store.lease`): a second driver of the same study is
    refused, and ``run`` of a study that exists is refused (``resume`` continues it).
    After Ctrl-C or SIGTERM, Tune stops the trials and saves the experiment, and this
    raises KeyboardInterrupt (the store holds every row up to each trial's last
    checkpoint; ``resume=True`` continues).  The lease is given back however the run ends.
    """
    from study.store import Store  # not at module level: `oodstudy trial` imports this module, needs no store

    spec = with_absolute_paths(spec)
    check_optuna_storage(spec)
    if resume:
        check_resumable_store(spec)
    Store.check_target(spec.store)  # refuses a path that is not (and cannot become) a store, creating nothing
    if address is not None:
        check_address(address)
    import torch  # noqa: F401  (loaded before Ray: inside a Ray job, MKL fails to load torch after ray.init)
    import ray

    if address is None and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        check_resources_locally(spec)
    fs, root = open_filesystem(spec.store)
    store_existed = fs.get_file_info(root).type != pafs.FileType.NotFound
    lease = StudyLease(spec.store, spec.name)
    lease.acquire("resume" if resume else "run")
    started = False
    try:
        if not resume:
            check_new_study(spec)
            spec = resolve_pack_size(spec)  # pack.size auto: measured here, before Ray starts
        prepare_environment()
        connect_ray(address, study=spec.name)
        stop_on_sigterm()  # after ray.init, which sets its own SIGTERM handler
        check_resources_on_cluster(spec)
        check_storage_on_cluster(spec, cluster_hosts(), filesystem_type(storage_path(spec)))
        Store(spec.store)
        started = True
        if not resume:
            write_spec_copy(spec)
        tuner = build_tuner(spec, fail_once_at_step=fail_once_at_step, tune_table=tune_table, restore=resume)
        watch, tune_log = InterruptWatch(), logging.getLogger("ray.tune.tune")
        tune_log.addFilter(watch)
        try:
            results = tuner.fit()
        finally:
            tune_log.removeFilter(watch)
            reset_ctrl_c()  # Tune leaves its graceful-stop handler installed after a fit
        if watch.interrupted:  # Tune stopped gracefully on Ctrl-C / SIGTERM: the run did not finish
            raise KeyboardInterrupt
        Store(spec.store).compact(spec.name)  # one fragment per partition keeps later reads fast
        return results
    finally:
        lease.release()
        if not started and not store_existed:  # refused before the store was made: leave nothing behind
            remove_empty_dirs(fs, [lease.directory, root])


def remove_empty_dirs(fs, paths: list[str]) -> None:
    """Remove each directory of ``paths`` (in order) that exists and is empty."""
    for path in paths:
        try:
            if fs.get_file_info(path).type == pafs.FileType.Directory and not fs.get_file_info(
                pafs.FileSelector(path, recursive=False)
            ):
                fs.delete_dir(path)
        except OSError:
            return
