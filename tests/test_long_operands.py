"""Evaluation operands beyond int64 (up to task.width = 40 digits) as digit rows: the
answers, equivalence answers and residues they get, checked against Python integers."""

from __future__ import annotations

import pytest
import torch

from study.config import ConfigError, trial_config
from study.tasks.arithmetic import Arithmetic
from study.tasks.arithmetic_format import encode
from study.tasks.arithmetic_numbers import digit_count
from study.tasks.arithmetic_config import ArithmeticTask


def number(row: list[int]) -> int:
    """A digit row (least significant first) as a Python integer."""
    return int("".join(map(str, reversed(row))))


def answer_number(tokens: list[int], task: Arithmetic) -> int:
    text = task.decode(tokens).split("$")[0]
    return int(text[::-1] if task.cfg.reverse else text)


@pytest.mark.parametrize("pad, modulus", [(False, None), (True, None), (False, 97)])
def test_forty_digit_sums_are_exact_and_their_equivalents_read_the_low_digits(pad, modulus):
    cfg = ArithmeticTask(
        width=40,
        digits=3,
        eval_lengths=[3, 19, 40],
        eval_grid="diagonal",
        pad=pad,
        symbols=True,
        eval_examples=32,
        modulus=modulus,
        train_set="fresh",
    )
    task = Arithmetic(cfg, seed=0)
    assert [c[:2] for c in task.conditions] == [(3, 3), (19, 19), (40, 40)]
    long = task.eval_pairs[(40, 40)]
    assert long.shape == (32, 2, 40) and (digit_count(long[:, 0]) == 40).all() and (digit_count(long[:, 1]) == 40).all()
    checked = 0
    for group in task.eval_groups:
        for i in range(len(group.cond)):
            len_a, len_b, _ = task.conditions[int(group.cond[i])]
            prompt = task.decode(group.prompts[i].tolist())
            a_text, b_text = prompt.rstrip("=").split("+")
            a, b = int(a_text), int(b_text)
            assert len(str(a)) == len_a and len(str(b)) == len_b
            truth = a + b if modulus is None else (a + b) % modulus
            equivalent = (a % 10**3 + b % 10**3) if modulus is None else (a % 10**3 + b % 10**3) % modulus
            assert answer_number(group.target[i].tolist(), task) == truth
            assert answer_number(group.equivalent[i].tolist(), task) == equivalent
            assert bool(group.chance[i]) == (truth == equivalent)
            checked += 1
    assert checked == 3 * 32


def test_a_digit_row_encodes_as_its_number_does():
    cfg = ArithmeticTask(width=18, digits=3, eval_max_len=18, pad=False, symbols=True)
    a, b = torch.tensor([123456789012345678, 7]), torch.tensor([999999999999999999, 93])
    rows = lambda x: torch.tensor([[int(d) for d in reversed(f"{v:018d}")] for v in x.tolist()])
    by_number, by_rows = encode(a, b, cfg, 18), encode(rows(a), rows(b), cfg, 18)
    assert torch.equal(by_number.tokens, by_rows.tokens)
    assert torch.equal(by_number.significance, by_rows.significance)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.width=40", "task.digits=20", "task.eval_max_len=40"], "train on at most 18 digits"),
        (["task.width=20", "task.eval_max_len=20", "task.op=mul"], "gives products beyond int64"),
        (["task.width=20", "task.eval_max_len=20", "task.modulus=1000000000000000000"], r"task.modulus <= 10\^17"),
    ],
)
def test_what_digit_rows_cannot_carry_is_one_clear_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        trial_config(overrides=overrides)
