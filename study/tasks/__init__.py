"""Task families: a name -> class table, and each family's metrics.  ``build_task(cfg,
seed, device)`` makes one task.

Each family has two modules: ``<family>_config`` (torch-free: its config class, the
names it accepts, its metrics and their directions, its limits) and the task itself
(torch).  This package imports only the config modules, so a config is checked
before torch is imported; the task class is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from study.tasks import arithmetic_config, functions_config

if TYPE_CHECKING:
    import torch

    from study.tasks.base import Task

# family name (the config's task.family) -> "module:class"; imported on first use
FAMILIES: dict[str, str] = {
    arithmetic_config.FAMILY: "study.tasks.arithmetic:Arithmetic",
    functions_config.FAMILY: "study.tasks.functions:InContextRegression",
}

# family -> its per-condition metrics -> direction ("max": higher is better, "min": lower).
# A trial's summary metrics are "<split>_<metric>" (mean over the split's conditions)
# plus the training "loss".
METRICS: dict[str, dict[str, str]] = {
    arithmetic_config.FAMILY: arithmetic_config.METRICS,
    functions_config.FAMILY: functions_config.METRICS,
}
# family -> the metric its breakdown table leads with
PRIMARY_METRICS: dict[str, str] = {
    arithmetic_config.FAMILY: arithmetic_config.PRIMARY_METRIC,
    functions_config.FAMILY: functions_config.PRIMARY_METRIC,
}
# family -> (config -> the summary metrics its trials report, (config, metric) -> why not)
SUMMARY_METRICS = {
    arithmetic_config.FAMILY: arithmetic_config.summary_metrics,
    functions_config.FAMILY: functions_config.summary_metrics,
}
MISSING_METRIC_HINTS = {
    arithmetic_config.FAMILY: arithmetic_config.missing_metric_hint,
    functions_config.FAMILY: functions_config.missing_metric_hint,
}
SPLITS = ("id", "ood")
LOSS = "loss"


def summary_metrics(cfg: arithmetic_config.ArithmeticTask | functions_config.ICLTask) -> set[str]:
    """The summary metrics a trial of this task config reports, the training ``loss`` included."""
    return {LOSS} | SUMMARY_METRICS[cfg.family](cfg)


def metric_direction(name: str) -> str | None:
    """``"max"`` or ``"min"`` for a per-condition metric (``nmse``), a summary metric
    (``id_nmse``) or the training ``loss``; None for a name no family reports."""
    if name == LOSS:
        return "min"
    for metrics in METRICS.values():
        for metric, direction in metrics.items():
            if name == metric or name in (f"{split}_{metric}" for split in SPLITS):
                return direction
    return None


def task_class(family: str) -> type:
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def build_task(
    cfg: arithmetic_config.ArithmeticTask | functions_config.ICLTask,
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
    return task_class(cfg.family)(cfg, seed=seed, device=torch.device(device),
                                  position_scheme=position_scheme, max_position=max_position)


__all__ = ["FAMILIES", "METRICS", "PRIMARY_METRICS", "build_task", "metric_direction", "summary_metrics", "task_class"]
