"""Helpers the arithmetic tests share (not part of the service): render one example, and
the equivalence oracle written out."""

from __future__ import annotations

import torch

from study.tasks.arithmetic import Arithmetic
from study.tasks.arithmetic_config import PAD
from study.tasks.arithmetic_format import encode
from study.tasks.arithmetic_numbers import apply_op


def format_example(task: Arithmetic, a: int, b: int) -> str:
    """The full training sequence of one pair, e.g. format_example(task, 349, 705) -> '0034900705450100'."""
    pair = torch.tensor([[a, b]], device=task.device)
    enc = encode(pair[:, 0], pair[:, 1], task.cfg, max(len(str(a)), len(str(b))))
    return task.decode(enc.tokens[0]).rstrip(PAD) if not task.cfg.pad else task.decode(enc.tokens[0])


def equivalent_answer(a: torch.Tensor, b: torch.Tensor, n: int, op: str, modulus: int | None = None) -> torch.Tensor:
    """The equivalence oracle f(a mod 10^n, b mod 10^n) [mod p]: what an n-digit model answers OOD."""
    return apply_op(a % 10**n, b % 10**n, op, modulus)
