"""n-digit addition and multiplication as token sequences, and their OOD metrics.

A sequence is ``operand a, [op], operand b, [=], answer`` over a vocabulary of the ten
digits (token id d for digit d) plus only the symbols the format needs:

- ``pad=True``: operands zero-padded to ``width`` digits, the answer zero-padded to a
  fixed width (``width+1`` for add, ``2*width`` for mul, the digit count of ``p-1`` with a
  modulus p).  Every sequence has the same length, so symbols are optional.  The
  2308.08268 format (width 5, reversed, no symbols) renders 349+705 as the 16 tokens
  ``00349 00705 450100``.
- ``pad=False``: operands and answer without leading zeros, then an end token ``$``;
  the fields must be separated, so ``symbols=True`` is required (``349+705=4501$``).
  Training batches mixing lengths are right-padded with a pad token ``_``.

``reverse=True`` writes the answer least significant digit first.

Training batch convention (next-token prediction on the full sequence ``tokens [B, T]``)::

    inputs  = tokens[:, :-1]            [B, T-1]  what the model reads
    targets = tokens[:, 1:]             [B, T-1]  output t predicts targets[t] = tokens[t+1]
    mask    = answer[:, 1:]             [B, T-1]  True where targets[t] is an answer token
                                                  (digits, and the end token when unpadded;
                                                  never prompt or pad positions)

Evaluation draws a grid of operand lengths (len_a, len_b) in 1..eval_max_len once, from
the seed.  A condition is "id" when max(len_a, len_b) <= n, the longest training length,
else "ood".  Answers are decoded greedily and scored against the true answer and against
the *equivalence* answer f(a mod 10^n, b mod 10^n) [mod p] (Xu et al., arXiv 2308.08268
and 2407.17963).

Numbers are int64 tensors (Long [N]) up to 18 digits.  Evaluation operands beyond that
(``task.width`` and the evaluated lengths go up to 40) are *digit rows*, Long [N, w] with
the least significant digit first; their sums are computed digit by digit, their residues
mod p by Horner's rule, and the equivalence answer reads only their low n digits.
Training operands stay within 18 digits; multiplication without a modulus within 9 (the
product must fit int64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from study.tasks.arithmetic_config import (
    END,
    HINTS,
    ID_RULES,
    INT64_DIGITS,
    INT64_MAX,
    OP_SYMBOL,
    PAD,
    ArithmeticTask,
    answer_digits,
    answer_width,
    check_position_scheme,
    check_supported,
    exact_range,
    field_width,
    fixed_set_size,
    hint_factor,
    prompt_length,
    sequence_length,
    split_by_weight,
    training_components,
    training_field_digits,
    vocabulary,
)
from study.tasks.base import Batch, ModelIO, as_pack

REPR_POINTS = 256  # probe pairs per split for the units-digit PCA
PROBE_TEST_SHARE = 0.25  # of the ID probe inputs, held out to score the probes
FINAL_LAYER = -1  # the ``layer`` of the final hidden state (after the last block and norm)
# generator streams of the task seed beyond 0-4 (train/test, eval sets, PCA pairs, probe set, PCA ids)
EVAL_ID_STREAM = 5  # randomized positions: the fixed ids of the evaluation sequences
PROBE_ID_STREAM = 6  # randomized positions: the ids of the probe sequences


# --------------------------------------------------------------------------- numbers


def apply_op(a: torch.Tensor, b: torch.Tensor, op: str, modulus: int | None = None) -> torch.Tensor:
    """f(a, b) = a+b or a*b, reduced mod p when a modulus is given.  Long [...] -> Long [...]."""
    if modulus is not None:
        a, b = a % modulus, b % modulus  # keeps a*b inside int64 for p <= 3e9
    c = a + b if op == "add" else a * b
    return c if modulus is None else c % modulus


def equivalent_answer(a: torch.Tensor, b: torch.Tensor, n: int, op: str, modulus: int | None = None) -> torch.Tensor:
    """The equivalence oracle f(a mod 10^n, b mod 10^n) [mod p]: what an n-digit model answers OOD."""
    return apply_op(a % 10**n, b % 10**n, op, modulus)


def to_digits(x: torch.Tensor, n: int) -> torch.Tensor:
    """The n lowest decimal digits of x >= 0, least significant first.  Long [N] -> Long [N, n]."""
    out = []
    for _ in range(n):  # a loop over digit positions; every step is vectorized over N
        out.append(x % 10)
        x = x // 10
    return torch.stack(out, dim=-1) if out else x.new_zeros(*x.shape, 0)


def num_digits(x: torch.Tensor) -> torch.Tensor:
    """Decimal digit count of x >= 0 (0 has one digit).  Long [N] -> Long [N]."""
    powers = 10 ** torch.arange(1, 19, device=x.device)  # made on the device: no host copy (a CUDA sync) per call
    return 1 + (x[..., None] >= powers).sum(-1)


def as_digits(x: torch.Tensor, w: int) -> torch.Tensor:
    """The w lowest digits, least significant first, of numbers Long [N] or of digit rows
    Long [N, m]: Long [N, w] (zeros above the number)."""
    if x.dim() == 1:
        return to_digits(x, w)
    return x[:, :w] if x.shape[1] >= w else F.pad(x, (0, w - x.shape[1]))


def digit_count(x: torch.Tensor) -> torch.Tensor:
    """Decimal digit count of numbers Long [N] or digit rows Long [N, m] (0 has one digit): Long [N]."""
    if x.dim() == 1:
        return num_digits(x)
    nonzero = (x != 0).flip(1).to(torch.int8)  # most significant first
    return torch.where(nonzero.any(1), x.shape[1] - nonzero.argmax(1), 1)


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


def add_digits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b of digit rows Long [N, m] (shorter rows are zero-extended): Long [N, m + 1]."""
    w = max(a.shape[1], b.shape[1])
    a, b = as_digits(a, w), as_digits(b, w)
    out, carry = [], torch.zeros_like(a[:, 0])
    for i in range(w):  # a loop over digit positions; every step is vectorized over N
        total = a[:, i] + b[:, i] + carry
        out.append(total % 10)
        carry = total // 10
    return torch.stack(out + [carry], 1)


def residue(x: torch.Tensor, modulus: int) -> torch.Tensor:
    """x mod p of digit rows Long [N, m], by Horner's rule: Long [N] (p <= 10^17 keeps 10 x in int64)."""
    r = torch.zeros_like(x[:, 0])
    for i in range(x.shape[1] - 1, -1, -1):
        r = (r * 10 + x[:, i]) % modulus
    return r


def low_number(x: torch.Tensor, n: int) -> torch.Tensor:
    """x mod 10^n of numbers Long [N] or digit rows Long [N, m] (n <= 18): Long [N]."""
    if x.dim() == 1:
        return x % 10**n
    return (as_digits(x, n) * 10 ** torch.arange(n, device=x.device)).sum(1)


def answer_of(a: torch.Tensor, b: torch.Tensor, op: str, modulus: int | None = None) -> torch.Tensor:
    """f(a, b) [mod p] of numbers (Long [N]), or of digit rows (Long [N, m]): the sum's digit
    rows Long [N, m + 1], or with a modulus the residue Long [N].  Products of digit rows
    are refused (the config keeps multiplication without a modulus within int64)."""
    if a.dim() == 1:
        return apply_op(a, b, op, modulus)
    if modulus is not None:
        return apply_op(residue(a, modulus), residue(b, modulus), op, modulus)
    if op == "add":
        return add_digits(a, b)
    raise ValueError("products of operands beyond int64 need task.modulus")


