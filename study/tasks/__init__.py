"""Task families: one :class:`~study.tasks.family.Family` record each, registered once in
:data:`FAMILIES` (a name -> record table) and read everywhere.  ``build_task(cfg, seed,
device)`` makes one task.

Each family has two modules: ``<family>_config`` (torch-free: its config class, the
names it accepts, its metrics and their directions, its limits and sizes) and the task
itself (torch).  This package imports only the config modules, so a config is checked
before torch is imported; the task class is imported on first use.

Adding a family: its two modules, and its record in :data:`FAMILIES`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from study.errors import ConfigError
from study.tasks import arithmetic_config, functions_config
from study.tasks.family import Family, TaskSizes
from study.naming import summary_metric

if TYPE_CHECKING:
    import torch

    from study.tasks.base import Task

SPLITS = ("id", "ood")
LOSS = "loss"
LONG = 8  # bytes of an int64 value


def arithmetic_sizes(cfg: arithmetic_config.ArithmeticTask, n_layer: int) -> TaskSizes:
    """What the memory estimate reads of an arithmetic config (see :mod:`study.memory`), from
    its own vocabulary, longest sequence (index hints included) and evaluated (len_a, len_b)
    conditions: each condition's candidates (2E + 64 pairs drawn, their membership test) and
    encoded examples; a fixed training set and the draws that exclude it; a probed forward
    over one batch of probe inputs (the ID points, and half as many per longer length)
    keeping the hidden states it probes and, with attention probes, every block's weights."""
    seq = arithmetic_config.longest_input(cfg) + 1
    vocab = len(arithmetic_config.vocabulary(cfg))
    conditions = len(cfg.evaluated_pairs)  # the square of the evaluated lengths, or its diagonal
    eval_sets = conditions * (2 * cfg.eval_examples + 64) * 2 * LONG * 2
    eval_sets += conditions * cfg.eval_examples * (seq + 2) * LONG
    train_set = 3 * arithmetic_config.fixed_set_size(cfg)[0] * 2 * LONG if cfg.train_set == "fixed" else 0
    probes = cfg.probes
    probe_pairs = probes.points + probes.points // 2 * max(cfg.evaluated_lengths)
    probe_rows = min(cfg.eval_batch_size, probe_pairs) if probes.enabled else 0
    layers = n_layer + 1 if probes.layers == "all" else len(probes.layers) if isinstance(probes.layers, list) else 1
    return TaskSizes(
        n_in=vocab,
        n_out=vocab,
        tokens=True,
        sequence=seq,
        conditions=conditions,
        eval_rows=min(cfg.eval_batch_size, conditions * cfg.eval_examples),
        eval_set_bytes=eval_sets,
        train_set_bytes=train_set,
        example_bytes=seq * LONG * 3,
        probe_rows=probe_rows,
        probe_forward_rows=probe_rows,
        probe_layers=layers,
        probe_attention=probes.attention,
    )


def _register(*families: Family) -> dict[str, Family]:
    """name -> record; a name given twice is a bug."""
    table = {record.name: record for record in families}
    assert len(table) == len(families), "two task families of one name"
    return table


FAMILIES: dict[str, Family] = _register(
    Family(
        name=arithmetic_config.FAMILY,
        config=arithmetic_config.ArithmeticTask,
        task="study.tasks.arithmetic:Arithmetic",
        metrics=arithmetic_config.METRICS,
        primary_metric=arithmetic_config.PRIMARY_METRIC,
        summary_metrics=arithmetic_config.summary_metrics,
        missing_metric_hint=arithmetic_config.missing_metric_hint,
        conditions=("len_a", "len_b"),
        shift_axis="length",
        sizes=arithmetic_sizes,
        size_fields=("eval_examples", "eval_batch_size", "eval_max_len", "width", "train_size", "train_fraction"),
        check_position_scheme=arithmetic_config.check_position_scheme,
    ),
    Family(
        name=functions_config.FAMILY,
        config=functions_config.ICLTask,
        task="study.tasks.functions:InContextRegression",
        metrics=functions_config.METRICS,
        primary_metric=functions_config.PRIMARY_METRIC,
        summary_metrics=functions_config.summary_metrics,
        missing_metric_hint=functions_config.missing_metric_hint,
        conditions=("shift", "shift_value", "n_context"),
        shift_axis=None,
        sizes=functions_config.task_sizes,
        size_fields=("n_dims", "n_points", "eval_prompts", "relu_width", "shifts"),
    ),
)
DEFAULT_FAMILY = arithmetic_config.FAMILY  # a task config without task.family (and a trials row without one)


def family(name: str) -> Family:
    """The record of family ``name``; a ConfigError naming the known families for any other name."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown task family {name!r}; use one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_metric(metric: str) -> Family | None:
    """The family that declares per-condition ``metric`` (``exact_match``, ``nmse_lstsq``), or None."""
    return next((f for f in FAMILIES.values() if metric in f.metrics), None)


def summary_metrics(cfg: Any) -> set[str]:
    """The summary metrics a trial of this task config reports, the training ``loss`` included."""
    return {LOSS} | family(cfg.family).summary_metrics(cfg)


def metric_direction(name: str) -> str | None:
    """``"max"`` or ``"min"`` for a per-condition metric (``nmse``), a summary metric
    (``id_nmse``) or the training ``loss``; None for a name no family reports."""
    if name == LOSS:
        return "min"
    for record in FAMILIES.values():
        for metric, direction in record.metrics.items():
            if name == metric or name in (summary_metric(split, metric) for split in SPLITS):
                return direction
    return None


def task_class(name: str) -> type:
    """The task class of family ``name``, imported on first use."""
    module, attribute = family(name).task.split(":")
    return getattr(importlib.import_module(module), attribute)


def build_task(
    cfg: Any,
    seed: int,
    device: torch.device | str = "cpu",
    position_scheme: str | None = None,
    max_position: int = 64,
) -> Task:
    """The task of ``cfg``; ``position_scheme`` (coupled, abacus, randomized) makes it
    compute position ids for the model, in a table of ``max_position`` ids."""
    import torch

    if position_scheme is None:
        return task_class(cfg.family)(cfg, seed=seed, device=torch.device(device))
    return task_class(cfg.family)(
        cfg, seed=seed, device=torch.device(device), position_scheme=position_scheme, max_position=max_position
    )


__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "LOSS",
    "SPLITS",
    "Family",
    "TaskSizes",
    "build_task",
    "family",
    "family_of_metric",
    "metric_direction",
    "summary_metrics",
    "task_class",
]
