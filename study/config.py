"""Typed configs for one trial, and their validation.

A trial config is a nested mapping with three sections, ``task``, ``model`` and
``train``.  It comes from YAML plus ``--set dotted.key=value`` overrides and is checked
here, before any Ray or GPU work starts: an unknown key, a wrong type or an impossible
combination raises one :class:`ConfigError` that names the field and the fix.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import os
import re
import reprlib
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from study.claims_config import Claim, check_claims_against, same_value
from study.errors import ConfigError
from study import naming
from study.naming import cell_id, grid_point_id, is_seed_axis, summary_metric  # noqa: F401  (grid_point_id re-exported: study.config.grid_point_id)
from study.section import BOOL_FOR_NUMBER, Section
from study.store.schema import STUDY_NAME
from study.tasks import DEFAULT_FAMILY, FAMILIES, LOSS, SPLITS, family, metric_direction, summary_metrics
from study.tasks.arithmetic_config import ArithmeticTask  # noqa: F401  (re-exported: study.config.ArithmeticTask)
from study.tasks.functions_config import ICLTask  # noqa: F401  (re-exported: study.config.ICLTask)
from study.tasks.position_schemes import POSITION_SCHEMES, TASK_POSITION_SCHEMES
from study.threshold_config import SECTION, ThresholdSearch


# --------------------------------------------------------------------------- limits
# Every bound on a size or range that input could exceed, with where it comes from.

# Ray Tune seeds a member's generators with train.seed (torch takes seeds below 2**64;
# a member's dropout generator adds study.train.DROPOUT_STREAM = 2**40 and a pack adds
# its member index), numpy's with the same seed (non-negative): seeds in [0, 2**63) fit all.
SEED_LIMIT = 2**63
# Optuna's samplers take seeds in [0, 2**32); grid point i's sampler is seeded tune.seed + i.
TUNE_SEED_LIMIT = 2**32
# More training steps than anyone runs on these models (years at the fastest step rate):
# a larger number is a typo, and would overflow the store's step columns past 2**63.
MAX_STEPS = 10**9
# Ray schedules resources in units of 0.0001; a smaller positive share is refused inside Ray.
RESOURCE_GRANULARITY = 0.0001
# A file name holds at most 255 bytes (NAME_MAX, Linux and macOS).  A study name becomes the
# directories ``study=<name>`` in the store and ``<name>`` in the run directory; a grid
# point's id becomes Tune's trial directory ``<id>_<trial id>`` (study.tune.runner.trial_dirname).
STUDY_NAME_MAX = 100
GRID_POINT_ID_MAX = 200
# Grid points a study may have (the product of the axis lengths), counted before any is built:
# each is validated (about 0.1 ms) and becomes at least one trial.
MAX_GRID_POINTS = 100_000
# YAML aliases repeat what an anchor holds, so a few hundred bytes can stand for gigabytes
# ("billion laughs"); aliases may repeat at most this many YAML nodes in one document.
MAX_ALIAS_NODES = 10_000
# Characters of a value echoed in an error message (see :func:`shown`), and of one clause of a
# validator's message (the task configs echo their values in their own words; see :func:`explain`).
SHOWN_CHARS = 80
CLAUSE_CHARS = 400


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, cut to :data:`SHOWN_CHARS` characters: an input
    can be arbitrarily large, the message that echoes it must not be.  Nested containers are
    abbreviated as they are walked (reprlib), so a huge value is never written out whole."""
    try:
        return clipped(_REPR.repr(value))
    except ValueError:  # an int of more digits than Python writes out
        return f"<a {type(value).__name__} too large to show>"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 6, 6
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = SHOWN_CHARS


def flow(value: Any) -> str:
    """``value`` as YAML writes it on one line (``{type: loguniform, low: 0.01}``, ``[1, 2]``),
    cut like :func:`shown`; for an example of what to write in a spec."""
    try:
        return clipped(yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=math.inf).strip())
    except (yaml.YAMLError, ValueError, RecursionError):
        return shown(value)


def clipped(text: str) -> str:
    """A text from the input (a key, a --set argument) cut like :func:`shown`."""
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}..."


def check_study_name(name: Any, option: str = "") -> str:
    """``name`` if it can name a study (a directory name in the store and the run
    directory), else a ConfigError saying the rule in words, without echoing the name, and
    an example: the name with the characters it may not hold made ``-`` (``my study`` ->
    ``my-study``) when that is short, written as ``option`` takes it (``--name my-study``)."""
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        example = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("._+-") if isinstance(name, str) else ""
        if not example or len(example) > 40 or not STUDY_NAME.match(example):
            example = "my-study"
        raise ConfigError(
            "not a study name: use only letters, digits and . _ + - (no spaces), starting with a "
            f"letter or digit, e.g. {option + ' ' if option else ''}{example} "
            "(it becomes a directory name)"
        )
    if len(name) > STUDY_NAME_MAX:
        raise ConfigError(
            f"a study name of {len(name)} characters; use at most {STUDY_NAME_MAX} "
            "(it becomes a directory name, with room for what is added to it)"
        )
    return name


# --------------------------------------------------------------------------- model

# name -> (n_layer, n_head, d_model)
MODEL_PRESETS: dict[str, tuple[int, int, int]] = {
    "nano": (3, 3, 48),
    "micro": (4, 4, 128),
    "mini": (6, 6, 192),
    "small": (6, 6, 384),
    "standard": (12, 8, 256),
}


# Every position scheme, one record each (study.tasks.position_schemes); TASK_POSITION_SCHEMES
# (re-exported here) are those whose ids the task computes.
POSITION_ENCODINGS = tuple(POSITION_SCHEMES)
# A preset's and a scheme's name: pydantic checks them against the tables above; a type
# checker, which cannot read a Literal built at runtime, sees a str.
if TYPE_CHECKING:
    ModelSize = str
    PositionEncoding = str
else:
    ModelSize = Literal[tuple(MODEL_PRESETS)]
    PositionEncoding = Literal[POSITION_ENCODINGS]


