"""Typed configs for one trial, and their validation.

A trial config is a nested mapping with three sections, ``task``, ``model`` and
``train``.  It comes from YAML plus ``--set dotted.key=value`` overrides and is checked
here, before any Ray or GPU work starts: an unknown key, a wrong type or an impossible
combination raises one :class:`ConfigError` that names the field and the fix.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from study.errors import ConfigError
from study.store.schema import STUDY_NAME_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- tasks


class ArithmeticProbes(_Strict):
    """Structure scores of the hidden states at the answer digits (see ``Arithmetic.representations``)."""

    enabled: bool = Field(True, description="compute the probe scores at evaluations")
    every: int | None = Field(
        None, ge=1, description="probe at evaluations whose step is a multiple of this; null: every evaluation"
    )
    points: int = Field(
        512, ge=16, description="ID probe inputs (3/4 fit the probes, 1/4 test them); half as many OOD per length"
    )
    positions: list[int] | None = Field(
        None, description="answer digits to probe (0 = units); null: every digit an ID answer has"
    )


class ArithmeticTask(_Strict):
    """n-digit arithmetic as a token sequence, e.g. ``00349+00705=45010`` (reversed answer).

    Training operands come from a mixture of length components: the main one with
    ``digits`` and, when ``mix_weight > 0``, a second one with ``mix_digits``.
    """

    family: Literal["arithmetic"] = "arithmetic"
    op: Literal["add", "mul"] = "add"
    modulus: int | None = Field(None, ge=2, description="answer is f(a, b) mod p when set")
    digits: int = Field(3, ge=1, description="training length n of the main component")
    sampling: Literal["below", "D", "ab"] = Field(
        "below",
        description="below: both operands < 10^n; D: one operand exactly n digits, the other "
        "< 10^n (D_n); ab: both exactly n digits (ab_n)",
    )
    mix_digits: int | None = Field(None, ge=1, description="length of the second component")
    mix_weight: float = Field(0.0, ge=0.0, le=1.0, description="share of the second component")
    pad: bool = Field(True, description="zero-pad operands to `width` digits")
    width: int = Field(5, ge=1, le=40, description="operand width when padded; longest operand")
    reverse: bool = Field(True, description="write the answer least significant digit first")
    symbols: bool = Field(False, description="use operator and '=' tokens between the fields")
    train_set: Literal["fixed", "fresh"] = Field(
        "fixed", description="fixed: a finite seeded training set; fresh: new samples every step"
    )
    train_fraction: float | None = Field(0.01, gt=0.0, le=1.0, description="of all pairs")
    train_size: int | None = Field(None, ge=1, description="examples; overrides train_fraction")
    eval_max_len: int = Field(5, ge=1, description="evaluate operand lengths 1..eval_max_len")
    eval_examples: int = Field(512, ge=1, description="examples per (len_a, len_b) condition")
    eval_batch_size: int = Field(4096, ge=1)
    probes: ArithmeticProbes = Field(default_factory=ArithmeticProbes)

    @property
    def training_lengths(self) -> list[int]:
        lengths = [self.digits]
        if self.mix_digits is not None and self.mix_weight > 0:
            lengths.append(self.mix_digits)
        return lengths

    @property
    def train_len(self) -> int:
        """n of the equivalence oracle: the longest training length."""
        return max(self.training_lengths)

    @model_validator(mode="after")
    def _check(self) -> "ArithmeticTask":
        if self.mix_weight > 0 and self.mix_digits is None:
            raise ValueError(
                "task.mix_weight > 0 needs task.mix_digits (the length of the second "
                "component); set task.mix_digits or task.mix_weight=0"
            )
        for name in ("digits", "mix_digits", "eval_max_len"):
            value = getattr(self, name)
            if value is not None and value > self.width:
                raise ValueError(
                    f"task.{name}={value} is longer than the operand width task.width="
                    f"{self.width}; raise task.width to at least {value}"
                )
        if self.train_size is not None and self.train_set == "fresh":
            raise ValueError("task.train_size is only used with task.train_set=fixed")
        from study.tasks.arithmetic import check_supported  # the task's own limits: int64 ranges, set sizes

        check_supported(self)
        return self


ICL_CLASSES = ("linear", "sparse_linear", "sine", "relu2nn", "combo")


class ICLProbes(_Strict):
    """The in-context coefficient probe (see ``InContextRegression.representations``)."""

    enabled: bool | None = Field(
        None, description="probe the coefficients of linear prompts; null: when a linear class is trained"
    )
    every: int | None = Field(
        None, ge=1, description="probe at evaluations whose step is a multiple of this; null: every evaluation"
    )
    prompts: int = Field(
        512, ge=16, description="ID probe prompts (3/4 fit the probe, 1/4 test it); as many per OOD shift value"
    )


class ICLTask(_Strict):
    """In-context regression: a prompt (x1, f(x1), ..., xk) with f drawn per prompt."""

    family: Literal["icl"] = "icl"
    n_dims: int = Field(20, ge=1, description="input dimension d")
    n_points: int = Field(41, ge=2, description="points per prompt (in-context examples + 1)")
    classes: list[Literal["linear", "sparse_linear", "sine", "relu2nn", "combo"]] = Field(
        default_factory=lambda: ["linear"], min_length=1, max_length=2
    )
    mix_weight: float | None = Field(
        None, ge=0.0, le=1.0, description="weight of classes[0] in a two-class mixture"
    )
    nnz: int = Field(3, ge=1, description="non-zero coefficients of sparse_linear")
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
    shifts: dict[Literal["nnz", "freq_scale", "alpha", "x_scale"], list[float]] = Field(
        default_factory=dict, description="OOD shift axes and the values to evaluate"
    )
    baselines: list[Literal["lstsq", "ridge", "lasso", "averaging", "knn"]] = Field(
        default_factory=lambda: ["lstsq", "averaging", "knn"]
    )
    lasso_alpha: float = Field(0.01, gt=0.0)
    ridge_lambda: float = Field(0.1, gt=0.0)
    probes: ICLProbes = Field(default_factory=ICLProbes)

    @property
    def linear_class(self) -> str | None:
        """The trained class whose prompts the coefficient probe reads (linear first), or None."""
        return next((c for c in ("linear", "sparse_linear") if c in self.classes), None)

    @property
    def weights(self) -> list[float]:
        if len(self.classes) == 1:
            return [1.0]
        w = 0.5 if self.mix_weight is None else self.mix_weight
        return [w, 1.0 - w]

    @model_validator(mode="after")
    def _check(self) -> "ICLTask":
        if self.nnz > self.n_dims:
            raise ValueError(
                f"task.nnz={self.nnz} exceeds task.n_dims={self.n_dims}; "
                "choose task.nnz <= task.n_dims"
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
            if name not in ("linear", "sparse_linear", "sine", "relu2nn"):
                raise ValueError(f"task.combo: unknown class {name!r}; use two of linear, sparse_linear, sine, relu2nn")
        for value in self.shifts.get("nnz", []):
            if not (1 <= value <= self.n_dims and float(value).is_integer()):
                raise ValueError(f"task.shifts.nnz: {value} is not a whole number in 1..task.n_dims={self.n_dims}")
        for value in self.shifts.get("alpha", []):
            if not 0 <= value <= 1:
                raise ValueError(f"task.shifts.alpha: {value} is outside [0, 1]")
        for axis, scaled in (("freq_scale", "sine frequency"), ("x_scale", "inputs x")):
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


# --------------------------------------------------------------------------- model

# name -> (n_layer, n_head, d_model)
MODEL_PRESETS: dict[str, tuple[int, int, int]] = {
    "nano": (3, 3, 48),
    "micro": (4, 4, 128),
    "mini": (6, 6, 192),
    "small": (6, 6, 384),
    "standard": (12, 8, 256),
}


class ModelConfig(_Strict):
    size: Literal["nano", "micro", "mini", "small", "standard"] = "nano"
    n_layer: int | None = Field(None, ge=1, description="overrides the preset")
    n_head: int | None = Field(None, ge=1, description="overrides the preset")
    d_model: int | None = Field(None, ge=1, description="overrides the preset")
    pos_encoding: Literal["learned", "sinusoidal", "rope", "alibi", "none"] = "learned"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_layer, n_head, d_model) after applying overrides to the preset."""
        n_layer, n_head, d_model = MODEL_PRESETS[self.size]
        return (self.n_layer or n_layer, self.n_head or n_head, self.d_model or d_model)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        _, n_head, d_model = self.shape
        if d_model % n_head:
            raise ValueError(
                f"model.n_head={n_head} does not divide model.d_model={d_model}; "
                "pick a head count that divides the width"
            )
        if self.pos_encoding == "rope" and (d_model // n_head) % 2:
            raise ValueError(
                f"model.pos_encoding=rope needs an even head size, got d_model/n_head="
                f"{d_model // n_head}; change model.d_model or model.n_head"
            )
        return self


# --------------------------------------------------------------------------- training


class TrainConfig(_Strict):
    steps: int = Field(4000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-4, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0.0)
    grad_clip: float | None = Field(1.0, gt=0.0, description="max grad norm; null disables")
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine floor as a share of lr")
    seed: int = 0
    eval_every: int = Field(500, ge=1)
    checkpoint_every: int | None = Field(None, ge=1, description="defaults to eval_every")
    log_every: int = Field(50, ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere"
    )

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.checkpoint_every is not None and self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"train.checkpoint_every={self.checkpoint_every} is not a multiple of train.eval_every="
                f"{self.eval_every}; checkpoints are taken at evaluations, so make it a multiple"
            )
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"train.warmup_steps={self.warmup_steps} exceeds train.steps={self.steps}"
            )
        return self


