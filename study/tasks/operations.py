"""The arithmetic operations: one record per operation, registered once in :data:`OPERATIONS`.

Torch-free (the config reads the symbol, the answer width and the overflow limits before
torch is imported).  Every function of a record takes Python ints or Long tensors alike
(only ``+ - * // %`` on them), so the config checks limits with ints and the task
computes answers, carries and equivalents with tensors through the same code.

To add an operation: one :class:`Operation` entry below; the config then accepts it as
``task.op``, the task computes, sizes, carries and judges it through the record, and
``tests/test_conformance_arithmetic.py`` runs every contract on it.  An operation whose
answers beyond int64 are computed digit by digit (``digit_by_digit``) also needs its
digit-row function in ``study.tasks.arithmetic_numbers.DIGIT_ROW_ANSWERS``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Number = Any  # a Python int >= 0, or a Long tensor of them
INT64_MAX = 2**63 - 1


def low_digits(a: Number, b: Number, n: int) -> tuple[Number, Number]:
    """(a mod 10^n, b mod 10^n): the operands an n-digit model reads of a longer pair
    (Xu et al., arXiv 2308.08268 and 2407.17963)."""
    return a % 10**n, b % 10**n


def carry_into_sum(a: Number, b: Number, i: int) -> Number:
    """The carry into digit i of a + b: floor((a mod 10^i + b mod 10^i) / 10^i)."""
    return (a % 10**i + b % 10**i) // 10**i


def carry_into_product(a: Number, b: Number, i: int) -> Number:
    """The carry into digit i of a * b: floor(partial / 10^i), partial = sum of a_j b_k 10^(j+k)
    over the digit pairs with j + k < i (a_j: the digit of a worth 10^j)."""
    partial = a * 0
    for j in range(i):  # a loop over digit pairs; every step is vectorized over the numbers
        for k in range(i - j):
            partial += (a // 10**j % 10) * (b // 10**k % 10) * 10 ** (j + k)
    return partial // 10**i


@dataclass(frozen=True)
class Operation:
    """One operation f(a, b) on non-negative integers.

    symbol:         the token written between the operands (``task.symbols``)
    result:         what f(a, b) is called in messages ("sum", "product")
    apply:          f(a, b), unreduced
    answer_digits:  n -> the most digits f(a, b) has when both operands have at most n digits
    carry_into:     (a, b, i) -> the carry into answer digit i (0 for the units digit): what the
                    terms of significance below i add to digit i and above
    equivalent:     (a, b, n) -> the operands whose f an n-digit model answers for a longer pair;
                    f of them is the equivalence answer the OOD metrics judge against
    largest_modulus: the largest ``task.modulus`` whose f of two residues fits int64, as messages write it
    digit_by_digit: f of operands beyond int64 is computed on digit rows (no modulus needed)
    """

    symbol: str
    result: str
    apply: Callable[[Number, Number], Number]
    answer_digits: Callable[[int], int]
    carry_into: Callable[[Number, Number, int], Number]
    largest_modulus: str
    equivalent: Callable[[Number, Number, int], tuple[Number, Number]] = low_digits
    digit_by_digit: bool = False

    def most_digits_within_int64(self) -> int:
        """The longest operand length n whose largest answer f(10^n - 1, 10^n - 1) fits int64."""
        n = 1
        while self.apply(10 ** (n + 1) - 1, 10 ** (n + 1) - 1) <= INT64_MAX:
            n += 1
        return n


OPERATIONS: dict[str, Operation] = {
    "add": Operation(
        symbol="+",
        result="sum",
        apply=operator.add,
        answer_digits=lambda n: n + 1,
        carry_into=carry_into_sum,
        largest_modulus="2^62",
        digit_by_digit=True,
    ),
    "mul": Operation(
        symbol="*",
        result="product",
        apply=operator.mul,
        answer_digits=lambda n: 2 * n,
        carry_into=carry_into_product,
        largest_modulus="3037000499",
    ),
}


def operation(name: str) -> Operation:
    """The record of ``name``; an unknown name is a ValueError naming the known ones."""
    try:
        return OPERATIONS[name]
    except KeyError:
        raise ValueError(f"unknown arithmetic operation {name!r}; known: {', '.join(OPERATIONS)}") from None
