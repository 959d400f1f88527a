"""What every task family provides to the trainer.

A task owns its data (training sampler, fixed evaluation sets) and its metrics. The
trainer only calls the methods below; all randomness used for training batches comes
from the ``torch.Generator`` the trainer passes in (so a checkpoint that saves the
generator state resumes the exact data stream), and evaluation sets are built once,
at construction, from the trial seed (so every evaluation sees the same examples).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch
from torch import nn


@dataclass
class Batch:
    """One training batch on the task's device.

    inputs:  LongTensor [B, T] of token ids (token tasks) or FloatTensor [B, T, n_in].
    targets: what ``loss`` compares the model output with (task specific shape).
    mask:    BoolTensor [B, T], True where the output counts in the loss.
    positions: LongTensor [B, T] of position ids when the task computes them (the
             coupled, abacus and randomized schemes), else None.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor | None = None


@dataclass(frozen=True)
class ModelIO:
    """How the model must read and write this task's sequences."""

    n_in: int  # vocabulary size (tokens=True) or input vector size
    n_out: int  # vocabulary size (logits) or output size (regression)
    tokens: bool  # True: inputs are token ids; False: inputs are vectors (linear read-in)
    max_seq_len: int  # longest sequence the task ever feeds the model


class Task(Protocol):
    io: ModelIO

    def train_batch(self, batch_size: int, step: int, generator: torch.Generator) -> Batch: ...

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor: ...

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> list[dict[str, Any]]:
        """Eval rows: ``split`` ("id"/"ood"), ``metric``, ``value`` and condition columns."""
        ...

    @staticmethod
    @torch.no_grad()
    def evaluate_pack(tasks: list["Task"], model: nn.Module) -> list[list[dict[str, Any]]]:
        """:meth:`evaluate` of K tasks of one config on a pack of K members (inputs
        [K, n, ...]) in batched forwards: one row list per member, equal to each member's
        own :meth:`evaluate`."""
        ...

    @torch.no_grad()
    def representations(self, model: nn.Module, step: int | None = None) -> list[dict[str, Any]]:
        """Rows for the ``representations`` table (may be empty).  ``step``: the training step of
        this evaluation (probes may be due at some steps only); None: outside training (due)."""
        ...


T = TypeVar("T")


def given(value: T | None) -> T:
    """``value``, which the caller knows is set (e.g. every pack member's positions when the
    first member's are): an AssertionError if it is None."""
    assert value is not None, "a value the caller knows is set is None"
    return value


def as_pack(model: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A one-member model ``[n, ...] -> [n, ...]`` called as a pack of one: ``[1, n, ...] -> [1, n, ...]``
    (``positions`` passed on only when given, so models without position ids work), for the
    tasks' ``evaluate`` through their ``evaluate_pack``."""

    def pack(inputs: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        out = model(inputs[0]) if positions is None else model(inputs[0], positions=positions[0])
        return out[None]

    return pack
