"""Task families: a name -> class table.  ``build_task(cfg, seed, device)`` makes one."""

from __future__ import annotations

import torch

from study.config import ArithmeticTask as ArithmeticTaskConfig
from study.config import ICLTask as ICLTaskConfig
from study.tasks.base import Batch, ModelIO, Task


def _registry() -> dict[str, type]:
    from study.tasks.arithmetic import Arithmetic
    from study.tasks.functions import InContextRegression

    return {"arithmetic": Arithmetic, "icl": InContextRegression}


def build_task(cfg: ArithmeticTaskConfig | ICLTaskConfig, seed: int, device: torch.device | str = "cpu") -> Task:
    return _registry()[cfg.family](cfg, seed=seed, device=torch.device(device))


__all__ = ["Batch", "ModelIO", "Task", "build_task"]