class TrialConfig(_Strict):
    task: ArithmeticTask | ICLTask = Field(default_factory=ArithmeticTask, discriminator="family")
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_family(cls, data: Any) -> Any:
        task = data.get("task") if isinstance(data, dict) else None
        if isinstance(task, dict) and "family" not in task:
            data = {**data, "task": {**task, "family": "arithmetic"}}
        return data

    @model_validator(mode="after")
    def _check_probes(self) -> "TrialConfig":
        probes = getattr(self.task, "probes", None)
        if probes is not None and probes.every is not None and probes.every % self.train.eval_every:
            raise ValueError(
                f"task.probes.every={probes.every} is not a multiple of train.eval_every={self.train.eval_every}; "
                "probes run at evaluations, so make it a multiple"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """The config as ``{"task.digits": 3, ...}``."""
        return flatten(self.to_dict())


# --------------------------------------------------------------------------- loading


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML would read it: ``3`` -> 3, ``[a, b]`` -> list, ``x`` -> 'x'."""
    return yaml.safe_load(text) if text.strip() else ""


def set_dotted(nested: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``nested["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections."""
    *parents, leaf = dotted.split(".")
    node = nested
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parents[: i + 1])} is a value, not a section; cannot set {dotted}")
        node = child
    node[leaf] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key=value`` overrides (strings or a mapping) applied."""
    out = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
    for key, value in items:
        set_dotted(out, key, value)
    return out


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value, e.g. --set model.size=micro")
    key, value = text.split("=", 1)
    return key.strip(), parse_value(value)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; give the path of a YAML spec")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        annotation = field.annotation
        for sub in getattr(annotation, "__args__", (annotation,)):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys.extend(_known_keys(sub, f"{prefix}{name}."))
    return keys


def explain(err: ValidationError, model: type[BaseModel], root: str = "") -> str:
    """One readable line per problem: ``field: what is wrong (fix)``."""
    known = _known_keys(model)
    lines = []
    for problem in err.errors():
        loc = [str(p) for p in problem["loc"]]
        # drop the discriminator tag pydantic inserts for unions ("task.arithmetic.digits")
        loc = [p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "task" and p in ("arithmetic", "icl"))]
        field = root + ".".join(loc)
        kind = problem["type"]
        if kind == "extra_forbidden":
            guess = difflib.get_close_matches(".".join(loc), known, n=1)
            hint = f"; did you mean {root}{guess[0]}?" if guess else "; remove it"
            lines.append(f"{field}: unknown key{hint}")
        elif kind == "union_tag_invalid":
            lines.append(f"{field}: unknown task family; use 'arithmetic' or 'icl'")
        else:
            msg = problem["msg"].removeprefix("Value error, ")
            given = problem.get("input")
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            lines.append(f"{field}: {msg}{shown}" if field else f"{msg}")
    return "\n".join(lines)


def trial_config(raw: dict[str, Any] | None = None, overrides: list[str] | dict[str, Any] = ()) -> TrialConfig:
    """Validate a raw trial mapping (plus overrides) into a :class:`TrialConfig`."""
    data = apply_overrides(raw or {}, overrides)
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError("invalid trial config:\n" + explain(err, TrialConfig)) from None


def load_trial_config(path: str | Path | None, overrides: list[str] = ()) -> TrialConfig:
    """A trial config from a YAML file (or the defaults when ``path`` is None).

    A sweep spec may be given too: its ``base`` section is the trial config.
    """
    raw = read_yaml(path) if path else {}
    if "base" in raw:
        raw = raw["base"] or {}
    return trial_config(raw, overrides)


# --------------------------------------------------------------------------- sweeps


class Distribution(_Strict):
    """An Optuna distribution for one tuned axis."""

    type: Literal["uniform", "loguniform", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical distribution needs a non-empty `choices` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} distribution needs `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low={self.low} is greater than high={self.high}; swap them")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"a loguniform distribution needs low > 0, got {self.low}")
        if self.type == "int" and self.step is not None and not float(self.step).is_integer():
            raise ValueError(f"an int distribution needs a whole-number step, got {self.step}")
        try:
            self.optuna()
        except ValueError as err:  # Optuna's own rules, e.g. no step on a log scale
            raise ValueError(f"Optuna refuses this distribution: {err}") from None
        return self

    def optuna(self):
        import optuna

        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(
            self.low, self.high, log=self.type == "loguniform", step=self.step
        )

    def corners(self) -> list[Any]:
        """Values at the edges of the distribution, for validating the trial configs they make."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class TuneSection(_Strict):
    metric: str = Field("id_exact_match", description="summary metric Optuna optimizes within a cell")
    mode: Literal["max", "min"] = "max"
    trials_per_cell: int = Field(1, ge=1)
    params: dict[str, Distribution] = Field(default_factory=dict, description="tuned axes")
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0


