"""Task families: a name -> class table.  ``build_task(cfg, seed, device)`` makes one."""

from __future__ import annotations

import importlib

import torch

from study.config import ArithmeticTask as ArithmeticTaskConfig
from study.config import ICLTask as ICLTaskConfig
from study.tasks.base import Batch, ModelIO, Task

# family name (the config's task.family) -> "module:class"; imported on first use
FAMILIES: dict[str, str] = {
    "arithmetic": "study.tasks.arithmetic:Arithmetic",
    "icl": "study.tasks.functions:InContextRegression",
}


def task_class(family: str) -> type:
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def build_task(cfg: ArithmeticTaskConfig | ICLTaskConfig, seed: int, device: torch.device | str = "cpu") -> Task:
    return task_class(cfg.family)(cfg, seed=seed, device=torch.device(device))


__all__ = ["FAMILIES", "Batch", "ModelIO", "Task", "build_task", "task_class"]
