"""How much memory one trial needs, estimated from its config before anything is built.

A trial that cannot fit would allocate until it dies (an evaluation set of 10^10
examples, a width of 10^6, a batch of 10^9); :func:`check_fits` refuses it first, with
the config field that drives the estimate.  The estimate is an upper-bound sketch in
bytes, in fp32 (bf16 autocast only lowers it), from the quantities that grow:

- parameters P of the transformer (``12 L d^2`` in the blocks, plus read-in, position
  table and read-out) and, per parameter, its gradient and AdamW's two moments:
  ``16 P`` bytes;
- training activations kept for the backward pass, per layer and token about ``16 d``
  values plus ``7 H T`` for the attention scores, mask, softmax, dropout mask and their
  gradients (the math attention kernel materializes them), and the logits three times;
- evaluation activations: one forward at the evaluation batch (arithmetic
  ``task.eval_batch_size`` rows, in-context regression one condition's
  ``task.eval_prompts`` prompts) or of the largest probed forward, whichever is larger,
  one block alive at a time (``11 d`` values per token: the residual stream before and after
  its MLP, its LayerNorm, the fc output and its GELU);
- probes (``task.probes``): a probed forward keeps the hidden states it reads and, with
  attention probes, every block's attention weights (``L H T^2``); arithmetic probes one
  member over one batch of probe inputs (up to ``eval_batch_size`` rows), the in-context
  coefficient probe keeps the final state of every probe prompt;
- evaluation sets built at construction (arithmetic: every evaluated (len_a, len_b) condition, of
  ``eval_examples`` encoded examples and the candidates they are drawn from; icl: every
  condition's prompts, and the probe's) and a fixed training set;

The task's own sizes (vocabulary, sequence length, evaluated conditions, the sets it
builds) come from its family's record (``study.tasks.FAMILIES``), computed by the
family's config module from the config's own functions.
- a pack of K models (``pack.size`` when the config has it) multiplies the model,
  optimizer and activation terms by K;
- a fixed 256 MiB for the runtime itself.

``bench/memory_estimate.py`` compares the estimate with measured peaks.

Pure functions of the config, except :func:`available_bytes`, the one that reads the
machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from study.errors import ConfigError
from study.tasks import family

FLOAT = 4  # bytes of an fp32 value
RUNTIME = 256 * 2**20  # what a process that trains takes beyond its tensors (kernels, allocator pools)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part of one trial (a pack of K included); ``total`` is their sum."""

    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def largest(self) -> str:
        return max(self.parts, key=self.parts.__getitem__)


def pack_size(cfg: Any) -> int:
    """K, the models trained together in one trial (``pack.size``; 1 without a pack)."""
    return int(getattr(getattr(cfg, "pack", None), "size", 1) or 1)


def estimate_trial_memory(cfg: Any) -> MemoryEstimate:
    """The memory estimate of one trial of a :class:`~study.config.TrialConfig`; the task's
    sizes come from its family's record (:class:`study.tasks.TaskSizes`)."""
    (n_layer, n_head, d), batch = cfg.model.shape, cfg.train.batch_size
    k = pack_size(cfg)
    task = family(cfg.task.family).sizes(cfg.task, n_layer)
    seq, n_in, n_out = task.sequence, task.n_in, task.n_out
    read_in = n_in * d + (0 if task.tokens else d)  # an embedding table, or a linear layer
    params = n_layer * (12 * d * d + 13 * d) + read_in + seq * d + d * n_out + n_out + 2 * d
    per_token_train = n_layer * (16 * d + 7 * n_head * seq) + 2 * d + 3 * n_out
    # one block alive at a time: its MLP keeps the residual stream before and after it, its
    # LayerNorm, the fc output and its GELU (11 d); vector inputs are stacked for the forward
    per_token_eval = 11 * d + 2 * n_head * seq + 2 * n_out + (0 if task.tokens else n_in)
    eval_rows = max(task.eval_rows, task.probe_forward_rows)  # a probed forward is an evaluation forward too
    # a probed forward keeps the hidden states it probes and (attention probes) every block's attention weights
    probe_values = task.probe_layers * seq * d + (n_layer * n_head * seq * seq * 2 if task.probe_attention else 0)
    return MemoryEstimate(
        {
            "weights, gradients and AdamW state": k * 16 * params,
            "training activations": k * batch * seq * per_token_train * FLOAT + k * batch * task.example_bytes,
            "evaluation activations": k * eval_rows * seq * per_token_eval * FLOAT,
            "probe activations": task.probe_rows * probe_values * FLOAT,
            "evaluation sets": task.eval_set_bytes,
            "training set": task.train_set_bytes,
            "runtime (torch, allocator)": RUNTIME,
        }
    )


