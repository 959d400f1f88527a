"""What a study will cost before it runs: its grid points, members, packs and Tune trials,
the memory of one trial, and the time of the whole study from a measured step rate.

The counts come from the code that launches the study: :meth:`SweepSpec.pack_groups` and
``tune.trials_per_grid_point`` as :class:`~study.tune.search.CellSearcher` hands them out (each
cell's members in packs of ``pack.size``, the last pack of a cell holding the remainder);
a threshold search has no fixed count, so its budget per cell x cells is the upper bound.

The time comes from a *calibration*: for each distinct trial shape (configs that differ
only in what does not change the cost of a step or an evaluation: seeds, learning rates
and the other per-member values, step counts, schedules, mixture weights) one pack is
trained in this process with the real trainer (:func:`study.train.train_pack`) for a few
warm-up steps, then a few dozen timed steps, then one timed evaluation, with as many
torch threads as a trial of the study gets.  A trial then costs its setup + steps x step
time + evaluations x evaluation time, and the study is those trials run ``slots`` at a
time, a freed slot taking the next trial (:func:`study.tune.progress.eta_seconds`).

Pure parts first (counts, trial lists, shapes, slots, scheduling, ASHA), then the one
part that trains (:func:`calibrate`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from study.config import PACK_MEMBER_FIELDS, SweepSpec, TrialConfig, grid_point_id
from study.naming import cell_id, corner_sets
from study.tune.progress import eta_seconds

# Config keys whose value changes neither the cost of a training step nor that of an
# evaluation: trials that differ only in these share a shape (and one calibration).
COST_NEUTRAL = {f"train.{name}" for name in PACK_MEMBER_FIELDS} | {
    "train.steps",
    "train.eval_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.betas",
    "train.schedule",
    "train.min_lr_ratio",
    "train.grad_clip",
    "train.stop_when",
    "task.mix_weight",
    "task.nnz",
    "task.noise_std",
    "task.lasso_alpha",
    "task.ridge_lambda",
    "task.freq_range",
    "task.combo_alpha",
    "task.sparse_values",
    "pack.automatic",
}
# The calibration: warm-up steps, then timed steps, then one timed evaluation.
WARMUP_STEPS = 5
TIMED_STEPS = 40


# --------------------------------------------------------------------------- counts


@dataclass
class Counts:
    """What a study launches.  ``bounded``: a threshold search, whose members and trials
    are upper bounds (its budget per cell x cells)."""

    grid_points: int
    cells: int
    members: int
    trials: int
    pack_size: int
    bounded: bool = False
    per_cell_budget: int = 0


def counts(spec: SweepSpec) -> Counts:
    """Grid points, cells, members (grid points x trials_per_grid_point), packs = Tune trials."""
    points = spec.grid_points()
    K = spec.pack_size
    if spec.threshold is not None:
        search = spec.threshold
        points_per_cell = search.budget // search.seeds_per_point
        per_point = math.ceil(search.seeds_per_point / K)
        return Counts(
            len(points),
            len(points),
            len(points) * points_per_cell * search.seeds_per_point,
            len(points) * points_per_cell * per_point,
            K,
            bounded=True,
            per_cell_budget=search.budget,
        )
    groups = spec.pack_groups()
    quota = spec.tune.trials_per_grid_point
    members = sum(len(g) * quota for g in groups)
    trials = sum(math.ceil(len(g) * quota / K) for g in groups)
    return Counts(len(points), len({cell_id(p) for p in points}), members, trials, K)


# --------------------------------------------------------------------------- trials and shapes


@dataclass
class PlannedTrial:
    """One Tune trial as the study will launch it: its first member's config (a pack's
    members share everything that sets the cost), its members and the cell it trains."""

    cell: str
    cfg: TrialConfig
    members: int
    slot: int | None = None  # a threshold study's trial number within its cell (every axis end has each slot)


def first_params(spec: SweepSpec) -> dict[str, Any]:
    """The tuned values a planned trial is costed at: each tuned axis's first corner (the
    shipped specs tune only cost-neutral values; another tuned axis is named in a note)."""
    return corner_sets(spec.tune.params)[0]


def planned_trials(spec: SweepSpec) -> list[PlannedTrial]:
    """Every Tune trial of a study with a fixed count, in the order CellSearcher suggests
    them (round-robin over the cells, each cell's members in packs of ``pack.size``)."""
    points = spec.grid_points()
    params = first_params(spec)
    K, quota = spec.pack_size, spec.tune.trials_per_grid_point
    queues = []
    for group in spec.pack_groups():
        cfg = TrialConfig.model_validate(spec.trial_raw(points[group[0]], params))
        left = len(group) * quota
        sizes = []
        while left > 0:
            sizes.append(min(K, left))
            left -= K
        cell = grid_point_id(points[group[0]]) if len(group) == 1 else cell_id(points[group[0]])
        queues.append([PlannedTrial(cell, with_pack(cfg, size), size) for size in sizes])
    out = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def threshold_trials(spec: SweepSpec) -> list[list[list[PlannedTrial]]]:
    """A threshold study's upper bound: per cell, the trials of its budget (each point's
    seeds in packs of ``pack.size``), one list per axis end (every listed value)."""
    search = spec.threshold
    if search is None:
        raise ValueError(f"study {spec.name} has no threshold section: its trials are planned_trials(spec)")
    K = spec.pack_size
    per_point = [min(K, search.seeds_per_point - i) for i in range(0, search.seeds_per_point, K)]
    points_per_cell = search.budget // search.seeds_per_point
    out: list[list[list[PlannedTrial]]] = []
    for point in spec.grid_points():
        ends = []
        for value in search.axis_ends():
            cfg = TrialConfig.model_validate(spec.trial_raw({**point, search.axis: value, "train.seed": 0}, {}))
            sizes = [size for _ in range(points_per_cell) for size in per_point]
            ends.append(
                [
                    PlannedTrial(grid_point_id(point), with_pack(cfg, size), size, slot)
                    for slot, size in enumerate(sizes)
                ]
            )
        out.append(ends)
    return out


def with_pack(cfg: TrialConfig, size: int) -> TrialConfig:
    return cfg.model_copy(update={"pack": cfg.pack.model_copy(update={"size": size})})


def shape_key(cfg: TrialConfig) -> tuple:
    """What sets the cost of one step and one evaluation of a trial: its config less
    :data:`COST_NEUTRAL` (model shape, task sizes, batch, pack size, device, ...)."""
    return tuple(
        sorted(
            (k, repr(v))
            for k, v in cfg.flat().items()
            if not any(k == n or k.startswith(n + ".") for n in COST_NEUTRAL)
        )
    )


def evaluations(cfg: TrialConfig) -> int:
    """Evaluations of a trial that runs all its steps: every eval_every steps and at the end."""
    steps, every = cfg.train.steps, cfg.train.eval_every
    return steps // every + (1 if steps % every else 0)


@dataclass
class Shape:
    """Trials that share a cost per step and per evaluation, and their calibration."""

    key: tuple
    cfg: TrialConfig  # the first trial's config (its pack size is the shape's)
    trials: list[PlannedTrial] = field(default_factory=list)
    calibration: "Calibration | None" = None

    @property
    def count(self) -> int:
        """Tune trials of this shape (a threshold study's axis ends of one slot count once)."""
        return len(self.trials) if self.trials[0].slot is None else len({(t.cell, t.slot) for t in self.trials})

    def calibrated(self) -> "Calibration":
        """The shape's calibration (see :func:`calibrate`); an error before it is measured."""
        if self.calibration is None:
            raise ValueError(f"the shape of {self.cfg.task.family} {self.cfg.model.size} has no calibration yet")
        return self.calibration

    def seconds(self, trial: PlannedTrial) -> float:
        """A trial's estimate: setup + steps x s/step + evaluations x eval s (a calibrated shape)."""
        c = self.calibrated()
        return c.setup_s + trial.cfg.train.steps * c.step_s + evaluations(trial.cfg) * c.eval_s


def group_shapes(trials: list[PlannedTrial]) -> dict[tuple, Shape]:
    shapes: dict[tuple, Shape] = {}
    for trial in trials:
        key = shape_key(trial.cfg)
        shapes.setdefault(key, Shape(key, trial.cfg)).trials.append(trial)
    return shapes


def shape_labels(shapes: list[Shape]) -> list[str]:
    """A short name per shape: the model, then the cost keys in which the shapes differ, then K."""
    varying = sorted({k for s in shapes for k, v in s.key} - {"pack.size", "model.size"})
    varying = [k for k in varying if len({dict(s.key).get(k) for s in shapes}) > 1]
    labels = []
    for s in shapes:
        cfg = s.cfg
        n_layer, n_head, d = cfg.model.shape
        model = cfg.model.size if (n_layer, n_head, d) == _preset(cfg.model.size) else f"{n_layer}L/{n_head}H/d{d}"
        parts = [f"{cfg.task.family} {model}"]
        key = dict(s.key)
        parts += [f"{k.rsplit('.', 1)[-1]}={_plain(key.get(k))}" for k in varying]
        parts.append(f"K={cfg.pack.size}")
        labels.append(" ".join(parts))
    return labels


def _preset(size: str) -> tuple[int, int, int]:
    from study.config import MODEL_PRESETS

    return MODEL_PRESETS[size]


def _plain(text: str | None) -> str:
    return "-" if text is None else text.strip("'")


# --------------------------------------------------------------------------- slots and schedule


@dataclass
class Machine:
    """Where the study would run: CPUs, GPUs and the trial memory budget."""

    where: str  # "this machine" or "the cluster at <address>"
    cpus: float
    gpus: float
    nodes: list[dict[str, float]]  # per alive node: {"CPU": .., "GPU": .., "memory": ..}


def local_machine() -> Machine:
    import torch

    cpus = float(os.cpu_count() or 1)
    gpus = float(torch.cuda.device_count())
    return Machine("this machine", cpus, gpus, [{"CPU": cpus, "GPU": gpus}])


def slots(spec: SweepSpec, machine: Machine) -> int:
    """Trials at a time: per node floor(CPUs / resources.cpus) (and GPUs / resources.gpus),
    summed over nodes, capped by max_concurrent."""
    total = 0
    eps = 1e-9
    for node in machine.nodes:
        n = math.floor(node.get("CPU", 0) / spec.resources.cpus + eps)
        if spec.resources.gpus > 0:
            n = min(n, math.floor(node.get("GPU", 0) / spec.resources.gpus + eps))
        total += max(0, n)
    return min(total, spec.max_concurrent) if spec.max_concurrent else total


def schedule_seconds(trial_seconds: list[float], n_slots: int) -> float:
    """Seconds for the trials run ``n_slots`` at a time, a freed slot taking the next one."""
    if n_slots < 1:
        raise ValueError(f"{n_slots} trials at a time: no trial fits, so there is no schedule")
    seconds = eta_seconds(trial_seconds, n_slots, 1.0)
    assert seconds is not None  # known at a rate of one "step" (second) per second
    return seconds


def asha_rungs(spec: SweepSpec, n_evals: int) -> list[int]:
    """The evaluations at which ASHA may stop a trial (grace_period x reduction_factor^i < max_t)."""
    es = spec.early_stopping
    rungs, t = [], float(es.grace_period)
    while t < n_evals:
        rungs.append(int(t))
        t *= es.reduction_factor
    return rungs


def asha_kept_share(spec: SweepSpec, n_evals: int) -> float:
    """The share of a trial's evaluation periods that run when every rung keeps exactly
    1 / reduction_factor of the trials reaching it (ASHA's ideal; with few trials per grid
    point it keeps more, so this is the most ASHA saves)."""
    if n_evals <= 0:
        return 1.0
    rf = spec.early_stopping.reduction_factor
    done, kept, last = 0.0, 1.0, 0
    for rung in asha_rungs(spec, n_evals):
        done += kept * (rung - last)
        kept /= rf
        last = rung
    done += kept * (n_evals - last)
    return done / n_evals


# --------------------------------------------------------------------------- calibration


@dataclass
class Calibration:
    """Measured on one pack: seconds per training step (the pack's, all members), per
    evaluation (all members), and for the setup before the first step (tasks, evaluation
    sets, model)."""

    step_s: float
    eval_s: float
    setup_s: float
    timed_steps: int
    device: str
    threads: int


def calibration_config(cfg: TrialConfig, total: int, warmup: int, device: str) -> TrialConfig:
    """``cfg`` cut to ``total`` steps with one evaluation (at the end), a log at every
    ``warmup`` steps (the marks) and probes at that evaluation."""
    raw = cfg.to_dict()
    raw["train"].update(
        {
            "steps": total,
            "eval_every": total,
            "log_every": warmup,
            "checkpoint_every": None,
            "warmup_steps": 0,
            "stop_when": None,
            "device": device,
        }
    )
    probes = raw["task"].get("probes")
    if isinstance(probes, dict) and probes.get("every") is not None:
        probes["every"] = None  # the calibration's evaluation probes, as a trial's probed ones do
    return TrialConfig.model_validate(raw)


def calibrate(
    cfg: TrialConfig,
    *,
    threads: int,
    device: str = "auto",
    warmup: int = WARMUP_STEPS,
    timed: int = TIMED_STEPS,
    niceness: int | None = None,
) -> Calibration:
    """Train one pack of ``cfg`` (``pack.size`` members) for ``warmup`` + ``timed`` steps and
    one evaluation, with ``threads`` torch threads; time the last ``timed`` steps and the
    evaluation (the device synchronised at each mark).

    It trains in a thread of its own at ``niceness`` (default: what Ray gives its workers,
    :func:`ray_worker_niceness`): on a shared CPU a trial competes at that priority, and a
    calibration at the shell's priority would measure a rate the trials never get."""
    import torch

    from study.train import pack_members, pick_device, train_pack

    warmup, timed = max(1, warmup), max(1, timed)
    total = warmup + timed
    run_cfg = calibration_config(cfg, total, warmup, device)
    dev = pick_device(run_cfg.train.device)
    marks: dict[int, float] = {}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def progress(step: int, losses: dict[str, float]) -> None:
        sync()
        marks[step] = time.perf_counter()

    times: dict[str, float] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            at_trial_niceness(niceness)
            started = time.perf_counter()
            train_pack(pack_members(run_cfg), [f"plan-{k}" for k in range(run_cfg.pack.size)], progress=progress)
            sync()
            times.update(started=started, ended=time.perf_counter())
        except BaseException as err:  # noqa: BLE001  (raised again in the caller's thread)
            failure.append(err)

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        worker = threading.Thread(target=run, name="oodstudy-plan-calibration")
        worker.start()
        worker.join()
    finally:
        torch.set_num_threads(before)
    if failure:
        raise failure[0]
    started, ended = times["started"], times["ended"]
    step_s = (marks[total] - marks[warmup]) / timed
    return Calibration(
        step_s=step_s,
        eval_s=ended - marks[total],
        setup_s=max(0.0, marks[warmup] - started - warmup * step_s),
        timed_steps=timed,
        device=str(dev),
        threads=max(1, threads),
    )


def ray_worker_niceness() -> int:
    """The niceness Ray starts its workers (the trials) at: ``RAY_worker_niceness``, 15 by default."""
    try:
        return int(os.environ.get("RAY_worker_niceness", "15"))
    except ValueError:
        return 15


def at_trial_niceness(niceness: int | None) -> None:
    """Lower the calling thread's priority to ``niceness`` (Linux: niceness is per thread;
    threads it starts inherit it).  Nothing happens where that is not possible."""
    if niceness is None:
        niceness = ray_worker_niceness()
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if niceness > current:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except (AttributeError, OSError):
        pass


def trial_threads(spec: SweepSpec) -> int:
    """Torch threads of one trial, as :func:`study.tune.trial.run_trial` sets them."""
    return spec.resources.threads


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"{one:.1f} (1 min), {five:.1f} (5 min)"
    except OSError:
        return "unknown"
