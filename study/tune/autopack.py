"""``pack: {size: auto}``: how many models one trial trains at once, measured, not guessed.

A pack of K members trains K models in one process with batched weights
(:mod:`study.model`): on a device with idle width (a GPU; a CPU whose kernels are
launch-bound for small models) K models cost less than K times one.  Past some K the
device is full and the per-model rate stops rising, or falls (a bigger working set
leaves the caches).  The size a study wants is the largest K that still *raises* the
rate per model, and fits the memory a trial may use.

The measure: for each distinct trial shape (:func:`study.tune.plan.group_shapes`), one
pack per candidate K (1, 2, 4, ... up to the study's bound, :meth:`SweepSpec.pack_bound`)
is trained for a few warm-up and timed steps with the real trainer, at the torch threads
and niceness a trial gets (:func:`study.tune.plan.calibrate`).  Its rate per model is
``K / seconds per step``.  Walking up the candidates, a K is taken while its rate per model
is at least :data:`GAIN` times the best smaller K's, and the walk stops at the first K that
is not (a bigger K is then not measured) or does not fit the memory.  With several shapes
the study takes the smallest of their choices: every shape then runs at a K no slower
per model than one model alone.

The choice replaces ``auto`` in the spec before the run (and in the study's copy of its
spec, so ``resume`` keeps it); each trial's stored config carries ``pack.size`` and
``pack.automatic: true``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from study.config import SweepSpec
from study.errors import ConfigError

if TYPE_CHECKING:
    from study.tune.plan import Calibration, PlannedTrial

# A bigger pack is taken only when it raises the rate per model by at least this factor
# over the best smaller pack: timing noise of a few-dozen-step calibration on a shared
# CPU is a few percent, and a pack that gains less is not worth its larger memory.
GAIN = 1.10
WARMUP_STEPS = 3
TIMED_STEPS = 20


def candidate_sizes(bound: int) -> list[int]:
    """1, 2, 4, ... below ``bound``, then ``bound`` itself (a cell of 6 members may take 6)."""
    sizes, k = [], 1
    while k < bound:
        sizes.append(k)
        k *= 2
    return sizes + [max(1, bound)]


def choose_size(rates: dict[int, float], gain: float = GAIN) -> int:
    """The K a walk up ``rates`` (K -> model-steps per second, in increasing K) stops at:
    each K is taken while its rate is >= ``gain`` x the best taken so far; the first K that
    falls short ends the walk."""
    sizes = sorted(rates)
    if not sizes:
        raise ValueError("choose_size: no pack size was measured")
    best = sizes[0]
    for size in sizes[1:]:
        if rates[size] < gain * rates[best]:
            break
        best = size
    return best


@dataclass
class ShapeChoice:
    """One trial shape's measure: its label, model-steps per second for each K measured,
    the K chosen, and why the walk stopped."""

    label: str
    rates: dict[int, float] = field(default_factory=dict)
    size: int = 1
    stopped: str = ""


@dataclass
class PackChoice:
    """The study's pack size and what it was chosen from."""

    size: int
    bound: int
    shapes: list[ShapeChoice]
    device: str
    threads: int

    def lines(self) -> list[str]:
        """What ``run`` and ``plan`` print: one line per shape, then the choice."""
        out = []
        for shape in self.shapes:
            rates = ", ".join(
                f"K={k} {rate:.1f} ({rate / shape.rates[min(shape.rates)]:.2f}x)"
                for k, rate in sorted(shape.rates.items())
            )
            out.append(f"  {shape.label}: model-steps/s {rates}; K={shape.size} ({shape.stopped})")
        out.append(
            f"pack.size auto -> {self.size} (at most {self.bound}: the members a pack may hold; measured on "
            f"{self.device}, {self.threads} torch thread{'s' * (self.threads != 1)})"
        )
        return out


def measure(
    spec: SweepSpec,
    *,
    memory_budget: int,
    device: str,
    threads: int,
    warmup: int = WARMUP_STEPS,
    timed: int = TIMED_STEPS,
    calibrate: Callable[..., Calibration] | None = None,
) -> PackChoice:
    """Measure the candidate pack sizes of every trial shape of ``spec`` (its ``pack.size``
    ``auto``) and choose; ``memory_budget`` is the bytes one trial may use."""
    from study.memory import estimate_trial_memory
    from study.tune import plan

    bound = spec.pack_bound()
    single = spec.with_pack_size(1)
    trials = plan.planned_trials(single) if spec.threshold is None else _threshold_firsts(single)
    shapes = list(plan.group_shapes(trials).values())
    labels = plan.shape_labels(shapes)
    run_calibration = calibrate or plan.calibrate
    choices = []
    for label, shape in zip(labels, shapes):
        choice = ShapeChoice(label.rsplit(" K=", 1)[0])
        for size in candidate_sizes(bound):
            cfg = plan.with_pack(shape.cfg, size)
            if size > 1 and estimate_trial_memory(cfg).total > memory_budget:
                choice.stopped = f"K={size} would not fit the {memory_budget / 2**30:.1f} GiB a trial may use"
                break
            measured = run_calibration(cfg, threads=threads, device=device, warmup=warmup, timed=timed)
            choice.rates[size] = size / measured.step_s
            choice.size = choose_size(choice.rates)
            if choice.size != size:
                choice.stopped = f"K={size} raised the rate per model by less than {GAIN:.2f}x"
                break
        else:
            choice.stopped = f"every K up to the bound {bound} raised the rate" if bound > 1 else "packs of 1 only"
        choices.append(choice)
    return PackChoice(min(c.size for c in choices), bound, choices, device, threads)


def _threshold_firsts(spec: SweepSpec) -> list[PlannedTrial]:
    from study.tune import plan

    return [end[0] for cell in plan.threshold_trials(spec) for end in cell if end]


def resolve_pack_size(
    spec: SweepSpec,
    *,
    out: Callable[[str], None] = print,
    warmup: int = WARMUP_STEPS,
    timed: int = TIMED_STEPS,
) -> SweepSpec:
    """``spec`` with ``pack.size: auto`` replaced by the measured choice (printed); a spec
    with a number is returned as it is.  The measure runs on this machine's device for the
    trials' kind (CUDA when they take GPUs), which must be the trials' own: refused when
    the trials take a GPU and this machine has none."""
    if spec.pack.size != "auto":
        return spec
    import torch

    from study.memory import available_bytes
    from study.tune import plan

    bound = spec.pack_bound()
    if bound == 1:
        out("pack.size auto -> 1 (a cell's members differ in more than per-member values, or it holds one member)")
        return spec.with_pack_size(1)
    gpu = spec.resources.gpus > 0
    if gpu and not torch.cuda.is_available():
        raise ConfigError(
            f"pack.size: auto measures packs on the trials' device, and the trials take a GPU "
            f"(resources.gpus={spec.resources.gpus:g}) that this machine lacks; run `oodstudy plan` of this "
            "spec on a GPU node and set pack.size to the K it chooses"
        )
    device = "cuda" if gpu else "cpu"
    budget, _ = available_bytes(device, spec.resources.gpus)
    if not gpu:  # trials side by side share the RAM
        budget //= max(1, plan.slots(spec, plan.local_machine()))
    threads = plan.trial_threads(spec)
    out(
        f"pack.size auto: measuring packs of up to {bound} members per trial shape on {device} "
        f"({warmup} warm-up + {timed} timed steps each, load average {plan.load_average()})"
    )
    choice = measure(spec, memory_budget=budget, device=device, threads=threads, warmup=warmup, timed=timed)
    for line in choice.lines():
        out(line)
    return spec.with_pack_size(choice.size)