class ModelConfig(Section):
    size: ModelSize = "nano"
    n_layer: int | None = Field(None, ge=1, description="overrides the preset")
    n_head: int | None = Field(None, ge=1, description="overrides the preset")
    d_model: int | None = Field(None, ge=1, description="overrides the preset")
    pos_encoding: PositionEncoding = "learned"
    max_position: int = Field(
        64, ge=1, description="position ids 0..max_position-1 (the schemes whose ids the task computes)"
    )
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
        if POSITION_SCHEMES[self.pos_encoding].attention == "rope" and (d_model // n_head) % 2:
            raise ValueError(
                f"model.pos_encoding={self.pos_encoding} needs an even head size, got d_model/n_head="
                f"{d_model // n_head}; change model.d_model or model.n_head"
            )
        return self


def own_schemes() -> str:
    """The position schemes that number the tokens in the model, in words ("learned, ... or none")."""
    names = [name for name in POSITION_SCHEMES if name not in TASK_POSITION_SCHEMES]
    return f"{', '.join(names[:-1])} or {names[-1]}"


# --------------------------------------------------------------------------- training


class StopWhen(Section):
    """End a member early (status ``converged``) once a summary metric holds a bound.

    The bound must hold at ``for_evals`` evaluations in a row; the last of them is the
    member's final evaluation.  Give exactly one of ``at_least`` and ``at_most``.
    """

    metric: str = Field("id_exact_match", description="a summary metric, e.g. id_exact_match or id_nmse")
    at_least: float | None = None
    at_most: float | None = None
    for_evals: int = Field(1, ge=1, description="consecutive evaluations that must meet the bound")

    @model_validator(mode="after")
    def _check(self) -> "StopWhen":
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("train.stop_when needs exactly one of at_least (higher is better) or at_most")
        return self

    def met(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric, float("nan"))
        if self.at_least is not None:
            return value >= self.at_least
        assert self.at_most is not None  # _check: exactly one of the two
        return value <= self.at_most


class TrainConfig(Section):
    steps: int = Field(4000, ge=1, le=MAX_STEPS)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-4, gt=0.0, allow_inf_nan=False)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0.0, allow_inf_nan=False)
    grad_clip: float | None = Field(1.0, gt=0.0, allow_inf_nan=False, description="max grad norm; null disables")
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine floor as a share of lr")
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    eval_every: int = Field(500, ge=1)
    checkpoint_every: int | None = Field(None, ge=1, description="defaults to eval_every")
    log_every: int = Field(50, ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere"
    )
    stop_when: StopWhen | None = Field(None, description="end a member once a metric holds; off when null")

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):  # nan fails too
            raise ValueError("AdamW's two decay rates must each be in [0, 1); give e.g. [0.9, 0.95]")
        return betas

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.checkpoint_every is not None and self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"train.checkpoint_every={self.checkpoint_every} is not a multiple of train.eval_every="
                f"{self.eval_every}; checkpoints are taken at evaluations, so make it a multiple"
            )
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"train.warmup_steps={self.warmup_steps} exceeds train.steps={self.steps}; "
                "lower train.warmup_steps or raise train.steps"
            )
        return self


# The train fields in which members of one pack may differ (all else they share).
PACK_MEMBER_FIELDS = ("seed", "lr", "weight_decay", "warmup_steps")


class PackConfig(Section):
    """K members of one cell trained in one process with batched weights (study.model)."""

    size: int = Field(1, ge=1, description="members per pack; 1 trains a single model")
    automatic: bool = Field(False, description="the size was chosen by measuring packs (pack: {size: auto})")