def equivalent_of(a: torch.Tensor, b: torch.Tensor, n: int, op: str, modulus: int | None = None) -> torch.Tensor:
    """The equivalence answer f(a mod 10^n, b mod 10^n) [mod p] of numbers or digit rows: Long [N]."""
    return apply_op(low_number(a, n), low_number(b, n), op, modulus)


def carry_into(a: torch.Tensor, b: torch.Tensor, i: int, op: str) -> torch.Tensor:
    """The carry into answer digit i of f(a, b): floor(partial / 10^i), where partial is the sum of
    the terms of significance below i (add: a mod 10^i + b mod 10^i; mul: a_j b_k 10^(j+k) over
    j + k < i).  0 for the units digit.  Long [N] -> Long [N]."""
    if op == "add":
        return (a % 10**i + b % 10**i) // 10**i
    da, db = to_digits(a, i), to_digits(b, i)  # [N, i]
    partial = torch.zeros_like(a)
    for j in range(i):  # a loop over digit pairs; every step is vectorized over N
        for k in range(i - j):
            partial += da[:, j] * db[:, k] * 10 ** (j + k)
    return partial // 10**i


# --------------------------------------------------------------------------- sampling


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


# --------------------------------------------------------------------------- format


def with_hints(digits: torch.Tensor, significance: torch.Tensor, cfg: ArithmeticTask) -> torch.Tensor:
    """digits Long [N, w] -> [N, 2w]: each digit preceded by the hint token of its
    significance (Long [w] or [N, w]), e.g. 349 -> c3 b4 a9 (Zhou et al., arXiv 2402.09371)."""
    first_hint = vocabulary(cfg).index(HINTS[0])
    hints = (first_hint + significance).expand_as(digits)
    return torch.stack([hints, digits], dim=-1).flatten(-2)