class EarlyStopping(_Strict):
    type: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="evaluations before a trial may be stopped")
    reduction_factor: float = Field(3.0, gt=1.0)


class Resources(_Strict):
    cpus: float = Field(1.0, gt=0.0)
    gpus: float = Field(0.0, ge=0.0, description="fractions allowed, e.g. 0.25")


class SweepSpec(_Strict):
    """A whole study: a base trial, grid axes (cells), tuned axes (Optuna per cell), resources."""

    name: str = Field(..., pattern=STUDY_NAME_PATTERN, description="study name in the store (a directory name)")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="the trial config every cell starts from")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values; cells = product")
    tune: TuneSection = Field(default_factory=TuneSection)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(0, ge=0, description="0: as many as resources allow")
    max_failures: int = Field(2, ge=0, description="retries of a failed trial from its last checkpoint")
    store: str = "./results"
    storage_path: str | None = Field(None, description="Ray Tune's run directory; default <store>/_runs")
    optuna_storage: str | None = Field(None, description="Optuna storage URL; default a journal file")

    @model_validator(mode="after")
    def _check(self) -> "SweepSpec":
        for axis, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{axis} is empty; give it at least one value or remove the axis")
        overlap = set(self.grid) & set(self.tune.params)
        if overlap:
            raise ValueError(f"{sorted(overlap)} are both grid and tuned axes; keep each axis in one place")
        return self

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of the grid axes, in a stable order."""
        import itertools

        axes = list(self.grid)
        return [dict(zip(axes, combo)) for combo in itertools.product(*(self.grid[a] for a in axes))]

    def trial_raw(self, cell: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The raw trial config of one cell with tuned values filled in (not yet validated)."""
        return apply_overrides(self.base, {**cell, **params})

    def check_trials(self) -> None:
        """Validate the trial config of every cell at the corners of every tuned axis."""
        import itertools

        corner_sets = [
            dict(zip(self.tune.params, combo))
            for combo in itertools.product(*(d.corners() for d in self.tune.params.values()))
        ] or [{}]
        families = set()
        for cell in self.cells():
            for params in corner_sets[:16]:
                try:
                    cfg = TrialConfig.model_validate(self.trial_raw(cell, params))
                except ValidationError as err:
                    where = ", ".join(f"{k}={v}" for k, v in {**cell, **params}.items()) or "the base config"
                    raise ConfigError(f"invalid trial config for {where}:\n" + explain(err, TrialConfig)) from None
                except ConfigError as err:
                    raise ConfigError(f"grid/tuned axis: {err}") from None
                families.add(cfg.task.family)
        known = {"loss"} | {f"{split}_{m}" for split in ("id", "ood") for f in families for m in SUMMARY_METRICS[f]}
        if self.tune.metric not in known:
            raise ConfigError(
                f"tune.metric={self.tune.metric!r} is not a summary metric of this study; "
                f"use one of {sorted(known)}"
            )
        lower_is_better = self.tune.metric == "loss" or "nmse" in self.tune.metric
        if (self.tune.mode == "max") == lower_is_better:
            raise ConfigError(
                f"tune.mode={self.tune.mode} optimizes {self.tune.metric} the wrong way; "
                f"use tune.mode={'min' if lower_is_better else 'max'}"
            )