class PackSpec(PackConfig):
    """A study's pack: a size, or ``auto`` for the largest pack that fits a trial's memory
    share and still raises the steps per second per model on the trials' device
    (:mod:`study.tune.autopack` measures it before the run; the chosen size replaces
    ``auto`` in the study's copy of its spec, so ``resume`` keeps it)."""

    size: int | Literal["auto"] = Field(  # type: ignore[assignment]
        1, description="members per pack: K >= 1, or auto (measured before the run, bounded by the cell's members)"
    )

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, size: Any) -> Any:
        if size == "auto" or (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
            return size
        raise ValueError("give a whole number of members, at least 1 (1 trains single models), or auto")


# The task section: the config class of every registered family, told apart by task.family.
# A type checker cannot read the union built from the registry; it sees the families'
# config classes written out, which must be the registered ones.
if TYPE_CHECKING:
    TaskConfig = ArithmeticTask | ICLTask
else:
    TaskConfig = typing.Union[tuple(record.config for record in FAMILIES.values())]
    if set(typing.get_args(TaskConfig)) != {ArithmeticTask, ICLTask}:
        raise TypeError(
            "study.config.TaskConfig: write every registered family's config class in its TYPE_CHECKING union"
        )


class TrialConfig(Section):
    task: TaskConfig = Field(default_factory=FAMILIES[DEFAULT_FAMILY].config, discriminator="family")
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    pack: PackConfig = Field(default_factory=PackConfig)

    @model_validator(mode="after")
    def _check_stop_when(self) -> "TrialConfig":
        stop = self.train.stop_when
        known = {LOSS} | {summary_metric(split, m) for split in SPLITS for m in family(self.task.family).metrics}
        if stop is not None and stop.metric not in known:
            raise ValueError(
                f"train.stop_when.metric={shown(stop.metric)} is not a summary metric of this task; "
                f"use one of {sorted(known)}"
            )
        return self

    @model_validator(mode="after")
    def _check_positions(self) -> "TrialConfig":
        scheme = self.model.pos_encoding
        if scheme not in TASK_POSITION_SCHEMES:
            return self
        check = family(self.task.family).check_position_scheme
        if check is None:
            formats = " or ".join(f.name for f in FAMILIES.values() if f.check_position_scheme is not None)
            raise ValueError(
                f"model.pos_encoding={scheme} takes position ids from an {formats} format; task.family="
                f"{self.task.family} prompts have none: use {own_schemes()}"
            )
        check(self.task, scheme, self.model.max_position)
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_family(cls, data: Any) -> Any:
        task = data.get("task") if isinstance(data, dict) else None
        if isinstance(task, dict) and "family" not in task:
            data = {**data, "task": {**task, "family": DEFAULT_FAMILY}}
        return data

    @model_validator(mode="after")
    def _check_probes(self) -> "TrialConfig":
        probes = getattr(self.task, "probes", None)
        if probes is not None and probes.every is not None and probes.every % self.train.eval_every:
            raise ValueError(
                f"task.probes.every={probes.every} is not a multiple of train.eval_every={self.train.eval_every}; "
                "probes run at evaluations, so make it a multiple"
            )
        layers = getattr(probes, "layers", None)
        if isinstance(layers, list):
            n_layer = self.model.shape[0]
            wrong = [layer for layer in layers if not -1 <= layer < n_layer]
            if wrong or not layers:
                raise ValueError(
                    f"task.probes.layers: {shown(wrong or layers)} names no layer of this model; model.size="
                    f"{self.model.size} has blocks 0..{n_layer - 1} (and -1 for the final state), so probe those"
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


class StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives one key twice (where YAML
    would silently keep the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {shown(key)} (first on line {seen[key].start_mark.line + 1}); "
                    "keep one of them, YAML would silently use the last",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML text with :class:`StrictLoader`; a syntax error, a duplicate key, aliases
    that repeat more than :data:`MAX_ALIAS_NODES` nodes, nesting deeper than Python
    recurses or a number Python cannot read is a ConfigError on one line naming ``where``."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()  # the node graph: an alias is the anchor's node again, not a copy
        if node is None:
            return None
        repeated = alias_repeated_nodes(node)
        if repeated > MAX_ALIAS_NODES:
            raise ConfigError(
                f"{where}: its aliases (*name) repeat {repeated:,} YAML nodes, more than the {MAX_ALIAS_NODES:,} "
                "allowed (a document that expands like this is an alias bomb); write the values out, or use fewer aliases"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = clipped(" ".join(str(getattr(err, "problem", None) or err).split()))
        raise ConfigError(f"{where}: not valid YAML:{at} {problem}; fix the YAML there") from None
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"{where}: nested deeper than can be read; write it with fewer levels") from None
    except ValueError as err:  # SafeConstructor's int(), float() and dates: e.g. an int of over 4300 digits
        raise ConfigError(f"{where}: a value cannot be read ({clipped(str(err))}); write a shorter value") from None
    finally:
        loader.dispose()


def alias_repeated_nodes(root: yaml.Node) -> int:
    """How many YAML nodes the aliases of a document repeat: its size with every alias
    expanded minus its distinct nodes.  Counted on the node graph (each node's expanded
    size once, no recursion), so a bomb of a billion nodes costs its few dozen nodes;
    an alias inside its own anchor is a yaml ComposerError."""
    size: dict[int, int] = {}  # id(node) -> nodes of its subtree, aliases expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        if children_done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
        elif id(node) not in size:
            if id(node) in on_path:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    "an alias refers to its own anchor (a recursive value); write the value out",
                    node.start_mark,
                )
            on_path.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
    return size[id(root)] - len(size)


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML would read it: ``3`` -> 3, ``[a, b]`` -> list, ``x`` -> 'x'."""
    return load_yaml_text(text, f"--set value {shown(text)}") if text.strip() else ""


def set_dotted(nested: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``nested["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections."""
    *parents, leaf = dotted.split(".")
    node = nested
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"{clipped('.'.join(parents[: i + 1]))} is a value, not a section; cannot set "
                f"{clipped(dotted)}; set the value itself, or remove the override"
            )
        node = child
    node[leaf] = value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key=value`` overrides (strings or a mapping) applied."""
    out = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
    for key, value in items:
        set_dotted(out, key, value)
    return out


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {shown(text)}: expected dotted.key=value, e.g. --set model.size=micro")
    key, value = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key:
        raise ConfigError(
            f"--set {shown(text)}: the key is empty; write --set dotted.key=value, e.g. --set model.size=micro"
        )
    if not parts[-1].strip() and all(p.strip() for p in parts[:-1]):
        example = {"grid": "grid.task.digits=[2, 3]", "tune.params": "tune.params.train.lr.low=0.001"}.get(
            ".".join(parts[:-1]), "model.size=micro"
        )
        raise ConfigError(
            f"--set {shown(text)}: the key is empty after {clipped(key)!r}; write --set "
            f"dotted.key=value, e.g. --set {example}"
        )
    if not all(p.strip() for p in parts):
        raise ConfigError(
            f"--set {shown(text)}: the key {clipped(key)!r} has an empty part (nothing between or "
            "around a dot); write --set dotted.key=value, e.g. --set model.size=micro"
        )
    return key, parse_value(value)


# A spec given as ``env:NAME`` is the YAML text held by the environment variable NAME: how
# ``oodstudy submit`` sends a spec with a Ray job (in the job's runtime_env), so that the job's
# entrypoint is one short command and the spec file need not exist on the cluster.
ENV_SPEC_PREFIX = "env:"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping (or ``env:NAME``'s, the text of that environment
    variable); every way it cannot be one is a ConfigError."""
    if isinstance(path, str) and path.startswith(ENV_SPEC_PREFIX):
        return _yaml_mapping(_env_text(path.removeprefix(ENV_SPEC_PREFIX)), path)
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{path}: is a directory, not a YAML file; give the path of a spec, e.g. search_spaces/quickstart.yaml"
        )
    if not path.exists():
        raise ConfigError(f"{path}: no such file; give the path of a YAML spec, e.g. search_spaces/quickstart.yaml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start} is not UTF-8); give a YAML spec") from None
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot be read ({err.strerror or err}); check the path and its permissions"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes); give a YAML spec")
    return _yaml_mapping(text, str(path))


def _env_text(name: str) -> str:
    """The text of environment variable ``name``, the spec of an ``env:NAME`` argument."""
    text = os.environ.get(name) if name else None
    if text is None:
        raise ConfigError(
            f"{ENV_SPEC_PREFIX}{name}: no environment variable {name!r} holds a spec; give a spec file "
            f"(e.g. search_spaces/quickstart.yaml) or set {name or 'NAME'} to the spec's YAML text"
        )
    return text


def _yaml_mapping(text: str, path: str) -> dict[str, Any]:
    """The top-level mapping of a spec's YAML ``text`` (read from ``path``)."""
    data = load_yaml_text(text, path)
    if data is None:
        raise ConfigError(
            f"{path}: the file is empty (or only comments); write the spec's sections, "
            "e.g. copy search_spaces/quickstart.yaml"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(data).__name__}; "
            "write sections such as name:, base:, grid:, tune: (see search_spaces/quickstart.yaml)"
        )
    return data


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        for sub in _sections_of(field.annotation):
            keys.extend(_known_keys(sub, f"{prefix}{name}."))
    return keys