# The config fields that size a trial, by section (the ones :func:`driving_field` tries), besides
# the task's own (its family record's ``size_fields``).
SIZE_FIELDS = {
    "model": ("d_model", "n_layer", "n_head", "size"),
    "train": ("batch_size",),
    "pack": ("size",),
}


def _with_default(cfg: Any, section: str, name: str) -> Any | None:
    """``cfg`` with one field back at its default (unvalidated), or None if it is there already."""
    part = getattr(cfg, section, None)
    if part is None or name not in type(part).model_fields:
        return None
    field = type(part).model_fields[name]
    default = field.get_default(call_default_factory=True)
    if getattr(part, name) == default:
        return None
    return cfg.model_copy(update={section: part.model_copy(update={name: default})})


def driving_field(cfg: Any) -> tuple[str, Any, Any, int] | None:
    """The field whose value drives the estimate most: ``(dotted name, value, default,
    estimate with the default)``, the one whose default lowers the estimate most; None
    when every size field is at its default."""
    best = None
    for section, names in {"task": family(cfg.task.family).size_fields, **SIZE_FIELDS}.items():
        for name in names:
            lowered = _with_default(cfg, section, name)
            if lowered is None:
                continue
            estimate = estimate_trial_memory(lowered).total
            if best is None or estimate < best[3]:
                default = getattr(getattr(lowered, section), name)
                best = (f"{section}.{name}", getattr(getattr(cfg, section), name), default, estimate)
    return best


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n < 2**40 else f"{n / 2**40:.4g} TiB"


def check_fits(cfg: Any, budget: int, where: str, context: str = "") -> MemoryEstimate:
    """Refuse (ConfigError) a trial whose estimate exceeds ``budget`` bytes of ``where``
    (e.g. "the available RAM"), naming the field that drives it; else return the estimate."""
    estimate = estimate_trial_memory(cfg)
    if estimate.total <= budget:
        return estimate
    largest = estimate.largest()
    driver = driving_field(cfg)
    prefix = f"{context}: " if context else ""
    if driver is not None and driver[3] < estimate.total:
        name, value, default, lowered = driver
        at = f"at its default {default}" if default is not None else "without it"
        fix = f"{name}={value} drives it ({at} the estimate is {gib(lowered)}); lower {name}"
    else:
        fix = "lower the model size, train.batch_size or the evaluation sizes"
    raise ConfigError(
        f"{prefix}a trial needs about {gib(estimate.total)} ({largest}: {gib(estimate.parts[largest])}) but "
        f"{where} is {gib(budget)}; {fix}"
    )


def available_bytes(device: str, gpu_share: float = 1.0) -> tuple[int, str]:
    """(bytes a trial may use, what they are) on this machine: the available RAM for
    ``cpu``/``mps``, ``gpu_share`` of CUDA device 0's memory for ``cuda``."""
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        share = min(1.0, gpu_share) if gpu_share > 0 else 1.0
        return int(total * share), f"{share:g} of the memory of {torch.cuda.get_device_name(0)}"
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
        return info["MemAvailable"], "the available RAM"
    except (OSError, KeyError, ValueError, IndexError):
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "the RAM"