# The per-condition metrics each task family reports; a trial's summary metrics are
# "<split>_<metric>" (mean over the split's conditions) plus "loss".
SUMMARY_METRICS = {
    "arithmetic": ["exact_match", "digit_acc", "equivalence", "equivalence_of_wrong", "chance"],
    "icl": ["nmse"] + [f"nmse_{b}" for b in ("lstsq", "ridge", "lasso", "averaging", "knn")],
}


def cell_id(cell: dict[str, Any]) -> str:
    """A short stable name for a cell: ``model.size=nano|task.digits=3`` (``all`` for no grid)."""
    return "|".join(f"{k}={v}" for k, v in cell.items()) or "all"


def load_sweep_spec(path: str | Path, overrides: list[str] = ()) -> SweepSpec:
    """Read, override and validate a sweep spec.

    Overrides: ``train.steps=10`` (or ``base.train.steps=10``) changes the base trial,
    ``grid.model.size=[nano, micro]`` replaces one grid axis, ``name=x`` a top-level field.
    """
    data = read_yaml(path)
    for text in overrides:
        key, value = _split_override(text)
        if key.split(".")[0] in ("task", "model", "train"):
            key = "base." + key
        if key.startswith("grid."):
            data.setdefault("grid", {})[key.removeprefix("grid.")] = value
        else:
            set_dotted(data, key, value)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid sweep spec:\n" + explain(err, SweepSpec)) from None
    spec.check_trials()
    return spec
