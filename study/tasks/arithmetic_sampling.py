"""Operand pairs of the arithmetic family: the training sampling rules, exact lengths for
evaluation, and distinct draws (a fixed training set and a disjoint test set).

Every draw comes from the generator it is given, on that generator's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from study.tasks.arithmetic_config import exact_range
from study.tasks.operations import INT64_MAX


def sample_pairs(n: int, sampling: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """Long [size, 2] of operand pairs drawn with replacement, on the generator's device.

    below: a, b uniform in [0, 10^n); ab: both uniform with exactly n digits; D: one
    operand (which one is a fair coin) with exactly n digits, the other in [0, 10^n);
    lengths: each operand's digit count uniform in 1..n, then the operand uniform among
    the numbers with that many digits (the training set of Cho et al., arXiv 2405.20671).
    """
    lo, hi = exact_range(n)
    dev = generator.device
    if sampling == "below":
        a = torch.randint(0, hi, (size,), generator=generator, device=dev)
        b = torch.randint(0, hi, (size,), generator=generator, device=dev)
    elif sampling == "ab":
        a = torch.randint(lo, hi, (size,), generator=generator, device=dev)
        b = torch.randint(lo, hi, (size,), generator=generator, device=dev)
    elif sampling == "D":
        long = torch.randint(lo, hi, (size,), generator=generator, device=dev)
        other = torch.randint(0, hi, (size,), generator=generator, device=dev)
        long_first = torch.rand(size, generator=generator, device=dev) < 0.5
        a, b = torch.where(long_first, long, other), torch.where(long_first, other, long)
    elif sampling == "lengths":
        a, b = (uniform_length_numbers(n, size, generator) for _ in range(2))
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    return torch.stack([a, b], dim=1)


def uniform_length_numbers(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Long [size]: a digit count uniform in 1..n, then a number uniform among those with
    exactly that many digits (one digit: 0-9)."""
    dev = generator.device
    count = torch.randint(1, n + 1, (size, 1), generator=generator, device=dev)
    digits = torch.randint(0, 10, (size, n), generator=generator, device=dev)  # least significant first
    top = torch.randint(1, 10, (size, 1), generator=generator, device=dev)
    i = torch.arange(n, device=dev)
    digits = torch.where(i == count - 1, torch.where(count == 1, digits, top), torch.where(i < count, digits, 0))
    return (digits * 10 ** torch.arange(n, device=dev)).sum(1)  # powers made on the device, as in num_digits


def sample_exact(len_a: int, len_b: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Long [size, 2]: a with exactly len_a digits, b with exactly len_b digits (uniform)."""
    (lo_a, hi_a), (lo_b, hi_b) = exact_range(len_a), exact_range(len_b)
    a = torch.randint(lo_a, hi_a, (size,), generator=generator, device=generator.device)
    b = torch.randint(lo_b, hi_b, (size,), generator=generator, device=generator.device)
    return torch.stack([a, b], dim=1)


def sample_exact_digits(len_a: int, len_b: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Long [size, 2, max(len_a, len_b)]: digit rows of a with exactly len_a digits and b with
    exactly len_b digits, uniform (the leading digit 1-9, the others 0-9; one digit: 0-9)."""
    L, dev = max(len_a, len_b), generator.device
    rows = []
    for n in (len_a, len_b):
        low = torch.randint(0, 10, (size, n - 1), generator=generator, device=dev)
        top = torch.randint(0 if n == 1 else 1, 10, (size, 1), generator=generator, device=dev)
        rows.append(F.pad(torch.cat([low, top], 1), (0, L - n)))
    return torch.stack(rows, 1)


def pair_base(*pairs: torch.Tensor) -> int | None:
    """M such that key = a * M + b is one distinct int64 per pair of all the Long [N, 2]
    inputs (M = 1 + the largest b), or None when such keys would overflow int64."""
    rows = torch.cat(pairs)
    if not len(rows):
        return 1
    max_a, max_b = (int(v) for v in rows.max(0).values)
    return max_b + 1 if max_a * (max_b + 1) + max_b <= INT64_MAX else None


def rows_in(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bool [N]: whether each row of x [N, 2] is also a row of y [M, 2]."""
    M = pair_base(x, y)
    if M is not None:  # sorted keys of y, binary search for each key of x
        y_keys = torch.sort(y[:, 0] * M + y[:, 1]).values
        x_keys = x[:, 0] * M + x[:, 1]
        at = torch.searchsorted(y_keys, x_keys).clamp(max=max(len(y_keys) - 1, 0))
        return (y_keys[at] == x_keys) if len(y_keys) else torch.zeros_like(x_keys, dtype=torch.bool)
    _, inverse = torch.unique(torch.cat([y, x]), dim=0, return_inverse=True)
    in_y = torch.zeros(len(y) + len(x), dtype=torch.bool, device=x.device)
    in_y[inverse[: len(y)]] = True
    return in_y[inverse[len(y) :]]


def unique_rows(x: torch.Tensor) -> torch.Tensor:
    """The distinct rows of x [N, 2], sorted."""
    M = pair_base(x)
    if M is None:
        return torch.unique(x, dim=0)
    keys = torch.unique(x[:, 0] * M + x[:, 1])
    return torch.stack([keys // M, keys % M], dim=1)


def draw_distinct(
    n: int, sampling: str, size: int, generator: torch.Generator, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Long [size, 2]: `size` distinct pairs from the sampling rule, none of them in `exclude`.

    Draws rounds of pairs, keeps the distinct ones not excluded, and finally takes a random
    `size` of them (close to sampling without replacement from the rule's distribution).
    """
    pool = torch.empty(0, 2, dtype=torch.long, device=generator.device)
    for _ in range(200):
        fresh = sample_pairs(n, sampling, max(2 * (size - len(pool)), size) + 64, generator)
        pool = unique_rows(torch.cat([pool, fresh]))
        if exclude is not None and len(exclude):
            pool = pool[~rows_in(pool, exclude)]
        if len(pool) >= size:
            return pool[torch.randperm(len(pool), generator=generator, device=generator.device)[:size]]
    raise ValueError(
        f"could not find {size} distinct {sampling} pairs of {n} digits outside the other training "
        "component; lower task.train_size / task.train_fraction or task.mix_weight"
    )