def compact(tokens: torch.Tensor, keep: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move the kept tokens of each row to the front (in order), fill the tail with pad_id.

    tokens Long [N, L], keep Bool [N, L] -> (tokens Long [N, L], kept Bool [N, L], order Long
    [N, L]), where new column j holds old column order[:, j].
    """
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    kept = keep.gather(1, order)
    return torch.where(kept, tokens.gather(1, order), pad_id), kept, order


def operand_field(x: torch.Tensor, w: int, pad: bool, written: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The w-digit field of operands x (Long [N], or digit rows [N, m]), most significant
    first, and which digits are written.

    Returns (tokens Long [N, w], keep Bool [N, w]); unpadded keeps no leading zeros, or,
    given ``written`` (Long [N], each >= the operand's digit count), its low written[i] digits.
    """
    field = as_digits(x, w).flip(-1)
    significance = torch.arange(w - 1, -1, -1, device=x.device)
    if pad:
        return field, torch.ones_like(field, dtype=torch.bool)
    return field, significance < (digit_count(x) if written is None else written)[:, None]


def operand_tokens(x: torch.Tensor, cfg: ArithmeticTask, n: int,
                   written: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An operand's field tokens, which are written, and each token's significance (the
    power of 10 of its digit; a hint token carries its digit's), all [N, field_width]."""
    w = cfg.width if cfg.pad else n
    field, keep = operand_field(x, w, cfg.pad, written)
    significance = torch.arange(w - 1, -1, -1, device=x.device).expand_as(field)
    if cfg.index_hints:
        return with_hints(field, significance, cfg), keep.repeat_interleave(2, 1), significance.repeat_interleave(2, 1)
    return field, keep, significance


def answer_significance(cfg: ArithmeticTask, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Long [k]: the significance of each of the k answer slots (reversed: slot j // tokens
    per digit; the end token's slot is one past the last digit).  Depends on the format
    only, never on the answer's value, so a decoded answer of any length gets the same ids."""
    digit_slot = torch.arange(k, device=device) // hint_factor(cfg)
    return digit_slot if cfg.reverse else (k // hint_factor(cfg) - 1 - digit_slot).clamp(min=-1)


def encode_answer(c: torch.Tensor, cfg: ArithmeticTask, k: int) -> torch.Tensor:
    """The k answer tokens for answers c (Long [N], or digit rows [N, m]): Long [N, k].

    Padded: the k-digit zero-padded answer.  Unpadded: its digits, the end token, then pad
    tokens up to k.  Reversed formats write the least significant digit first.
    """
    if cfg.pad:
        digits = as_digits(c, k // hint_factor(cfg))
        digits = digits if cfg.reverse else digits.flip(-1)
        if cfg.index_hints:
            significance = answer_significance(cfg, k, c.device)[1::2]
            return with_hints(digits, significance, cfg)
        return digits
    vocab = vocabulary(cfg)
    digits = as_digits(c, k - 1)
    keep = torch.arange(k - 1, device=c.device) < digit_count(c)[:, None]
    if not cfg.reverse:
        digits, keep = digits.flip(-1), keep.flip(-1)
    end = torch.full_like(digits[:, :1], vocab.index(END))
    tokens, _, _ = compact(torch.cat([digits, end], 1), torch.cat([keep, torch.ones_like(keep[:, :1])], 1), vocab.index(PAD))
    return tokens


@dataclass
class Encoded:
    """Full sequences of a batch of pairs.

    tokens:       Long [N, T]  prompt then answer (then pad tokens when unpadded)
    answer:       Bool [N, T]  True at answer tokens (digits, and the end token when unpadded)
    prompt_len:   Long [N]     tokens before the first answer token
    significance: Long [N, T]  the power of 10 of each token's digit (hints: their digit's);
                               every answer slot by :func:`answer_significance`; -1 at
                               symbols (in the prompt) and at pads after the answer
    """

    tokens: torch.Tensor
    answer: torch.Tensor
    prompt_len: torch.Tensor
    significance: torch.Tensor


def encode(a: torch.Tensor, b: torch.Tensor, cfg: ArithmeticTask, n: int,
           written: tuple[torch.Tensor, torch.Tensor] | None = None) -> Encoded:
    """Token sequences for the pairs (a[i], b[i]); T = sequence_length(cfg, n).

    a, b: Long [N] operands, or digit rows Long [N, m], with at most n digits (padded
    formats always use cfg.width).  written: unpadded only, the digits to write of each
    operand (Long [N] each, between its digit count and n; leading zeros fill the rest).
    """
    vocab = vocabulary(cfg)
    N = a.shape[0]
    ones = torch.ones(N, 1, dtype=torch.bool, device=a.device)
    a_tok, a_keep, a_sig = operand_tokens(a, cfg, n, written[0] if written else None)
    b_tok, b_keep, b_sig = operand_tokens(b, cfg, n, written[1] if written else None)
    ans = encode_answer(answer_of(a, b, cfg.op, cfg.modulus), cfg, answer_width(cfg, n))
    ans_keep = ans != vocab.index(PAD) if not cfg.pad else torch.ones_like(ans, dtype=torch.bool)
    ans_sig = torch.full_like(ans, -1)  # set by slot below, after unpadded fields are compacted
    if cfg.symbols:
        op = torch.full((N, 1), vocab.index(OP_SYMBOL[cfg.op]), device=a.device)
        eq = torch.full((N, 1), vocab.index("="), device=a.device)
        tokens = torch.cat([a_tok, op, b_tok, eq, ans], 1)
        keep = torch.cat([a_keep, ones, b_keep, ones, ans_keep], 1)
        significance = torch.cat([a_sig, -ones.long(), b_sig, -ones.long(), ans_sig], 1)
    else:
        tokens, keep = torch.cat([a_tok, b_tok, ans], 1), torch.cat([a_keep, b_keep, ans_keep], 1)
        significance = torch.cat([a_sig, b_sig, ans_sig], 1)
    is_answer = torch.cat([torch.zeros_like(keep[:, : keep.shape[1] - ans.shape[1]]), ans_keep], 1)
    prompt_len = prompt_length(cfg, a_keep.sum(1), b_keep.sum(1))
    if not cfg.pad:
        tokens, kept, order = compact(tokens, keep, vocab.index(PAD))
        is_answer = is_answer.gather(1, order) & kept
        significance = torch.where(kept, significance.gather(1, order), -1)
    slot = torch.arange(tokens.shape[1], device=a.device) - prompt_len[:, None]  # index within the answer
    k = ans.shape[1]
    by_slot = answer_significance(cfg, k, a.device)[slot.clamp(min=0, max=k - 1)]
    significance = torch.where(slot >= k, -1, torch.where(slot >= 0, by_slot, significance))  # -1: pad after the answer
    return Encoded(tokens=tokens, answer=is_answer, prompt_len=prompt_len, significance=significance)


# --------------------------------------------------------------------------- position ids


def position_ids(significance: torch.Tensor, prompt_len: torch.Tensor | int, scheme: str) -> torch.Tensor:
    """Ids of the model inputs ``tokens[:, :-1]`` under ``scheme``: Long [N, L-1] from the
    significance of the full sequence [N, L] (see :class:`Encoded`); 0 marks a token that
    gets no id of its own (no digit; the training offset leaves it at 0).

    - ``abacus`` (McLeish et al., arXiv 2405.17399): every digit, answer included, gets
      1 + its offset within its number counted from the units digit; symbols 0.
    - ``coupled`` (Cho et al., arXiv 2405.20671, Sec. 4): every token gets the id of its
      own significance, answer digits included, unshifted: 2 + s for a digit worth 10^s,
      and the operator and '=' the id one below the units digit (1, "significance -1").
      The token that predicts answer digit s is then '=' (s = 0) or answer digit s-1, with
      id 1 + s: the operand digits it sums sit at the next id, 2 + s, where the causal mask
      hides every answer token; the digits of the carry into s sit at its own id.  (Giving
      that token the id of digit s instead would put the already written answer digits on
      the ids of the operand digits, and a head reading an id could not tell them apart.)
      Pad tokens after the answer get 0.

    ``coupled_alibi`` and ``coupled_rope`` number their tokens as ``coupled`` (:data:`ID_RULES`).
    """
    own = torch.where(significance >= 0, 1 + significance, 0)
    rule = ID_RULES.get(scheme)
    if rule == "abacus":
        return own[:, :-1]
    if rule == "coupled":
        L = significance.shape[1]
        slot = torch.arange(L, device=own.device) - torch.as_tensor(prompt_len, device=own.device).view(-1, 1)
        symbol = (significance < 0) & (slot < 0)  # the prompt's -1 are its symbols; pads follow the answer
        return torch.where(significance >= 0, 2 + significance, torch.where(symbol, 1, 0))[:, :-1]
    raise ValueError(f"position_ids: no significance rule for scheme {scheme!r}")


def offset_ids(ids: torch.Tensor, max_position: int, generator: torch.Generator) -> torch.Tensor:
    """Training ids shifted by a random offset per sequence, uniform so that the shifted
    ids stay below max_position: every id of the table gets trained.  Ids 0 (no digit) stay."""
    room = max_position - ids.amax(1)  # >= 1: the config checks max_position > the largest id
    u = torch.rand(ids.shape[0], generator=generator, device=generator.device).to(ids.device)
    offset = (u * room).long().clamp(max=room - 1)
    return torch.where(ids > 0, ids + offset[:, None], 0)


def random_ids(n: int, length: int, max_position: int, generator: torch.Generator) -> torch.Tensor:
    """Long [n, length]: per row a sorted random subset of 0..max_position-1 (Ruoss et al.,
    ACL 2023, randomized positional encodings)."""
    keys = torch.rand(n, max_position, generator=generator, device=generator.device)
    return keys.argsort(1)[:, :length].sort(1).values


# --------------------------------------------------------------------------- decoding and metrics


def first_index(tokens: torch.Tensor, token_id: int | None) -> torch.Tensor:
    """Long [...]: position of the first `token_id` along the last dimension of tokens [..., K]
    (K when absent)."""
    K = tokens.shape[-1]
    if token_id is None:
        return torch.full_like(tokens[..., 0], K)
    hit = tokens == token_id
    return torch.where(hit.any(-1), hit.to(torch.int8).argmax(-1), K)


@torch.no_grad()
def greedy_decode(model: nn.Module, prompts: torch.Tensor, guess: torch.Tensor, end_id: int | None = None,
                  positions: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy continuation of prompts [N, P] by A tokens: Long [N, A], A = guess.shape[-1].

    Computed by fixed-point (Jacobi) iteration instead of A growing forward passes: feed
    prompt + guess, replace the guess by the argmax at every answer position, repeat.
    Because the model is causal, after pass j the first j tokens equal the greedy ones,
    and a row whose output reproduces its input guess (up to its first end token) *is*
    the greedy decode.  So at most A passes, and one when the guess is what the model says.
    The result never depends on the guess.  ``positions`` (Long [N, P+A-1]): the ids of
    the model inputs, for the task-computed position schemes.

    A pack (``model`` maps [K, n, T] -> [K, n, T, V]) decodes all its members at once:
    prompts [K, N, P], guess [K, N, A], positions [K, N, P+A-1] -> Long [K, N, A].  Each
    pass feeds every member the rows it still has to settle (members that have fewer
    fill up with rows already settled, whose results are discarded), so one forward
    serves the whole pack and every member's answers are the ones it decodes alone.
    """
    if prompts.dim() == 2:
        return greedy_decode(as_pack(model), prompts[None], guess[None], end_id,
                             positions[None] if positions is not None else None)[0]
    K, N, P = prompts.shape
    A = guess.shape[2]
    out = guess.clone()
    todo = torch.ones(K, N, dtype=torch.bool, device=prompts.device)  # rows not yet at their fixed point
    slots = torch.arange(A, device=prompts.device)
    for _ in range(A):
        counts = todo.sum(1)  # [K]
        M = int(counts.max())  # rows per member in this pass (one host read per pass)
        if M == 0:
            break
        rows = torch.argsort((~todo).to(torch.int8), dim=1, stable=True)[:, :M]  # [K, M]: todo rows first
        real = torch.arange(M, device=prompts.device) < counts[:, None]  # [K, M]: False for the filler rows
        fed = out.gather(1, rows[..., None].expand(K, M, A))  # [K, M, A]
        inputs = torch.cat([prompts.gather(1, rows[..., None].expand(K, M, P)), fed[..., :-1]], 2)
        if positions is None:
            logits = model(inputs)  # [K, M, P+A-1, V]
        else:
            logits = model(inputs, positions=positions.gather(1, rows[..., None].expand(K, M, positions.shape[2])))
        new = logits[:, :, P - 1 :].argmax(-1)  # [K, M, A]: output P-1+j predicts answer token j
        agree = ((new == fed) | (slots > first_index(new, end_id)[..., None])).all(-1)  # [K, M]
        out.scatter_(1, rows[..., None].expand(K, M, A), torch.where(real[..., None], new, fed))
        todo.scatter_(1, rows, real & ~agree)
    return out


def answer_matches(out: torch.Tensor, target: torch.Tensor, end_id: int | None = None) -> torch.Tensor:
    """Bool [N]: out [N, K] writes the same answer as target [N, K] (up to target's end token)."""
    positions = torch.arange(target.shape[1], device=target.device)
    return ((out == target) | (positions > first_index(target, end_id)[..., None])).all(-1)


def significance_digits(tokens: torch.Tensor, reverse: bool, end_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer tokens [N, K] -> (digits by significance Long [N, K], length Long [N]).

    digits[:, i] is the digit worth 10^i, or -1 beyond the answer's length or where the
    token is not a digit; the length is the number of tokens before the end token (K when
    padded or when no end token was written).
    """
    K = tokens.shape[1]
    length = first_index(tokens, end_id)
    i = torch.arange(K, device=tokens.device)[None, :]
    index = i.expand_as(tokens) if reverse else (length[:, None] - 1 - i).clamp(min=0)
    digits = tokens.gather(1, index)
    digits = torch.where((i < length[:, None]) & (digits < 10), digits, -1)
    return digits, length


def digit_matches(out: torch.Tensor, target: torch.Tensor, reverse: bool, end_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-digit agreement of two answers aligned by significance: (correct [N], counted [N]).

    counted = the longer of the two lengths; correct = positions among them where both
    write the same digit.  Padded answers count every one of their K positions.
    """
    pred, pred_len = significance_digits(out, reverse, end_id)
    true, true_len = significance_digits(target, reverse, end_id)
    counted = torch.maximum(pred_len, true_len)
    correct = ((pred == true) & (true >= 0)).sum(1)
    return correct, counted


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Float [N, d] -> [N, 2]: projections on the top two principal axes (zeros if d < 2).

    Each axis's sign is fixed so that its largest-magnitude loading is positive, which
    keeps plots of successive checkpoints from flipping at random.
    """
    xc = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    axes = vh[:2]  # [<=2, d]
    sign = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * torch.where(sign == 0, 1.0, sign)
    pcs = xc @ axes.T
    return F.pad(pcs, (0, 2 - pcs.shape[1]))


# --------------------------------------------------------------------------- the task


@dataclass
class EvalGroup:
    """Evaluation examples that share one prompt length, decoded together.

    prompts: Long [N, P]; target, equivalent: Long [N, K] answer tokens of f(a, b) and of
    f(a mod 10^n, b mod 10^n); chance: Bool [N] the two answers are equal; cond: Long [N]
    index into Arithmetic.conditions; positions: Long [N, P+K-1] the ids of the decoder's
    inputs (None unless the task computes position ids).
    """

    prompts: torch.Tensor
    target: torch.Tensor
    equivalent: torch.Tensor
    chance: torch.Tensor
    cond: torch.Tensor
    positions: torch.Tensor | None = None


@dataclass
class ProbeSet:
    """The inputs of the structure probes, drawn once from the seed.

    id_pairs:  Long [P, 2]  pairs from the training mixture; ``train``/``test`` index them
    train, test: numpy index arrays: the ID pairs that fit the probes, and the held-out ones
    ood_pairs: {L: Long [Q, 2]} both operands with exactly L digits, for each OOD length L
    """

    id_pairs: torch.Tensor
    train: Any
    test: Any
    ood_pairs: dict[int, torch.Tensor]


@dataclass
class AnswerStates:
    """What :meth:`Arithmetic.answer_states` reads at the positions predicting the probed digits.

    states:  {layer: Float [N, I, d]} on the CPU, zeros where the digit is absent
    present: Bool [N, I]  False where the answer has no such digit (unpadded answers are as
             long as they are)
    shares:  None, or per block Float [N, H, I, S]: the attention each head sends from the
             position predicting digit i onto the operand tokens of significance s
    """

    states: dict[int, torch.Tensor]
    present: torch.Tensor
    shares: list[np.ndarray] | None = None


class Arithmetic:
    """The arithmetic task of ``cfg``: training sampler, fixed evaluation grid, metrics.

    Attributes set at construction (from ``seed``, identically on every device):
    train_pairs: Long [S, 2] the fixed training set (None when train_set="fresh").
    test_pairs:  Long [S', 2] held-out pairs from the training distribution, disjoint from
                 train_pairs; S' = min(S, eval_examples).
    conditions:  list of (len_a, len_b, split) of the evaluation grid.
    eval_pairs:  {(len_a, len_b): Long [eval_examples, 2]}; the "id" ones exclude train_pairs
                 (when the training set covers a whole condition, the condition is kept as
                 drawn).  Conditions beyond 18 digits hold digit rows, Long [eval_examples,
                 2, max(len_a, len_b)] (least significant first).
    """

    def __init__(self, cfg: ArithmeticTask, seed: int, device: torch.device | str = "cpu",
                 position_scheme: str | None = None, max_position: int = 64):
        check_supported(cfg)
        if position_scheme is not None:
            check_position_scheme(cfg, position_scheme, max_position)
        self.cfg, self.seed, self.device = cfg, seed, torch.device(device)
        # the rule that numbers the tokens (coupled_alibi and coupled_rope take coupled ids)
        self.position_scheme = ID_RULES[position_scheme] if position_scheme is not None else None
        self.max_position = max_position
        self.n = cfg.train_len
        self.vocab = vocabulary(cfg)
        self.end_id = self.vocab.index(END) if not cfg.pad else None
        self.pad_id = self.vocab.index(PAD) if not cfg.pad else None
        self.eval_len = max(cfg.eval_max_len, self.n)  # operand bound of eval and probe sequences
        longest = max(sequence_length(cfg, training_field_digits(cfg)), sequence_length(cfg, self.eval_len))
        self.io = ModelIO(n_in=len(self.vocab), n_out=len(self.vocab), tokens=True, max_seq_len=longest - 1)
        self.components = training_components(cfg)
        # sets are drawn on the CPU so that the data do not depend on the device
        train_pairs, test_pairs = self._draw_train_test(self._generator(0))
        self.conditions, self.eval_pairs = self._draw_eval(self._generator(1), train_pairs)
        self.train_pairs = train_pairs.to(self.device) if train_pairs is not None else None
        self.test_pairs = test_pairs.to(self.device)
        self.eval_groups = self._build_eval_groups()
        self.probe_pairs, self.probe_splits = self._draw_probe(self._generator(2))
        self.probe_positions = list(cfg.probes.positions or range(answer_digits(cfg, self.n)))
        self.probe_set = self._draw_probe_set(self._generator(3)) if cfg.probes.enabled else None
        self.last_step: int | None = None  # the step of the last training batch drawn

    # ---- data

    def _generator(self, stream: int) -> torch.Generator:
        """A CPU generator for one of the construction-time streams (train/test, eval, probe)."""
        return torch.Generator().manual_seed((self.seed * 1000 + stream) % 2**63)

    def _draw_train_test(self, g: torch.Generator) -> tuple[torch.Tensor | None, torch.Tensor]:
        cfg = self.cfg
        if cfg.train_set == "fresh":
            return None, self._sample_mixture(cfg.eval_examples, g)
        total, _ = fixed_set_size(cfg)
        sizes = split_by_weight(total, self.components)
        test_sizes = split_by_weight(min(total, cfg.eval_examples), self.components)
        # training pairs first, so that the training set does not depend on the test size
        taken = torch.empty(0, 2, dtype=torch.long)
        for (n, _), size in zip(self.components, sizes):
            taken = torch.cat([taken, draw_distinct(n, cfg.sampling, size, g, exclude=taken)])
        train = taken
        for (n, _), size in zip(self.components, test_sizes):
            taken = torch.cat([taken, draw_distinct(n, cfg.sampling, size, g, exclude=taken)])
        return train, taken[len(train) :]

    def _sample_mixture(self, size: int, g: torch.Generator) -> torch.Tensor:
        """Long [size, 2] fresh pairs from the training mixture, on the generator's device."""
        pairs = sample_pairs(self.components[0][0], self.cfg.sampling, size, g)
        if len(self.components) == 2:
            (n, w) = self.components[1]
            other = sample_pairs(n, self.cfg.sampling, size, g)
            pick = torch.rand(size, generator=g, device=g.device) < w
            pairs = torch.where(pick[:, None], other, pairs)
        return pairs

    def _draw_eval(
        self, g: torch.Generator, train_pairs: torch.Tensor | None
    ) -> tuple[list[tuple[int, int, str]], dict[tuple[int, int], torch.Tensor]]:
        E = self.cfg.eval_examples
        conditions, drawn = [], []
        for len_a, len_b in self.cfg.evaluated_pairs:
            conditions.append((len_a, len_b, "id" if max(len_a, len_b) <= self.n else "ood"))
            drawn.append(sample_exact(len_a, len_b, 2 * E + 64, g) if max(len_a, len_b) <= INT64_DIGITS
                         else sample_exact_digits(len_a, len_b, E, g))
        id_drawn = [d for d, c in zip(drawn, conditions) if c[2] == "id"]  # all within int64
        if train_pairs is not None and id_drawn:  # one membership test for the ID conditions
            seen = iter(rows_in(torch.cat(id_drawn), train_pairs).split([len(d) for d in id_drawn]))
        pairs = {}
        for (len_a, len_b, split), candidates in zip(conditions, drawn):
            if split == "id" and train_pairs is not None:
                unseen = candidates[~next(seen)]
                if len(unseen) >= E:
                    candidates = unseen
                elif len(unseen) > 0:  # a small condition: resample its unseen pairs
                    candidates = unseen[torch.randint(0, len(unseen), (E,), generator=g)]
            pairs[(len_a, len_b)] = candidates[:E].to(self.device)
        return conditions, pairs

    def _build_eval_groups(self) -> list[EvalGroup]:
        """Encode the grid once; conditions with equal prompt length share a group."""
        cfg, by_prompt = self.cfg, {}
        for i, (len_a, len_b, _) in enumerate(self.conditions):
            prompt_len = prompt_length(cfg, field_width(cfg, len_a), field_width(cfg, len_b))
            by_prompt.setdefault(prompt_len, []).append(i)
        groups, g = [], self._generator(EVAL_ID_STREAM)  # the fixed ids of randomized positions
        for prompt_len, members in sorted(by_prompt.items()):
            k = max(answer_width(cfg, max(self.conditions[i][:2])) for i in members)
            prompts, target, equivalent, chance, cond, significance = [], [], [], [], [], []
            for i in members:
                len_a, len_b, _ = self.conditions[i]
                a, b = self.eval_pairs[(len_a, len_b)].unbind(1)
                enc = encode(a, b, cfg, max(len_a, len_b))
                c = answer_of(a, b, cfg.op, cfg.modulus)
                e = equivalent_of(a, b, self.n, cfg.op, cfg.modulus)
                prompts.append(enc.tokens[:, :prompt_len])
                significance.append(enc.significance[:, :prompt_len])
                target.append(encode_answer(c, cfg, k))
                equivalent.append(encode_answer(e, cfg, k))
                chance.append((target[-1] == equivalent[-1]).all(1))  # the same tokens: the same answer
                cond.append(torch.full((len(a),), i, dtype=torch.long, device=a.device))
            group = EvalGroup(*(torch.cat(t) for t in (prompts, target, equivalent, chance, cond)))
            group.positions = self.eval_positions(torch.cat(significance), prompt_len, k, g)
            groups.append(group)
        return groups

    def fixed_positions(self, significance: torch.Tensor, prompt_len: torch.Tensor | int,
                        g: torch.Generator) -> torch.Tensor | None:
        """Evaluation ids of the inputs of full sequences (significance [N, L]) -> Long
        [N, L-1]: no offset (randomized: a sorted random subset per example, drawn from
        ``g``); None for the model's own position schemes."""
        if self.position_scheme == "randomized":
            N, L = significance.shape
            return random_ids(N, L - 1, self.max_position, g).to(self.device)
        if self.position_scheme in ("coupled", "abacus"):
            return position_ids(significance, prompt_len, self.position_scheme)
        return None

    def eval_positions(self, prompt_significance: torch.Tensor, prompt_len: int, k: int,
                       g: torch.Generator) -> torch.Tensor | None:
        """:meth:`fixed_positions` of prompts followed by k answer slots: Long [N, P+k-1]."""
        answer = answer_significance(self.cfg, k, prompt_significance.device).expand(len(prompt_significance), k)
        return self.fixed_positions(torch.cat([prompt_significance, answer], 1), prompt_len, g)

    def train_positions(self, enc: Encoded, generator: torch.Generator) -> torch.Tensor | None:
        """Ids of a training batch's inputs, Long [B, T-1], with the scheme's randomness drawn
        from the training generator (so a restored run draws the same); None for the
        model's own schemes."""
        if self.position_scheme == "randomized":
            n, length = enc.tokens.shape[0], enc.tokens.shape[1] - 1
            return random_ids(n, length, self.max_position, generator).to(self.device)
        if self.position_scheme in ("coupled", "abacus"):
            ids = position_ids(enc.significance, enc.prompt_len, self.position_scheme)
            return offset_ids(ids, self.max_position, generator)
        return None

    def _draw_probe(self, g: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """Pairs for the representation PCA: ID operands below 10^n, OOD ones with eval_max_len digits."""
        pairs = [sample_pairs(self.n, "below", REPR_POINTS, g)]
        splits = ["id"] * REPR_POINTS
        longest = min(self.cfg.eval_max_len, INT64_DIGITS)  # the probes read numbers within int64
        if longest > self.n:
            pairs.append(sample_exact(longest, longest, REPR_POINTS, g))
            splits += ["ood"] * REPR_POINTS
        return torch.cat(pairs).to(self.device), splits

    def _draw_probe_set(self, g: torch.Generator) -> ProbeSet:
        """cfg.probes.points ID pairs from the training mixture (a quarter held out), and half
        as many OOD pairs for each length n+1..eval_max_len (both operands of that length)."""
        from study.tasks.probes import held_out_split

        points = self.cfg.probes.points
        id_pairs = self._sample_mixture(points, g)
        train, test = held_out_split(points, PROBE_TEST_SHARE, seed=self.seed)
        longest = min(self.eval_len, INT64_DIGITS)  # the probes read numbers within int64
        ood = {L: sample_exact(L, L, max(points // 2, 1), g).to(self.device) for L in range(self.n + 1, longest + 1)}
        return ProbeSet(id_pairs=id_pairs.to(self.device), train=train, test=test, ood_pairs=ood)

    def train_batch(self, batch_size: int, step: int, generator: torch.Generator) -> Batch:
        """A batch of ``batch_size`` sequences (see the module docstring for the convention).

        fixed: random rows of train_pairs; fresh: new pairs from the mixture.  All randomness
        comes from `generator` (sampled on its device, then moved to the task's device).
        `step` is only remembered (``last_step``: the evaluation that follows it is at step + 1).
        """
        self.last_step = step
        if self.train_pairs is not None:
            idx = torch.randint(0, len(self.train_pairs), (batch_size,), generator=generator, device=generator.device)
            pairs = self.train_pairs[idx.to(self.device)]
        else:
            pairs = self._sample_mixture(batch_size, generator).to(self.device)
        if self.cfg.random_zero_pad:
            enc = self.zero_padded(pairs, generator)
        else:
            enc = encode(pairs[:, 0], pairs[:, 1], self.cfg, self.n)
        return Batch(inputs=enc.tokens[:, :-1], targets=enc.tokens[:, 1:], mask=enc.answer[:, 1:],
                     positions=self.train_positions(enc, generator))

    def zero_padded(self, pairs: torch.Tensor, generator: torch.Generator) -> Encoded:
        """Training sequences of pairs [B, 2] under ``task.random_zero_pad``: each operand
        written with leading zeros up to a width uniform in [its digit count, task.width],
        drawn from the training generator, so that every id up to the width meets the answer
        queries in training; the answer is written as usual.  Columns of pads only are cut."""
        width = self.cfg.width
        count = torch.stack([num_digits(pairs[:, 0]), num_digits(pairs[:, 1])], 1)  # [B, 2]
        u = torch.rand(pairs.shape, generator=generator, device=generator.device).to(pairs.device)
        written = count + (u * (width - count + 1)).long().clamp(max=width - count)
        enc = encode(pairs[:, 0], pairs[:, 1], self.cfg, width, written=(written[:, 0], written[:, 1]))
        used = int((enc.tokens != self.pad_id).any(0).nonzero().max()) + 1
        return Encoded(tokens=enc.tokens[:, :used], answer=enc.answer[:, :used], prompt_len=enc.prompt_len,
                       significance=enc.significance[:, :used])

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens.  output: logits [B, T, V]."""
        ce = F.cross_entropy(output.float().flatten(0, 1), batch.targets.flatten(), reduction="none")
        mask = batch.mask.flatten().float()
        return (ce * mask).sum() / mask.sum().clamp(min=1.0)

    # ---- evaluation

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> list[dict[str, Any]]:
        """One row per condition and metric: split, metric, value, len_a, len_b.

        exact_match: the greedy answer equals the true one (all tokens, end token included).
        digit_acc: digits equal at the same significance, pooled over the condition, each
            example counting max(len(output), len(answer)) positions (padded: all of them).
        equivalence: the answer equals f(a mod 10^n, b mod 10^n) [mod p].
        equivalence_of_wrong: the share of the wrong answers that are equivalence answers
            (NaN when none is wrong).
        chance (with a modulus only): the share of examples whose true answer equals the
            equivalence answer, i.e. the exact match of a perfect equivalence model.
        """
        return Arithmetic.evaluate_pack([self], as_pack(model))[0]

    @staticmethod
    @torch.no_grad()
    def evaluate_pack(tasks: list["Arithmetic"], model: Callable[..., torch.Tensor]) -> list[list[dict[str, Any]]]:
        """:meth:`evaluate` of K tasks of one config (the members' own seeds, so their own
        evaluation sets) on a pack of K members, ``model`` [K, n, T] -> [K, n, T, V]: every
        greedy decode runs all K members in one batched forward.  One row list per member."""
        first, K = tasks[0], len(tasks)
        C, dev, cfg = len(first.conditions), first.device, first.cfg
        per_member = max(1, cfg.eval_batch_size // K)  # rows of each member per decode: eval_batch_size in all
        names = ("n", "exact", "equiv", "wrong_equiv", "correct", "counted", "chance")
        sums = {name: torch.zeros(K * C, device=dev) for name in names}  # [member * C + condition]
        for g, group in enumerate(first.eval_groups):
            members = [task.eval_groups[g] for task in tasks]  # one config: equal shapes in every member
            prompts, target, equivalent, chance, cond = (
                torch.stack([getattr(m, name) for m in members])
                for name in ("prompts", "target", "equivalent", "chance", "cond"))  # [K, N, ...]
            positions = torch.stack([m.positions for m in members]) if group.positions is not None else None
            cond = cond + C * torch.arange(K, device=dev)[:, None]
            for start in range(0, prompts.shape[1], per_member):
                rows = slice(start, start + per_member)
                # start from the equivalence answer: 1 pass when the model answers it (ID and OOD)
                out = greedy_decode(model, prompts[:, rows], equivalent[:, rows], first.end_id,
                                    positions[:, rows] if positions is not None else None)  # [K, n, A]
                t, e = target[:, rows].flatten(0, 1), equivalent[:, rows].flatten(0, 1)
                out = out.flatten(0, 1)  # [K * n, A]: the metrics are per row
                exact = answer_matches(out, t, first.end_id)
                equiv = answer_matches(out, e, first.end_id)
                digits = slice(1, None, 2) if cfg.index_hints else slice(None)  # hints are not digits
                correct, counted = digit_matches(out[:, digits], t[:, digits], cfg.reverse, first.end_id)
                for name, value in (("n", torch.ones_like(exact)), ("exact", exact), ("equiv", equiv),
                                    ("wrong_equiv", equiv & ~exact), ("correct", correct),
                                    ("counted", counted), ("chance", chance[:, rows].flatten())):
                    sums[name].index_add_(0, cond[:, rows].flatten(), value.float())
        sums = {name: value.view(K, C) for name, value in sums.items()}
        wrong = sums["n"] - sums["exact"]
        values = {
            "exact_match": sums["exact"] / sums["n"],
            "digit_acc": sums["correct"] / sums["counted"],
            "equivalence": sums["equiv"] / sums["n"],
            "equivalence_of_wrong": torch.where(wrong > 0, sums["wrong_equiv"] / wrong, float("nan")),
        }
        if cfg.modulus is not None:
            values["chance"] = sums["chance"] / sums["n"]
        table = torch.stack(list(values.values()), 2).tolist()  # [K, C, M], one transfer
        out_rows = []
        for member_table in table:
            rows = []
            for (len_a, len_b, split), row in zip(first.conditions, member_table):
                for metric, value in zip(values, row):
                    rows.append({"split": split, "metric": metric, "value": value, "len_a": len_a, "len_b": len_b})
            out_rows.append(rows)
        return out_rows

    @torch.no_grad()
    def representations(self, model: nn.Module) -> list[dict[str, Any]]:
        """2-D PCA of the final hidden state at the position that predicts the answer's units digit.

        Fitted on all probe points (REPR_POINTS ID pairs below 10^n, and as many OOD pairs with
        eval_max_len digits when that is longer than n).  label = the units digit of the answer.
        """
        a, b = self.probe_pairs.unbind(1)
        enc = encode(a, b, self.cfg, self.eval_len)
        c = apply_op(a, b, self.cfg.op, self.cfg.modulus)
        hf = hint_factor(self.cfg)  # tokens per answer digit: (hint letter,) digit
        digits = torch.full_like(c, answer_width(self.cfg, self.eval_len) // hf) if self.cfg.pad else num_digits(c)
        slot = torch.zeros_like(c) if self.cfg.reverse else digits - 1  # the units digit's place in the answer
        units = enc.prompt_len + slot * hf + hf - 1  # its index in the sequence (after its hint)
        ids = self.fixed_positions(enc.significance, enc.prompt_len, self._generator(4))
        _, hidden = model(enc.tokens[:, :-1], return_hidden=True) if ids is None else \
            model(enc.tokens[:, :-1], positions=ids, return_hidden=True)  # [N, T-1, d]
        h = hidden[torch.arange(len(a), device=hidden.device), units - 1]  # output units-1 predicts token units
        pcs = pca_2d(h.float().cpu()).tolist()
        labels = (c % 10).tolist()
        rows = []
        for i, (ai, bi, label, split, (pc1, pc2)) in enumerate(zip(a.tolist(), b.tolist(), labels, self.probe_splits, pcs)):
            rows.append({"kind": "pca_units_digit", "split": split, "point": i, "label": str(label),
                         "a": ai, "b": bi, "pc1": pc1, "pc2": pc2})
        every = self.cfg.probes.every
        step = None if self.last_step is None else self.last_step + 1
        if self.probe_set is not None and (every is None or step is None or step % every == 0):
            rows += self.probe_scores(model)
        return rows

    @staticmethod
    def probe_layers(layers: str | list[int], n_layer: int) -> list[int]:
        """The layers a ``task.probes.layers`` value names for a model of ``n_layer`` blocks: -1
        (the final state) for "last", every block's output 0..n_layer-1 and -1 for "all", else
        the list (without repeats)."""
        if layers == "last":
            return [FINAL_LAYER]
        if layers == "all":
            return list(range(n_layer)) + [FINAL_LAYER]
        return list(dict.fromkeys(layers))

    def answer_states(self, model: nn.Module, pairs: torch.Tensor, layers: str | list[int] = "last",
                      attention: bool = False) -> AnswerStates:
        """Hidden states (and attention) at the positions that predict each probed answer digit.

        pairs Long [N, 2] -> :class:`AnswerStates` for the I = len(probe_positions) digits, the
        true answer fed as the model's input (teacher forcing), in batches of
        ``task.eval_batch_size``.  The state predicting the sequence's token s is the output at
        s - 1.  ``layers`` as ``task.probes.layers`` (see :meth:`probe_layers`): -1 is the final
        hidden state, l >= 0 the residual stream after block l.  ``attention``: also each
        block's attention shares from those positions onto the operand digits of each
        significance (see :func:`study.tasks.probes.attention_shares`).
        """
        size = self.cfg.eval_batch_size
        parts = [self._answer_states(model, pairs[start:start + size], layers, attention)
                 for start in range(0, len(pairs), size)]
        shares = None
        if attention:
            width = max(p.shares[0].shape[-1] for p in parts)  # the operand places of the longest batch
            pad = lambda x: np.pad(x, [(0, 0)] * 3 + [(0, width - x.shape[-1])], constant_values=np.nan)  # noqa: E731
            shares = [np.concatenate([pad(p.shares[k]) for p in parts]) for k in range(len(parts[0].shares))]
        return AnswerStates(states={layer: torch.cat([p.states[layer] for p in parts]) for layer in parts[0].states},
                            present=torch.cat([p.present for p in parts]), shares=shares)

    def _answer_states(self, model: nn.Module, pairs: torch.Tensor, layers: str | list[int],
                       attention: bool) -> AnswerStates:
        """:meth:`answer_states` of one batch."""
        from study.tasks.probes import attention_shares

        cfg = self.cfg
        a, b = pairs.unbind(1)
        enc = encode(a, b, cfg, self.eval_len)
        c = apply_op(a, b, cfg.op, cfg.modulus)
        ids = self.fixed_positions(enc.significance, enc.prompt_len, self._generator(PROBE_ID_STREAM))
        inputs = enc.tokens[:, :-1]
        kwargs = {} if ids is None else {"positions": ids}
        if attention or layers != "last":
            _, trace = model(inputs, return_internals=True, **kwargs)
            by_layer = {layer: trace.hidden if layer == FINAL_LAYER else trace.layers[layer]
                        for layer in self.probe_layers(layers, len(trace.layers))}
        else:
            _, hidden = model(inputs, return_hidden=True, **kwargs)  # [N, T-1, d]
            by_layer = {FINAL_LAYER: hidden}
        hf = hint_factor(cfg)  # tokens per answer digit: (hint letter,) digit
        length = num_digits(c) if not cfg.pad else torch.full_like(c, answer_width(cfg, self.eval_len) // hf)
        i = torch.tensor(self.probe_positions, device=pairs.device)[None, :]  # [1, I]
        slot = i if cfg.reverse else length[:, None] - 1 - i  # digit i's place in the answer
        offset = slot * hf + hf - 1  # the answer token holding digit i (after its hint)
        present = i < length[:, None]
        index = (enc.prompt_len[:, None] + offset - 1).clamp(0, inputs.shape[1] - 1)  # [N, I]
        states = {}
        for layer, hidden in by_layer.items():
            picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[2]))  # [N, I, d]
            states[layer] = torch.where(present[..., None], picked, 0.0).float().cpu()
        shares = None
        if attention:
            significance = enc.significance[:, :-1]
            column = torch.arange(inputs.shape[1], device=pairs.device)[None, :]
            operand = (column < enc.prompt_len[:, None]) & (significance >= 0)
            groups = torch.where(operand, significance, -1)
            # a group for every probed digit's place too: the answer's top digit (a carry) has a place
            # no operand digit has, and its shares are then NaN (no key of that group)
            n_groups = max(int(groups.max()) + 1, max(self.probe_positions) + 1)
            shares = []
            for weights in trace.attention:  # [N, H, T, T]: keep only the probed queries' rows
                H, T = weights.shape[1], weights.shape[3]
                rows = weights.gather(2, index[:, None, :, None].expand(-1, H, -1, T))  # [N, H, I, T]
                shares.append(attention_shares(rows.float().cpu().numpy(), groups.cpu().numpy(), n_groups,
                                               present.cpu().numpy()))
        return AnswerStates(states=states, present=present.cpu(), shares=shares)

    @torch.no_grad()
    def probe_scores(self, model: nn.Module) -> list[dict[str, Any]]:
        """Structure scores of the hidden states at each probed answer digit i, and where attention goes.

        Inputs (drawn at construction, see :class:`ProbeSet`): ID pairs of the training mixture,
        OOD pairs of each length L in n+1..eval_max_len, and the ID equivalents
        (a mod 10^n, b mod 10^n) of the OOD pairs.  One row per score, ``layer`` as
        ``task.probes.layers`` names them (-1: the final state; l: the residual stream after
        block l), ``length`` the operand length of the scored inputs (n for ID):

        probe_digit         linear probe fitted on 3/4 of the ID states to the digit i of the true
                            answer: accuracy on the held-out ID states (split id) and on the OOD
                            states of each length (split ood); 0.1 is chance for ten balanced digits
        probe_digit_equiv   the same ID probe on the OOD states, scored against digit i of the
                            equivalence answer f(a mod 10^n, b mod 10^n) (equal to the true digit
                            below n without a modulus)
        probe_carry         as probe_digit, to the carry into digit i (no modulus; i >= 1)
        silhouette_digit    silhouette of the states grouped by digit i (ID, and OOD per length)
        repr_equivalence    share of OOD states nearer the state of their own ID equivalent than that
                            state is to any ID state with another digit i (see
                            :func:`study.tasks.probes.equivalence_rate`; ~0 at initialization)
        repr_equivalence_chance   the same rate with each OOD state paired with another OOD input's
                            equivalent (states unrelated to their equivalents)
        repr_equivalence_digit    share of OOD states whose nearest ID probe state has the equivalence
                            answer's digit i (about 0.1 for unrelated states)

        With ``task.probes.attention``, per block ``layer`` l, ``head`` h and digit i, on the ID
        probe inputs (split id) and the OOD ones of each length (split ood), from the position
        that predicts digit i (teacher forcing):

        attention_alignment the share of its attention on the operand tokens of significance i
                            (both operands' digit worth 10^i; with index hints, the hint letter
                            too).  The carry's source, significance i - 1, does not count: 1 means
                            the head reads exactly the digits of its own place.  Uniform attention
                            over the causal prefix scores (tokens of significance i) / (prefix length).
        attention_argmax    the significance whose operand tokens get the largest mean share
        """
        from study.tasks import probes

        cfg, ps, n = self.cfg, self.probe_set, self.n
        lengths = list(ps.ood_pairs)
        ood = [ps.ood_pairs[L] for L in lengths]
        equivalents = [p % 10**n for p in ood]
        everything = torch.cat([ps.id_pairs, *ood, *equivalents])
        read = self.answer_states(model, everything, layers=cfg.probes.layers, attention=cfg.probes.attention)
        sizes = [len(ps.id_pairs)] + [len(p) for p in ood] + [len(p) for p in equivalents]
        def parts(x):  # (ID, [OOD of each length], [their equivalents])
            split = x.split(sizes)
            return split[0], split[1:1 + len(ood)], split[1 + len(ood):]

        id_pairs, ood_pairs, _ = parts(everything.cpu())
        id_present, ood_present, eq_present = parts(read.present)

        def digit(pairs: torch.Tensor, i: int, equivalent: bool = False) -> np.ndarray:
            a, b = pairs.unbind(1)
            c = equivalent_answer(a, b, n, cfg.op, cfg.modulus) if equivalent else apply_op(a, b, cfg.op, cfg.modulus)
            return ((c // 10**i) % 10).numpy()

        def carry(pairs: torch.Tensor, i: int) -> np.ndarray:
            return carry_into(pairs[:, 0], pairs[:, 1], i, cfg.op).numpy()

        rows: list[dict[str, Any]] = []

        def add(kind: str, split: str, i: int, length: int, value: float, layer: int, head: int | None = None) -> None:
            row = {"kind": kind, "split": split, "position": i, "layer": layer, "length": length, "value": value}
            if head is not None:
                row["head"] = head
            rows.append(row)

        for layer, states in read.states.items():
            id_states, ood_states, eq_states = parts(states)
            for col, i in enumerate(self.probe_positions):
                keep = id_present[:, col].numpy()
                fit, held = ps.train[keep[ps.train]], ps.test[keep[ps.test]]
                h = id_states[:, col].numpy()
                ood_h = [s[:, col].numpy()[m[:, col].numpy()] for s, m in zip(ood_states, ood_present)]
                ood_p = [p[m[:, col]] for p, m in zip(ood_pairs, ood_present)]
                targets = [("probe_digit", lambda p: digit(p, i))]
                if cfg.modulus is None and i >= 1:
                    targets.append(("probe_carry", lambda p: carry(p, i)))
                for kind, label in targets:
                    y = label(id_pairs)
                    tests = [(h[held], y[held])] + [(hs, label(p)) for hs, p in zip(ood_h, ood_p)]
                    if kind == "probe_digit":
                        tests += [(hs, digit(p, i, equivalent=True)) for hs, p in zip(ood_h, ood_p)]
                    scores = probes.probe_accuracy(h[fit], y[fit], tests)
                    add(kind, "id", i, n, scores[0], layer)
                    for L, value in zip(lengths, scores[1:1 + len(lengths)]):
                        add(kind, "ood", i, L, value, layer)
                    for L, value in zip(lengths, scores[1 + len(lengths):]):
                        add("probe_digit_equiv", "ood", i, L, value, layer)
                id_digit = digit(id_pairs, i)
                add("silhouette_digit", "id", i, n, probes.cluster_score(h[keep], id_digit[keep]), layer)
                for L, hs, p in zip(lengths, ood_h, ood_p):
                    add("silhouette_digit", "ood", i, L, probes.cluster_score(hs, digit(p, i)), layer)
                for L, s, m, p, es, em in zip(lengths, ood_states, ood_present, ood_pairs, eq_states, eq_present):
                    both = (m[:, col] & em[:, col]).numpy()
                    x, e = s[:, col].numpy()[both], es[:, col].numpy()[both]
                    e_digit = digit(p[both], i, equivalent=True)
                    eq_keep = em[:, col].numpy()
                    reference = np.concatenate([h[keep], es[:, col].numpy()[eq_keep]])
                    reference_digit = np.concatenate([id_digit[keep], digit(p[eq_keep], i, equivalent=True)])
                    add("repr_equivalence", "ood", i, L,
                        probes.equivalence_rate(x, e, e_digit, reference, reference_digit), layer)
                    shift = np.roll(np.arange(len(x)), 1)  # each OOD state against another input's equivalent
                    add("repr_equivalence_chance", "ood", i, L,
                        probes.equivalence_rate(x, e[shift], e_digit[shift], reference, reference_digit), layer)
                    add("repr_equivalence_digit", "ood", i, L,
                        probes.nearest_label_rate(x, e_digit, h[keep], id_digit[keep]), layer)
        if read.shares is not None:
            share_splits = [("id", n, 0)] + [("ood", L, 1 + k) for k, L in enumerate(lengths)]
            for layer, shares in enumerate(read.shares):
                pieces = np.split(shares, np.cumsum(sizes)[:-1])
                for split, L, part in share_splits:
                    aligned = probes.alignment_scores(pieces[part], self.probe_positions)  # [H, I]
                    argmax = probes.most_attended(pieces[part])  # [H, I]
                    for head in range(aligned.shape[0]):
                        for col, i in enumerate(self.probe_positions):
                            add("attention_alignment", split, i, L, float(aligned[head, col]), layer, head)
                            add("attention_argmax", split, i, L, float(argmax[head, col]), layer, head)
        return rows

    # ---- rendering

    def decode(self, tokens: torch.Tensor | list[int]) -> str:
        """Token ids -> the string they spell, e.g. '0034900705450100'."""
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens
        return "".join(self.vocab[i] for i in ids)

    def format_example(self, a: int, b: int) -> str:
        """The full training sequence of one pair, e.g. format_example(349, 705) -> '0034900705450100'."""
        pair = torch.tensor([[a, b]], device=self.device)
        enc = encode(pair[:, 0], pair[:, 1], self.cfg, max(len(str(a)), len(str(b))))
        return self.decode(enc.tokens[0]).rstrip(PAD) if not self.cfg.pad else self.decode(enc.tokens[0])
