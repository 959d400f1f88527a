"""Numbers and digit rows of the arithmetic family, and f(a, b) on them.

Numbers are int64 tensors (Long [N]) up to 18 digits.  Evaluation operands beyond that
(``task.width`` and the evaluated lengths go up to 40) are *digit rows*, Long [N, w] with
the least significant digit first; their sums are computed digit by digit, their residues
mod p by Horner's rule, and the equivalence answer reads only their low n digits.
Training operands stay within 18 digits; multiplication without a modulus within 9 (the
product must fit int64).  What f is, its carries and its equivalence are the operation's
record (:mod:`study.tasks.operations`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from study.tasks.operations import operation


def apply_op(a: torch.Tensor, b: torch.Tensor, op: str, modulus: int | None = None) -> torch.Tensor:
    """f(a, b) of the operation ``op`` (a+b, a*b, ...), reduced mod p when a modulus is given.
    Long [...] -> Long [...]."""
    if modulus is not None:
        a, b = a % modulus, b % modulus  # keeps a*b inside int64 for p <= 3e9
    c = operation(op).apply(a, b)
    return c if modulus is None else c % modulus


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


# operation -> f of digit rows beyond int64 without a modulus (the operations whose record says
# ``digit_by_digit``): Long [N, m] x Long [N, m] -> digit rows Long [N, m']
DIGIT_ROW_ANSWERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"add": add_digits}


def answer_of(a: torch.Tensor, b: torch.Tensor, op: str, modulus: int | None = None) -> torch.Tensor:
    """f(a, b) [mod p] of numbers (Long [N]), or of digit rows (Long [N, m]): the sum's digit
    rows Long [N, m + 1], or with a modulus the residue Long [N].  Without a modulus, only an
    operation computed digit by digit (:data:`DIGIT_ROW_ANSWERS`) takes digit rows (the config
    keeps the others within int64)."""
    if a.dim() == 1:
        return apply_op(a, b, op, modulus)
    if modulus is not None:
        return apply_op(residue(a, modulus), residue(b, modulus), op, modulus)
    if op in DIGIT_ROW_ANSWERS:
        return DIGIT_ROW_ANSWERS[op](a, b)
    raise ValueError(f"{operation(op).result}s of operands beyond int64 need task.modulus")


def equivalent_of(a: torch.Tensor, b: torch.Tensor, n: int, op: str, modulus: int | None = None) -> torch.Tensor:
    """The equivalence answer f(a mod 10^n, b mod 10^n) [mod p] of numbers or digit rows: Long [N]
    (the operands are the operation's ``equivalent``, which reads only the low n digits)."""
    if a.dim() > 1:  # digit rows: their low n digits as numbers
        a, b = low_number(a, n), low_number(b, n)
    return apply_op(*operation(op).equivalent(a, b, n), op, modulus)


def carry_into(a: torch.Tensor, b: torch.Tensor, i: int, op: str) -> torch.Tensor:
    """The carry into answer digit i of f(a, b) (the operation's ``carry_into``): floor(partial /
    10^i), where partial is the sum of the terms of significance below i (add: a mod 10^i + b mod
    10^i; mul: a_j b_k 10^(j+k) over j + k < i).  0 for the units digit.  Long [N] -> Long [N]."""
    return operation(op).carry_into(a, b, i)
