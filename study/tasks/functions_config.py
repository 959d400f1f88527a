"""The in-context regression family's config: function classes, shifts, baselines and
metrics (with their directions).

Torch-free, so that a config is checked before torch (or Ray) is imported; the task
itself is :mod:`study.tasks.functions`, the baselines :mod:`study.tasks.baselines`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import Field, model_validator

from study.section import Section
from study.tasks.family import TaskSizes
from study.naming import summary_metric

FAMILY = "icl"
FLOAT = 4  # bytes of an fp32 value


@dataclass(frozen=True)
class FunctionClass:
    """A function class prompts are drawn from.

    base:         combo may combine it
    values:       config -> values one drawn function holds per prompt besides the prompt itself
                  (memory estimate)
    sampler:      ``"module:function"`` of its sampler, (xs [B, n, d], dist, generator, d_eff) -> y [B, n]:
                  one function drawn per prompt with the generator only (torch, so named here and
                  imported on first use by ``study.tasks.functions.function_values``)
    mean_square:  ``"module:function"`` of its E[y^2], (dist, d) -> float, in closed form over x and the
                  draw of f (read by ``study.tasks.functions.expected_y2``, the nmse's denominator)

    ``dist`` is a ``study.tasks.functions.PromptDistribution``, which holds the class's parameters.
    """

    base: bool
    values: Callable[["ICLTask"], int]
    sampler: str
    mean_square: str


# Function classes drawn per prompt; ``combo`` mixes two of the base classes.  Adding a class:
# its entry here and its two functions (the sampler and E[y^2]); the config then accepts it in
# task.classes, and tests/test_conformance_families.py runs every contract on it.
FUNCTION_CLASSES: dict[str, FunctionClass] = {
    "linear": FunctionClass(
        base=True,
        values=lambda cfg: 0,
        sampler="study.tasks.functions:linear",
        mean_square="study.tasks.functions:linear_mean_square",
    ),
    "sparse_linear": FunctionClass(
        base=True,
        values=lambda cfg: 0,
        sampler="study.tasks.functions:sparse_linear",
        mean_square="study.tasks.functions:sparse_linear_mean_square",
    ),
    "sine": FunctionClass(
        base=True,
        values=lambda cfg: 0,
        sampler="study.tasks.functions:sine",
        mean_square="study.tasks.functions:sine_mean_square",
    ),
    "relu2nn": FunctionClass(
        base=True,
        values=lambda cfg: cfg.relu_width * (cfg.n_dims + 2),  # W, a and a hidden row
        sampler="study.tasks.functions:relu2nn",
        mean_square="study.tasks.functions:relu2nn_mean_square",
    ),
    "combo": FunctionClass(
        base=False,
        values=lambda cfg: 0,  # its two classes count as drawn
        sampler="study.tasks.functions:combo",
        mean_square="study.tasks.functions:combo_mean_square",
    ),
}
BASE_CLASSES = tuple(name for name, cls in FUNCTION_CLASSES.items() if cls.base)
CLASSES = tuple(FUNCTION_CLASSES)
# A function class's name: pydantic checks it against the table above; a type checker,
# which cannot read a Literal built at runtime, sees a str.
if TYPE_CHECKING:
    ClassName = str
else:
    ClassName = Literal[CLASSES]


def function_class(name: str) -> FunctionClass:
    """The record of function class ``name``; a ValueError naming the known classes for any other name."""
    if name not in FUNCTION_CLASSES:
        raise ValueError(f"unknown function class {name!r}; use one of {', '.join(FUNCTION_CLASSES)}")
    return FUNCTION_CLASSES[name]


# OOD shift axes (evaluated at the values ``task.shifts`` lists).
ShiftAxis = Literal["nnz", "freq_scale", "alpha", "x_scale"]
SHIFT_AXES: tuple[ShiftAxis, ...] = get_args(ShiftAxis)
# The shift axes whose prompts the coefficient probe also reads (their functions stay linear).
PROBE_SHIFT_AXES: tuple[ShiftAxis, ...] = ("nnz", "x_scale")
# Classical predictors evaluated on the same prompts (see study.tasks.baselines).
Baseline = Literal["lstsq", "ridge", "lasso", "averaging", "knn"]
BASELINES: tuple[Baseline, ...] = get_args(Baseline)
# The per-condition metrics the task reports, each with its direction ("min": lower is
# better): the model's normalized error and each baseline's.
METRICS: dict[str, str] = {"nmse": "min", **{f"nmse_{name}": "min" for name in BASELINES}}
PRIMARY_METRIC = "nmse"  # the headline of the breakdown table


class ICLProbes(Section):
    """The in-context coefficient probe (see ``InContextRegression.representations``)."""

    enabled: bool | None = Field(
        None, description="probe the coefficients of linear prompts; null: when a linear class is trained"
    )
    every: int | None = Field(
        None, ge=1, description="probe at evaluations whose step is a multiple of this; null: every evaluation"
    )
    prompts: int = Field(
        512, ge=16, description="ID probe prompts (3/4 fit the probe, 1/4 test it); half as many per OOD shift value"
    )


class ICLTask(Section):
    """In-context regression: a prompt (x1, f(x1), ..., xk) with f drawn per prompt."""

    family: Literal["icl"] = "icl"
    n_dims: int = Field(20, ge=1, description="input dimension d")
    n_points: int = Field(41, ge=2, description="points per prompt (in-context examples + 1)")
    classes: list[ClassName] = Field(default_factory=lambda: ["linear"], min_length=1, max_length=2)
    mix_weight: float | None = Field(None, ge=0.0, le=1.0, description="weight of classes[0] in a two-class mixture")
    nnz: int = Field(3, ge=1, description="non-zero coefficients of sparse_linear")
    sparse_values: Literal["normal", "sign"] = Field(
        "normal",
        description="law of sparse_linear's non-zero coefficients: normal, N(0, 1) as Garg et al.; "
        "sign, +1 or -1 (a finite class of 2^nnz C(d, nnz) functions, whose prior a small model learns)",
    )
    freq_range: tuple[float, float] = Field((0.5, 2.0), description="sine frequency range")
    relu_width: int = Field(100, ge=1)
    combo: tuple[str, str] = Field(("linear", "sine"), description="classes combined by combo")
    combo_alpha: tuple[float, float] = Field((0.0, 1.0), description="alpha range in training")
    noise_std: float = Field(0.0, ge=0.0)
    curriculum: bool = False
    curriculum_dims_start: int = Field(5, ge=1)
    curriculum_points_start: int = Field(11, ge=2)
    curriculum_every: int = Field(2000, ge=1)
    eval_prompts: int = Field(256, ge=1, description="prompts per evaluation condition")
    shifts: dict[ShiftAxis, list[float]] = Field(
        default_factory=dict, description="OOD shift axes and the values to evaluate"
    )
    baselines: list[Baseline] = Field(default_factory=lambda: list[Baseline](["lstsq", "averaging", "knn"]))
    lasso_alpha: float = Field(0.01, gt=0.0)
    ridge_lambda: float = Field(0.1, gt=0.0)
    probes: ICLProbes = Field(default_factory=ICLProbes)

    @property
    def linear_class(self) -> str | None:
        """The trained class whose prompts the coefficient probe reads (linear first), or None."""
        return next((c for c in ("linear", "sparse_linear") if c in self.classes), None)

    def evaluated_conditions(self) -> list[dict[str, object]]:
        """The eval-row columns of every evaluation condition (what a claim's ``at`` may name):
        shift "none" (value 0, the pretraining mixture) and each shift value, every k of
        0 .. n_points - 1 in-context examples, and the split the shift's support gives."""
        return [
            {"split": split_of(self, shift, value), "shift": shift, "shift_value": value, "n_context": k}
            for shift, value in condition_values(self)
            for k in range(self.n_points)
        ]

    def structure_kinds(self) -> tuple[str, ...]:
        """The ``representations`` kinds its probes score: the coefficient probe's R^2."""
        return ("probe_coefficients",) if probes_on(self) else ()

    @property
    def weights(self) -> list[float]:
        if len(self.classes) == 1:
            return [1.0]
        w = 0.5 if self.mix_weight is None else self.mix_weight
        return [w, 1.0 - w]

    @model_validator(mode="after")
    def _check(self) -> "ICLTask":
        if self.nnz > self.n_dims:
            raise ValueError(f"task.nnz={self.nnz} exceeds task.n_dims={self.n_dims}; choose task.nnz <= task.n_dims")
        if self.sparse_values != "normal" and "sparse_linear" not in self.classes and not self.shifts.get("nnz"):
            raise ValueError(
                f"task.sparse_values={self.sparse_values!r} sets sparse_linear's coefficients, but no sparse prompt "
                "is drawn: add sparse_linear to task.classes or task.shifts.nnz, or drop task.sparse_values"
            )
        if len(self.classes) == 2 and self.classes[0] == self.classes[1]:
            raise ValueError("task.classes lists the same class twice; name two different classes")
        if self.mix_weight is not None and len(self.classes) != 2:
            raise ValueError("task.mix_weight needs exactly two task.classes, e.g. [linear, sparse_linear]")
        lo, hi = self.freq_range
        if not 0 < lo <= hi:
            raise ValueError("task.freq_range must be (low, high) with 0 < low <= high")
        a_lo, a_hi = self.combo_alpha
        if not 0 <= a_lo <= a_hi <= 1:
            raise ValueError("task.combo_alpha must be (low, high) with 0 <= low <= high <= 1")
        for name in self.combo:
            if name not in BASE_CLASSES:
                raise ValueError(f"task.combo: unknown class {name!r}; use two of {', '.join(BASE_CLASSES)}")
        for value in self.shifts.get("nnz", []):
            if not (1 <= value <= self.n_dims and float(value).is_integer()):
                raise ValueError(f"task.shifts.nnz: {value} is not a whole number in 1..task.n_dims={self.n_dims}")
        for value in self.shifts.get("alpha", []):
            if not 0 <= value <= 1:
                raise ValueError(f"task.shifts.alpha: {value} is outside [0, 1]")
        scaled_axes: tuple[tuple[ShiftAxis, str], ...] = (("freq_scale", "sine frequency"), ("x_scale", "inputs x"))
        for axis, scaled in scaled_axes:
            for value in self.shifts.get(axis, []):
                if not value > 0:
                    raise ValueError(f"task.shifts.{axis}: {value} must be > 0 (it multiplies the {scaled})")
        if self.curriculum and self.curriculum_dims_start > self.n_dims:
            raise ValueError("task.curriculum_dims_start exceeds task.n_dims")
        if self.curriculum and self.curriculum_points_start > self.n_points:
            raise ValueError("task.curriculum_points_start exceeds task.n_points")
        if self.probes.enabled and self.linear_class is None:
            raise ValueError(
                f"task.probes.enabled=true: the coefficient probe reads linear prompts, but task.classes="
                f"{list(self.classes)} trains no linear class; add linear or sparse_linear, or set task.probes.enabled=false"
            )
        return self


# --------------------------------------------------------------------------- splits


def _trained(cfg: ICLTask, name: str) -> bool:
    """Is class ``name`` (with the config's parameters) drawn in pretraining, i.e. listed
    in ``cfg.classes`` with a weight above 0?  (mix_weight 0 or 1 leaves one listed class
    out of the mixture: a sweep over the weight keeps both names in every cell.)"""
    drawn = {c for c, w in zip(cfg.classes, cfg.weights) if w > 0}
    if name in drawn:
        return True
    dense_pair = {"linear", "sparse_linear"}  # sparse_linear with nnz = d is dense linear
    return cfg.nnz == cfg.n_dims and name in dense_pair and bool(dense_pair & drawn)


def split_of(cfg: ICLTask, shift: str, value: float) -> str:
    """ "id" when the shifted prompts lie inside the support of the pretraining mixture, else "ood".

    none: id.  nnz: id at the trained nnz (sparse_linear trained) or at nnz = d (linear trained).
    freq_scale: id at 1 when sine is trained.  alpha: id inside combo_alpha when combo is
    trained, at 1 when class A is trained, at 0 when class B is.  x_scale: id at 1.
    """
    if shift == "none":
        return "id"
    if shift == "nnz":
        sparse_as_trained = value == cfg.nnz and _trained(cfg, "sparse_linear")
        inside = sparse_as_trained or (value == cfg.n_dims and _trained(cfg, "linear"))
    elif shift == "freq_scale":
        inside = value == 1.0 and _trained(cfg, "sine")
    elif shift == "alpha":
        low, high = cfg.combo_alpha
        inside = (
            ("combo" in cfg.classes and low <= value <= high)
            or (value == 1.0 and _trained(cfg, cfg.combo[0]))
            or (value == 0.0 and _trained(cfg, cfg.combo[1]))
        )
    elif shift == "x_scale":
        inside = value == 1.0
    else:
        raise ValueError(f"unknown shift {shift!r}; use one of {', '.join(('none',) + SHIFT_AXES)}")
    return "id" if inside else "ood"


def summary_metrics(cfg: ICLTask) -> set[str]:
    """The summary metrics (``<split>_<metric>``) a trial of this config reports: ``id_*``
    always (the pretraining mixture), ``ood_*`` only when some shift value is OOD;
    the model's ``nmse`` and ``nmse_<baseline>`` for each of ``task.baselines``."""
    splits = {"id"} | {split_of(cfg, axis, float(v)) for axis, values in cfg.shifts.items() for v in values}
    metrics = ["nmse"] + [f"nmse_{name}" for name in cfg.baselines]
    return {summary_metric(split, metric) for split in splits for metric in metrics}


def missing_metric_hint(cfg: ICLTask, metric: str) -> str:
    """Why a config does not report ``metric``, and what would make it."""
    base = metric.removeprefix("id_").removeprefix("ood_")
    if base.startswith("nmse_") and base.removeprefix("nmse_") not in cfg.baselines:
        return "its baseline is not in task.baselines; add it there"
    if metric.startswith("ood_"):
        return "no task.shifts value is outside the pretraining mixture; add OOD values to task.shifts"
    return "the icl family does not report it"


# --------------------------------------------------------------------------- sizes


def sequence_length(cfg: ICLTask) -> int:
    """Positions of a full prompt: an x token and a y token per point."""
    return 2 * cfg.n_points


def condition_values(cfg: ICLTask) -> list[tuple[str, float]]:
    """(shift, value) of every evaluation condition the task builds: the pretraining mixture
    ("none", 0.0), then each distinct value of each axis of ``task.shifts``."""
    return [("none", 0.0)] + [(shift, float(v)) for shift, values in cfg.shifts.items() for v in dict.fromkeys(values)]


def probes_on(cfg: ICLTask) -> bool:
    """Does the coefficient probe run: ``task.probes.enabled``, or (null) whether a linear class is trained."""
    return cfg.probes.enabled if cfg.probes.enabled is not None else cfg.linear_class is not None


def probe_conditions(cfg: ICLTask) -> list[tuple[str, float, int]]:
    """(shift, value, prompts) of every probe condition the task builds (none when the probe is
    off): ("none", 0.0) with ``task.probes.prompts`` ID prompts, then each distinct value of
    each axis of :data:`PROBE_SHIFT_AXES` in ``task.shifts`` with half as many."""
    if not probes_on(cfg):
        return []
    half = cfg.probes.prompts // 2
    shifted = [(axis, float(v), half) for axis in PROBE_SHIFT_AXES for v in dict.fromkeys(cfg.shifts.get(axis, []))]
    return [("none", 0.0, cfg.probes.prompts)] + shifted


def probe_prompts(cfg: ICLTask) -> list[int]:
    """Prompts of each probe condition (see :func:`probe_conditions`)."""
    return [prompts for _, _, prompts in probe_conditions(cfg)]


def task_sizes(cfg: ICLTask, n_layer: int) -> TaskSizes:
    """What the memory estimate reads (see :mod:`study.memory`): each condition's prompts
    (kept) and the baselines' least squares over every prefix; each probe condition's
    prompts and coefficients (kept) and the final state at every x its probe reads."""
    seq, d, n = sequence_length(cfg), cfg.n_dims, cfg.n_points
    prompt = seq * d * FLOAT
    drawn = set(cfg.classes) | set(cfg.combo)
    function = sum(FUNCTION_CLASSES[name].values(cfg) for name in drawn) * FLOAT
    conditions = len(condition_values(cfg))
    eval_sets = conditions * cfg.eval_prompts * (prompt + n * FLOAT * 2)
    eval_sets += cfg.eval_prompts * (n * (d**2 + 4 * d) * FLOAT + function)
    probed = probe_prompts(cfg)
    eval_sets += sum(probed) * (prompt + d * FLOAT)
    return TaskSizes(
        n_in=d,
        n_out=1,
        tokens=False,
        sequence=seq,
        conditions=conditions,
        eval_rows=cfg.eval_prompts,
        eval_set_bytes=eval_sets,
        train_set_bytes=0,
        example_bytes=prompt * 3 + function,
        probe_rows=sum(probed),
        probe_forward_rows=max(probed, default=0),
        probe_layers=1 if probed else 0,
    )