def _sections_of(annotation: Any) -> list[type[BaseModel]]:
    """The config sections (models) a field holds: ``ModelConfig``, ``StopWhen | None``,
    ``ArithmeticTask | ICLTask`` (never the values of a ``dict[str, Model]``)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _sections_of(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _sections_of(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


@functools.cache
def trial_keys() -> frozenset[str]:
    """Every dotted key of a trial config, sections included (``task``, ``task.digits``, ...)."""
    return frozenset(_known_keys(TrialConfig))


@functools.cache
def trial_value_keys() -> frozenset[str]:
    """The dotted keys of a trial config that hold values, not sections (``task.digits``,
    not ``task`` or ``train.stop_when``): what a grid axis or a tuned axis sets."""
    keys = trial_keys()
    return frozenset(k for k in keys if not any(other.startswith(k + ".") for other in keys))


def unknown_trial_key(key: str) -> str | None:
    """The part of the dotted ``key`` that names no field of a trial config (``task.digit``
    of ``task.digit``), or None: a known key, or one that goes on inside a value whose
    keys are its own (a mapping such as ``task.shifts``), which validation judges."""
    models: list[type[BaseModel]] = [TrialConfig]
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if not fields:
            return ".".join(parts[: i + 1])
        models = [sub for field in fields for sub in _sections_of(field.annotation)]
        if not models:
            return None
    return None


def config_key_hint(key: str) -> str:
    """``did you mean task.digits?`` for a dotted trial key that names no field, else a fix."""
    guess = difflib.get_close_matches(key, sorted(trial_keys()), n=1)
    return f"did you mean {guess[0]}?" if guess else "check the spelling against the trial config's keys"


def _tuned_key(rest: str) -> tuple[str, str]:
    """``train.lr.low`` -> (``train.lr``, ``low``): a tuned axis is a dotted trial key, so the
    longest known key that starts ``rest`` is the axis and what follows it a field of its
    distribution; with no known key, a last part naming a distribution field is the field."""
    parts = rest.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in trial_value_keys():
            return ".".join(parts[:n]), ".".join(parts[n:])
    if len(parts) > 1 and parts[-1] in Distribution.model_fields:
        return ".".join(parts[:-1]), parts[-1]
    return rest, ""


def explain(err: ValidationError, model: type[BaseModel], root: str = "") -> str:
    """One clause per problem, ``field: what is wrong (fix)``, joined by ``"; "`` (one line)."""
    known = _known_keys(model)
    lines = []
    for problem in err.errors():
        loc = [clipped(str(p)) for p in problem["loc"]]
        # drop the discriminator tag pydantic inserts for unions ("task.arithmetic.digits")
        loc = [p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "task" and p in FAMILIES)]
        field = root + ".".join(loc)
        kind = problem["type"]
        if kind == "extra_forbidden" and loc and not loc[-1]:
            lines.append(
                f"{root + '.'.join(loc[:-1]) or 'the top level'}: holds an empty key ''; write the "
                "key's name, or remove it"
            )
        elif kind == "extra_forbidden" and loc[:2] == ["tune", "params"] and len(loc) == 4:  # a distribution's field
            guess = difflib.get_close_matches(loc[3], list(Distribution.model_fields), n=1)
            hint = (
                f"did you mean {root}tune.params.{loc[2]}.{guess[0]}?"
                if guess
                else f"use {', '.join(Distribution.model_fields)}"
            )
            lines.append(f"{field}: unknown key of a distribution; {hint}")
        elif kind == "extra_forbidden" and "." in loc[-1] and ".".join(loc) in known:  # a dotted key in a mapping
            head, _, tail = loc[-1].partition(".")
            lines.append(
                f"{field}: a dotted key inside a mapping; nest it ({head}: {{{tail}: ...}}) here, or give "
                "it dotted as a grid axis or with --set"
            )
        elif kind == "extra_forbidden":
            guess = difflib.get_close_matches(".".join(loc), known, n=1)
            hint = f"; did you mean {root}{guess[0]}?" if guess else "; remove it"
            lines.append(f"{field}: unknown key{hint}")
        elif kind == BOOL_FOR_NUMBER:
            key, value = problem["ctx"]["key"], problem["ctx"]["value"]  # value: the input's repr
            lines.append(
                f"{field + '.' if field else ''}{clipped(key)}: {problem['msg'].replace(value, clipped(value))}"
            )
        elif kind == "union_tag_invalid":
            tag = str(problem.get("ctx", {}).get("tag", ""))
            case = [f for f in FAMILIES if f.lower() == tag.lower()]
            hint = (
                f"did you mean {case[0]!r}? (names are lower case)"
                if case and tag
                else f"use {' or '.join(repr(f) for f in FAMILIES)}"
            )
            lines.append(f"{field}: unknown task family; {hint}")
        elif kind == "value_error":  # a validator's own words: its start (what) and end (the fix) are kept
            msg = problem["msg"].removeprefix("Value error, ")
            if len(msg) > CLAUSE_CHARS:
                msg = f"{msg[: CLAUSE_CHARS // 2]}...{msg[-CLAUSE_CHARS // 2 :]}"
            given = problem.get("input")
            got = "" if isinstance(given, dict) else f" (got {shown(given)})"
            names_it = msg.startswith(field) and msg[len(field) : len(field) + 1] in (".", "=", ":", " ")
            lines.append(f"{field}: {msg}{got}" if field and not names_it else f"{msg}{got}")
        elif kind == "literal_error" and isinstance(problem.get("input"), str):
            msg = problem["msg"].replace("Input should be", "must be")
            given = problem["input"]
            choices = re.findall(r"'((?:[^'\\]|\\.)*)'", str(problem.get("ctx", {}).get("expected", "")))
            case = [c for c in choices if c.lower() == given.strip().lower()]
            close = case or difflib.get_close_matches(given, choices, n=1)
            hint = (
                f"did you mean {close[0]!r}? (values are case-sensitive)"
                if case
                else f"did you mean {close[0]!r}?"
                if close
                else _FIXES["literal_error"]
            )
            lines.append(f"{field}: {msg} (got {shown(given)}); {hint}")
        else:  # pydantic's own rules: "Input should be ..." plus the fix for the kind of rule
            msg = problem["msg"].replace("Input should be", "must be")
            given = problem.get("input")
            got = "" if isinstance(given, dict) else f" (got {shown(given)})"
            lines.append(f"{field}: {msg}{got}; {_FIXES.get(kind, 'change the value')}")
    return "; ".join(lines)


# The fix to propose for each kind of pydantic rule a value breaks.
_FIXES = {
    "literal_error": "use one of these",
    "enum": "use one of these",
    "missing": "add it",
    "int_from_float": "write a whole number",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "float_parsing": "write a number",
    "float_type": "write a number",
    "finite_number": "write a finite number",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "string_type": "write a string",
    "list_type": "write a list, e.g. [a, b]",
    "tuple_type": "write a list, e.g. [a, b]",
    "dict_type": "write a mapping, e.g. {key: value}",
    "model_type": "write a mapping of its keys",
    "string_pattern_mismatch": "change it to match",
    **{
        k: "change the value to fit that bound"
        for k in (
            "greater_than",
            "greater_than_equal",
            "less_than",
            "less_than_equal",
            "too_short",
            "too_long",
            "string_too_short",
            "string_too_long",
        )
    },
}


def trial_config(raw: dict[str, Any] | None = None, overrides: Sequence[str] | dict[str, Any] = ()) -> TrialConfig:
    """Validate a raw trial mapping (plus overrides) into a :class:`TrialConfig`."""
    data = apply_overrides(raw or {}, overrides)
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError("invalid trial config: " + explain(err, TrialConfig)) from None


def load_trial_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrialConfig:
    """A trial config from a YAML file (or the defaults when ``path`` is None).

    A sweep spec may be given too: its ``base`` section is the trial config.
    """
    raw = read_yaml(path) if path else {}
    if "base" in raw:
        raw = raw["base"] or {}
    return trial_config(raw, overrides)


# --------------------------------------------------------------------------- sweeps


class Distribution(Section):
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
            assert self.choices is not None  # _check: a categorical one has choices
            return list(self.choices)
        assert self.low is not None and self.high is not None  # _check: the others have both ends
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


@functools.cache
def say_renamed(old: str, new: str, meaning: str) -> None:
    """One line on stderr, once per process, for a spec key read under its old name."""
    print(
        f"oodstudy: {old} is now called {new} ({meaning}); the old name still works: rename it in the spec",
        file=sys.stderr,
    )


class TuneSection(Section):
    metric: str = Field("id_exact_match", description="summary metric Optuna optimizes within a grid point")
    mode: Literal["max", "min"] = "max"
    trials_per_grid_point: int = Field(
        1, ge=1, description="trials per grid point (seeds included); old name: trials_per_cell"
    )
    params: dict[str, Distribution] = Field(default_factory=dict, description="tuned axes")
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = Field(0, ge=0, lt=TUNE_SEED_LIMIT, description="grid point i's sampler is seeded tune.seed + i")

    @model_validator(mode="before")
    @classmethod
    def _old_trials_key(cls, data: Any) -> Any:
        """``trials_per_cell`` (the key's first name, from when "cell" meant a grid point) is
        read as ``trials_per_grid_point``, with one line on stderr naming the new key."""
        if not isinstance(data, dict) or "trials_per_cell" not in data:
            return data
        if "trials_per_grid_point" in data:
            raise ValueError(
                "tune.trials_per_cell and tune.trials_per_grid_point are one key (trials_per_cell is "
                "its old name); keep tune.trials_per_grid_point"
            )
        say_renamed(
            "tune.trials_per_cell", "tune.trials_per_grid_point", "the trials of each grid point, seeds included"
        )
        rest = {k: v for k, v in data.items() if k != "trials_per_cell"}
        return {**rest, "trials_per_grid_point": data["trials_per_cell"]}

    @property
    def trials_per_cell(self) -> int:
        """The old name of :attr:`trials_per_grid_point`, for code not yet moved to the new one."""
        return self.trials_per_grid_point


class EarlyStopping(Section):
    type: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="evaluations before a trial may be stopped")
    reduction_factor: float = Field(3.0, gt=1.0, allow_inf_nan=False)


class Resources(Section):
    cpus: float = Field(1.0, ge=RESOURCE_GRANULARITY, allow_inf_nan=False)
    gpus: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="fractions allowed, e.g. 0.25")
    # One torch thread per trial unless asked (bench/threads.py, 2 CPUs): a second thread gave
    # one trial 1.3-1.9x on idle cores, less than the 2x of two one-thread trials side by side,
    # and 0.3-0.8x of one thread when the cores were shared with other work.
    threads: int = Field(
        1, ge=1, description="torch threads per trial (at most cpus); more trials beat more threads (bench/threads.py)"
    )

    @model_validator(mode="after")
    def _threads_within_cpus(self) -> "Resources":
        if self.threads > max(1.0, self.cpus):
            raise ValueError(
                f"resources.threads={self.threads} is more than the resources.cpus={self.cpus:g} Ray reserves "
                "for a trial; raise resources.cpus or lower resources.threads"
            )
        return self

    @field_validator("gpus")
    @classmethod
    def _gpus_granularity(cls, gpus: float) -> float:
        if 0 < gpus < RESOURCE_GRANULARITY:
            raise ValueError(f"Ray schedules GPUs in units of {RESOURCE_GRANULARITY}; use 0 or at least that")
        return gpus


class SweepSpec(Section):
    """A whole study: a base trial, grid axes, tuned axes (Optuna per grid point), resources.

    Vocabulary: a *grid point* is one combination of every grid axis, seed axes
    (``train.seed``) included; its id (:func:`grid_point_id`) is the store's ``cell``
    column.  A *cell* is a grid point without its seed axes: the unit the analysis
    reads as a distribution over seeds and tuned values.
    """

    name: str = Field(..., description="study name in the store (a directory name, see check_study_name)")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="the trial config every grid point starts from")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values; grid points = product")
    tune: TuneSection = Field(default_factory=TuneSection)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(0, ge=0, description="0: as many as resources allow")
    max_failures: int = Field(2, ge=0, description="retries of a failed trial from its last checkpoint")
    store: str = "./results"
    storage_path: str | None = Field(None, description="Ray Tune's run directory; default <store>/_runs")
    optuna_storage: str | None = Field(None, description="Optuna storage URL; default a journal file")
    pack: PackSpec = Field(default_factory=PackSpec, description="members trained together per Tune trial")
    threshold: ThresholdSearch | None = Field(
        None, description="search one ordered axis per cell for where success begins (study.tune.threshold)"
    )
    expect: list[Claim] = Field(
        default_factory=list,
        description="published findings this study checks (study.claims_config; checked "
        "at the end of run and resume, by report and by oodstudy check)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_study_name(name)

    @model_validator(mode="before")
    @classmethod
    def _dotted_axes(cls, data: Any) -> Any:
        """Grid axes and tuned axes are dotted keys of the trial config (``task.digits``):
        refuse a nested section (``grid: {task: {digits: [...]}}``) or a key that names no
        trial field, with the dotted form or the closest key."""
        if not isinstance(data, dict):
            return data
        grid = data.get("grid")
        tune = data.get("tune")
        params = tune.get("params") if isinstance(tune, dict) else None
        for where, axes in (("grid", grid), ("tune.params", params)):
            if not isinstance(axes, dict):
                continue
            for axis, values in axes.items():
                if isinstance(axis, str) and not axis.strip():
                    raise ValueError(
                        f"{where} has an empty key {axis!r}; write a dotted config key, e.g. "
                        + (
                            "grid: {task.digits: [2, 3]}"
                            if where == "grid"
                            else "tune.params: {train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}"
                        )
                    )
                if not isinstance(axis, str):
                    continue  # the field's own validation names these
                nested = (
                    where == "grid"
                    and isinstance(values, dict)
                    or where == "tune.params"
                    and isinstance(values, dict)
                    and values
                    and not set(values) & set(Distribution.model_fields)
                )
                if nested:
                    inner, value = next(iter(values.items()))
                    dotted = f"{axis}.{inner}"
                    if (
                        where == "tune.params"
                        and isinstance(value, dict)
                        and value
                        and not set(value) & set(Distribution.model_fields)
                    ):
                        dotted, value = f"{dotted}.{next(iter(value))}", "{type: ..., low: ..., high: ...}"
                    example = f"{clipped(dotted)}: {value if isinstance(value, str) else flow(value)}"
                    if where == "grid":
                        raise ValueError(
                            f"grid.{clipped(axis)}: grid keys are dotted config keys, not nested "
                            f"sections; write grid: {{{example}}}"
                        )
                    raise ValueError(
                        f"tune.params.{clipped(axis)}: tuned axes are dotted config keys, not nested "
                        f"sections; write tune: {{params: {{{example}}}}}"
                    )
                if unknown_trial_key(axis):
                    kind = "grid keys" if where == "grid" else "tuned axes"
                    example = (
                        "grid: {task.digits: [2, 3]}"
                        if where == "grid"
                        else "tune.params: {train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}"
                    )
                    hint = config_key_hint(axis)
                    if hint.startswith("did you mean "):
                        hint = f"did you mean {where}.{hint.removeprefix('did you mean ')}"
                    raise ValueError(
                        f"{where}.{clipped(axis)}: unknown key; {kind} are dotted keys of the trial "
                        f"config, e.g. {example}; {hint}"
                    )
        return data

    @model_validator(mode="before")
    @classmethod
    def _threshold_metric(cls, data: Any) -> Any:
        """A threshold study scores its trials by the success metric: ``tune.metric`` (what the
        store's ``trials.score`` holds, what ``resume`` reads outcomes from) becomes
        ``threshold.success.metric``, and ``tune.mode`` that metric's direction."""
        if not isinstance(data, dict) or not isinstance(data.get("threshold"), dict):
            return data
        success = data["threshold"].get("success")
        metric = success.get("metric") if isinstance(success, dict) else None
        tune = data.get("tune") if data.get("tune") is not None else {}
        if not isinstance(metric, str) or not isinstance(tune, dict):
            return data
        given = tune.get("metric")
        if given is not None and given != metric:
            raise ValueError(
                f"tune.metric={shown(given)} differs from threshold.success.metric={shown(metric)}: a "
                "threshold study scores every trial by its success metric; drop tune.metric (or set "
                "it to the success metric)"
            )
        return {**data, "tune": {**tune, "metric": metric, "mode": tune.get("mode", metric_direction(metric) or "max")}}

    @field_validator("optuna_storage")
    @classmethod
    def _sqlite_directory(cls, url: str | None) -> str | None:
        """A SQLite URL (``sqlite:///relative.db``, ``sqlite:////absolute.db``) names a file
        that SQLite creates, but not its directory."""
        path = (url or "").removeprefix("sqlite:///").split("?")[0]
        if url and url.startswith("sqlite:///") and path not in ("", ":memory:"):
            directory = Path(path).expanduser().parent
            if not directory.is_dir():
                raise ValueError(
                    f"the SQLite file's directory {clipped(str(directory))} does not exist; make it "
                    "(mkdir -p) or set optuna_storage to a file in an existing directory"
                )
        return url

    @model_validator(mode="after")
    def _check(self) -> "SweepSpec":
        for axis, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{clipped(axis)} is empty; give it at least one value or remove the axis")
        n_points = math.prod(len(values) for values in self.grid.values())
        if n_points > MAX_GRID_POINTS:
            lengths = " x ".join(f"{clipped(axis)} ({len(values):,})" for axis, values in self.grid.items())
            raise ValueError(
                f"the grid has {n_points:,} points ({clipped(lengths)}), more than the "
                f"{MAX_GRID_POINTS:,} allowed; use fewer values per axis, or tune an axis (tune.params)"
            )
        if self.tune.seed + n_points > TUNE_SEED_LIMIT:
            raise ValueError(
                f"tune.seed={self.tune.seed}: grid point i's Optuna sampler is seeded tune.seed + i, "
                f"and Optuna takes seeds below 2**32; lower tune.seed to at most "
                f"{TUNE_SEED_LIMIT - n_points}"
            )
        overlap = set(self.grid) & set(self.tune.params)
        if overlap:
            raise ValueError(f"{shown(sorted(overlap))} are both grid and tuned axes; keep each axis in one place")
        if self.threshold is not None:
            self._check_threshold()
        return self

    def _check_threshold(self) -> None:
        """What a threshold search needs of the rest of the spec (its own section is checked
        by :class:`~study.tune.threshold.ThresholdSearch`)."""
        assert self.threshold is not None  # called only when the spec has one
        axis = self.threshold.axis
        if unknown_trial_key(axis) or axis not in trial_value_keys():
            hint = config_key_hint(axis)
            raise ValueError(
                f"threshold.axis={clipped(axis)} is not a value of the trial config; search a dotted "
                f"key that holds a value, e.g. task.mix_weight, train.steps or model.size; {hint}"
            )
        if axis in self.grid:
            raise ValueError(
                f"threshold.axis={clipped(axis)} is also a grid axis; the search proposes its values, "
                f"so remove grid.{clipped(axis)} (the other grid axes stay a grid: one search per cell)"
            )
        if "train.seed" in self.grid:
            raise ValueError(
                "grid.train.seed with a threshold search: the search trains seeds 0, 1, ... at every "
                "point it proposes; remove grid.train.seed and set threshold.seeds_per_point"
            )
        if self.tune.params:
            raise ValueError(
                "tune.params with a threshold search: Optuna per point is not supported with a threshold "
                "search; drop tune.params (or make the tuned axes grid axes)"
            )
        if self.tune.trials_per_grid_point != 1:
            raise ValueError(
                f"tune.trials_per_grid_point={self.tune.trials_per_grid_point} with a threshold search: "
                "the search decides how many trials each cell gets; drop tune.trials_per_grid_point and set "
                "threshold.seeds_per_point and threshold.budget"
            )
        if self.early_stopping.type != "none":
            raise ValueError(
                f"early_stopping.type={self.early_stopping.type} with a threshold search: a seed stopped "
                "early has no outcome, so the search could not use it; set early_stopping.type=none"
            )

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid axes (seeds included), in a stable order."""
        import itertools

        axes = list(self.grid)
        return [dict(zip(axes, combo)) for combo in itertools.product(*(self.grid[a] for a in axes))]

    def trial_raw(self, point: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The raw trial config of one grid point with tuned values filled in (not yet validated)."""
        raw = apply_overrides(self.base, {**point, **params})
        if self.pack.size != "auto" and (self.pack.size > 1 or self.pack.automatic):
            raw["pack"] = self.pack.model_dump()
        return raw

    @property
    def pack_size(self) -> int:
        """Members per pack; a study whose ``pack.size`` is still ``auto`` has none yet
        (:func:`study.tune.autopack.resolve_pack_size` measures and sets it)."""
        if self.pack.size == "auto":
            raise ValueError(
                f"study {self.name}: pack.size is auto and not yet measured; resolve it with "
                "study.tune.autopack.resolve_pack_size(spec) before counting its packs"
            )
        return self.pack.size

    def with_pack_size(self, size: int) -> "SweepSpec":
        """This study with ``pack.size`` set to ``size``, marked automatic when it was ``auto``."""
        pack = PackSpec(size=size, automatic=self.pack.automatic or self.pack.size == "auto")
        return self.model_copy(update={"pack": pack})

    def unpackable_axes(self) -> list[str]:
        """The tuned axes whose values the members of one pack cannot differ in (all but the
        per-member training values, :data:`PACK_MEMBER_FIELDS`)."""
        return sorted(set(self.tune.params) - {f"train.{name}" for name in PACK_MEMBER_FIELDS})

    def pack_bound(self) -> int:
        """The largest pack this study allows: 1 when a tuned axis other than the per-member
        training values varies, a threshold search's seeds per point, else the fewest members
        a cell holds (seeds x trials per grid point)."""
        if self.unpackable_axes():
            return 1
        if self.threshold is not None:
            return self.threshold.seeds_per_point
        return min(len(group) for group in self.pack_groups()) * self.tune.trials_per_grid_point

    def pack_groups(self) -> list[list[int]]:
        """Indices into :meth:`grid_points` of the points one pack may draw its members from.

        With ``pack.size`` 1, every grid point alone.  With packs, the points of one cell
        (the points that differ only in ``train.seed``) form one group: a pack trains
        seeds and Optuna suggestions of one cell, and each member keeps its own grid point.
        """
        points = self.grid_points()
        if self.pack.size == 1:  # auto groups by cell, as any pack does
            return [[i] for i in range(len(points))]
        groups: dict[str, list[int]] = {}
        for i, point in enumerate(points):
            groups.setdefault(cell_id(point), []).append(i)
        return list(groups.values())

    def check_pack(self) -> None:
        """Refuse a pack whose members could differ in more than seed and the tuned training
        values, or one larger than the members a cell holds."""
        if "pack" in self.base:
            raise ConfigError("base.pack: set the pack size at the top level of the spec (pack: {size: K})")
        size = self.pack.size
        if size == "auto" or size == 1:  # auto is bounded by pack_bound when measured
            return
        differing = self.unpackable_axes()
        if differing:
            packable = sorted(f"train.{name}" for name in PACK_MEMBER_FIELDS)
            raise ConfigError(
                f"pack.size={size} with tuned axes {differing}: members of a pack share the "
                f"architecture and everything else but {', '.join(packable)}; make {differing} grid "
                "axes or set pack.size=1"
            )
        bound = self.pack_bound()
        if size > bound:
            what = (
                f"threshold.seeds_per_point={bound} (a pack trains the seeds of one proposed point)"
                if self.threshold is not None
                else f"the {bound} members a cell holds (tune.trials_per_grid_point="
                f"{self.tune.trials_per_grid_point} x the train.seed values)"
            )
            raise ConfigError(f"pack.size={size} is larger than {what}; lower pack.size to at most {bound}, or auto")

    def check_trials(self) -> None:
        """Validate the trial config of every grid point at the corners of every tuned axis."""
        self.check_pack()
        corner_sets = naming.corner_sets(self.tune.params) or [{}]
        search = self.threshold
        if search is not None:  # the axis's ends (every listed value): each must make a valid trial
            corner_sets = [{search.axis: value} for value in search.axis_ends()]
        metric_field = "threshold.success.metric" if search is not None else "tune.metric"
        unmet: list[tuple[dict[str, Any], TrialConfig]] = []  # grid points whose trials never report tune.metric
        families = set()
        for point in self.grid_points():
            cell = grid_point_id(point)
            if len(cell) > GRID_POINT_ID_MAX:
                raise ConfigError(
                    f"grid point {clipped(cell)} has an id of {len(cell)} characters, more than the "
                    f"{GRID_POINT_ID_MAX} a trial directory name leaves room for; use shorter axis values"
                )
            for i, params in enumerate(corner_sets):
                try:
                    cfg = TrialConfig.model_validate(self.trial_raw(point, params))
                except ValidationError as err:
                    where = ", ".join(f"{clipped(k)}={shown(v)}" for k, v in {**point, **params}.items())
                    raise ConfigError(
                        f"invalid trial config for {where or 'the base config'}: " + explain(err, TrialConfig)
                    ) from None
                except ConfigError as err:
                    raise ConfigError(f"grid/tuned axis: {err}") from None
                families.add(cfg.task.family)
                if (i == 0 or search is not None) and self.tune.metric not in summary_metrics(cfg.task):
                    unmet.append(({**point, **params} if search is not None else point, cfg))
        if search is not None:
            self.check_threshold_values()
        self.check_distinct_values(corner_sets[0])
        known = {LOSS} | {summary_metric(split, m) for split in SPLITS for f in families for m in family(f).metrics}
        if self.tune.metric not in known:
            raise ConfigError(
                f"{metric_field}={shown(self.tune.metric)} is not a summary metric of this study; "
                f"use one of {sorted(known)}"
            )
        if unmet:
            point, cfg = unmet[0]
            where = f"grid point {clipped(grid_point_id(point))}" if point else "the base config"
            hint = family(cfg.task.family).missing_metric_hint(cfg.task, self.tune.metric)
            total = len(self.grid_points()) * (len(corner_sets) if search is not None else 1)
            what = "cells x axis ends" if search is not None else "grid points"
            instead = "or choose another success metric" if search is not None else "or tune another metric"
            raise ConfigError(
                f"{metric_field}={shown(self.tune.metric)} is never reported by {where} ({len(unmet)} of "
                f"{total} {what}): {hint}; {instead}, one of {sorted(summary_metrics(cfg.task))}"
            )
        lower_is_better = metric_direction(self.tune.metric) == "min"
        if (self.tune.mode == "max") == lower_is_better:
            raise ConfigError(
                f"tune.mode={self.tune.mode} optimizes {self.tune.metric} the wrong way; "
                f"use tune.mode={'min' if lower_is_better else 'max'}"
            )
        if self.expect:
            self.check_claims(corner_sets[0])

    def check_claims(self, params: dict[str, Any]) -> None:
        """Refuse a claim of ``expect`` that no grid point can measure (a cell the grid does not
        hold, a metric the family does not report, a condition nobody evaluates)."""
        points = [
            (point, TrialConfig.model_validate(self.trial_raw(point, params)).task) for point in self.grid_points()
        ]
        seeds = {axis for axis in self.grid if is_seed_axis(axis)}
        try:
            check_claims_against(self.expect, self.grid, seeds, points)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def check_threshold_values(self) -> None:
        """A continuous axis is proposed anywhere between its ends: refuse one whose field takes
        only whole numbers unless ``threshold.integer`` rounds the proposals."""
        search = self.threshold
        assert search is not None  # called only when the spec has one
        if search.values is not None or search.integer:
            return
        inner = search.value_at(search.start + search.span / 3)
        for point in self.grid_points()[:1]:
            try:
                TrialConfig.model_validate(self.trial_raw({**point, search.axis: inner}, {}))
            except ValidationError as err:
                raise ConfigError(
                    f"threshold.axis={clipped(search.axis)}: a proposal between the ends, e.g. {inner:g}, is not a "
                    f"valid value ({explain(err, TrialConfig)}); set threshold.integer: true for a whole-number "
                    "axis, or list its values"
                ) from None

    def check_distinct_values(self, params: dict[str, Any]) -> None:
        """Refuse a grid axis two of whose values validate to one value (``[1, '1', 1.0]``
        are all 1): their grid points would train one trial config as several cells.
        Each value is validated in the first grid point (after :meth:`check_trials` has
        validated every point)."""
        first = {axis: values[0] for axis, values in self.grid.items()}
        for axis, values in self.grid.items():
            given: dict[str, list[Any]] = {}  # validated config (JSON) -> the values of the axis giving it
            for value in values:
                cfg = TrialConfig.model_validate(self.trial_raw({**first, axis: value}, params))
                given.setdefault(cfg.model_dump_json(), []).append(value)
            repeated = [same for same in given.values() if len(same) > 1]
            if repeated:
                sets = "; ".join(" and ".join(shown(v) for v in same) for same in repeated)
                raise ConfigError(
                    f"grid.{clipped(axis)}: the values {clipped(sets)} are one value once validated, "
                    "so their grid points would train the same config; keep one of them"
                )


def load_sweep_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
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
        elif key.startswith("tune.params."):  # a tuned axis is a dotted key: tune.params.train.lr.low
            axis, field = _tuned_key(key.removeprefix("tune.params."))
            tune = data.setdefault("tune", {})
            if not isinstance(tune, dict):
                raise ConfigError(
                    f"tune is a value, not a section; cannot set {clipped(key)}; write tune as a "
                    "mapping (tune: {metric: ..., params: ...})"
                )
            if tune.get("params") is None:
                tune["params"] = {}
            params = tune["params"]
            if not isinstance(params, dict):
                raise ConfigError(
                    f"tune.params is {shown(params)}, not a mapping; cannot set {clipped(key)}; "
                    "write tune.params as a mapping of tuned axes"
                )
            if not field:
                params[axis] = value
            elif not isinstance(params.setdefault(axis, {}), dict):
                raise ConfigError(
                    f"tune.params.{clipped(axis)} is a value, not a distribution; cannot set "
                    f"{clipped(key)}; set tune.params.{clipped(axis)}={{type: ..., low: ..., high: ...}}"
                )
            else:
                set_dotted(params[axis], field, value)
        else:
            set_dotted(data, key, value)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid sweep spec: " + explain(err, SweepSpec)) from None
    narrowed = {
        key.removeprefix("grid.") for key in (_split_override(t)[0] for t in overrides) if key.startswith("grid.")
    }
    spec = without_claims_outside_grid(spec, narrowed)
    spec.check_trials()
    return spec


def without_claims_outside_grid(spec: SweepSpec, narrowed: set[str]) -> SweepSpec:
    """``spec`` without the claims whose cells (or ``than`` cell) a ``--set grid.<axis>=[...]``
    took out of the grid, each named in one line on stderr: a smaller run of a spec checks
    the claims it can still measure.  A value the spec's own grid never had stays an error."""
    kept = []
    for i, claim in enumerate(spec.expect):
        named = [*claim.cells.items(), *(claim.than or {}).items()]
        gone = [
            (axis, value)
            for axis, values in named
            if axis in narrowed
            for value in (values if isinstance(values, list) else [values])
            if not any(same_value(value, v) for v in spec.grid.get(axis, []))
        ]
        if gone:
            axis, value = gone[0]
            print(
                f"oodstudy: expect[{i}] ({claim.finding}) is not checked: it reads {axis}={value}, which "
                f"--set grid.{axis} took out of the grid",
                file=sys.stderr,
            )
        else:
            kept.append(claim)
    return spec if len(kept) == len(spec.expect) else spec.model_copy(update={"expect": kept})


def load_threshold_search(data: Any) -> ThresholdSearch:
    """The spec's ``threshold`` section, validated; every problem is one ConfigError line."""
    try:
        return ThresholdSearch.model_validate(data)
    except ValidationError as err:
        clauses = explain(err, ThresholdSearch, root=f"{SECTION}.")
        # the section-wide rules have no field of their own: their words already name the fields
        clauses = clauses.replace(f"{SECTION}.: ", "").replace(f"{SECTION}..", f"{SECTION}.")
        raise ConfigError(f"invalid {SECTION} section: {clauses}") from None
