"""A task family as one record: everything the service and the analysis know about it.

Config validation, ``build_task``, the memory estimate (:mod:`study.memory`) and the
analysis read a family's facts from its :class:`Family` record, registered once in
:data:`study.tasks.FAMILIES`; none of them branches on a family's name.  Torch-free: the
task class is named as ``"module:class"`` and imported on first use, so a config is
checked before torch is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSizes:
    """The sizes of one task config that a trial's memory grows with (:mod:`study.memory`),
    computed by the family from the config's own functions (vocabulary, sequence length,
    evaluated conditions), never restated elsewhere."""

    n_in: int  # vocabulary size (token inputs) or input vector size
    n_out: int  # vocabulary size (logits) or output size (regression)
    tokens: bool  # True: an embedding table reads the inputs; False: a linear layer with a bias
    sequence: int  # positions of the longest full sequence of training or evaluation
    conditions: int  # evaluation conditions built at construction
    eval_rows: int  # sequences of one evaluation forward
    eval_set_bytes: int  # the evaluation sets built at construction (and what building them keeps)
    train_set_bytes: int  # a fixed training set (0: fresh samples every step)
    example_bytes: int  # one training example's data and the draws that make it
    probe_rows: int = 0  # probe inputs whose kept hidden states are alive together (0: no probes)
    probe_forward_rows: int = 0  # sequences of the largest probed forward
    probe_layers: int = 0  # hidden states a probed forward keeps per position (each of d_model values)
    probe_attention: bool = False  # a probed forward keeps every block's attention weights


@dataclass(frozen=True)
class Family:
    """One task family (the trial config's ``task.family``)."""

    name: str
    config: type  # its config section (a study.section.Section), torch-free
    task: str  # "module:class" of the task, imported on first use (see study.tasks.task_class)
    metrics: dict[str, str]  # per-condition metric -> direction ("max": higher is better, "min": lower)
    primary_metric: str  # the headline of its breakdown table
    summary_metrics: Callable[[Any], set[str]]  # config -> the "<split>_<metric>" names its trials report
    missing_metric_hint: Callable[[Any, str], str]  # (config, summary metric) -> why not reported, and the fix
    conditions: tuple[str, ...]  # the eval-row columns that name a condition (what analysis groups by)
    shift_axis: str | None  # the one shift axis its conditions lie on ("length"); None: rows name theirs in `shift`
    sizes: Callable[[Any, int], TaskSizes]  # (config, model n_layer) -> what the memory estimate reads
    size_fields: tuple[str, ...]  # its config fields that drive the estimate (study.memory.driving_field tries them)
    # (config, scheme, model.max_position) -> None, or ValueError naming the field: a position scheme whose
    # ids the task computes; None: its sequences have no position ids to compute
    check_position_scheme: Callable[[Any, str, int], None] | None = None
