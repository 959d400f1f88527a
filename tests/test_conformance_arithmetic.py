"""The contracts every registered arithmetic operation and position scheme keeps.

In the manner of Optuna's storage tests: each test is parametrized over every entry of
:data:`study.tasks.operations.OPERATIONS` or :data:`study.tasks.position_schemes.POSITION_SCHEMES`,
so a new entry runs all of them without a line added here.
"""

from __future__ import annotations

import pytest
import torch

from study.config import ModelConfig, trial_config
from study.errors import ConfigError
from study.model import Transformer
from study.tasks.arithmetic import Arithmetic
from study.tasks.arithmetic_config import (
    ID_RULE_FORMATS,
    ArithmeticTask,
    answer_digits,
    largest_position_id,
    vocabulary,
)
from study.tasks.arithmetic_format import encode
from study.tasks.arithmetic_numbers import DIGIT_ROW_ANSWERS, answer_of, equivalent_of
from study.tasks.arithmetic_positions import ID_RULES, position_ids
from study.tasks.operations import INT64_MAX, OPERATIONS, operation
from study.tasks.position_schemes import POSITION_SCHEMES, TASK_POSITION_SCHEMES, position_scheme

OPS = list(OPERATIONS)
SCHEMES = list(POSITION_SCHEMES)
TASK_SCHEMES = list(TASK_POSITION_SCHEMES)
SMALL = dict(eval_examples=8, probes={"enabled": False})


def digits_of(x: int) -> int:
    return len(str(x))


def pairs_within(n: int, size: int, seed: int) -> torch.Tensor:
    """Long [size, 2]: operands of at most n digits, the extremes 0 and 10^n - 1 included."""
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, 10**n, (size, 2), generator=g)
    pairs[0], pairs[1] = torch.tensor([10**n - 1, 10**n - 1]), torch.tensor([0, 10**n - 1])
    return pairs


# --------------------------------------------------------------------------- operations


def test_an_unknown_operation_fails_loudly_with_the_known_names():
    with pytest.raises(ValueError, match="known: " + ", ".join(OPS)):
        operation("sub")
    with pytest.raises(ValueError, match="|".join(f"'{op}'" for op in OPS)):
        ArithmeticTask(op="sub")


@pytest.mark.parametrize("op", OPS)
def test_the_config_accepts_the_operation_and_writes_its_symbol(op):
    cfg = ArithmeticTask(op=op, symbols=True, digits=2, width=3, eval_max_len=3)
    assert operation(op).symbol in vocabulary(cfg)
    assert len(set(record.symbol for record in OPERATIONS.values())) == len(OPERATIONS)  # symbols tell them apart


@pytest.mark.parametrize("op", OPS)
def test_the_answer_width_rule_holds_on_extreme_operands(op):
    record = operation(op)
    for n in range(1, record.most_digits_within_int64() + 1):
        largest = 10**n - 1
        assert digits_of(record.apply(largest, largest)) <= record.answer_digits(n), n
        assert digits_of(record.apply(0, 0)) <= record.answer_digits(n)
        assert answer_digits(ArithmeticTask(op=op, digits=1, width=n, eval_max_len=n), n) == record.answer_digits(n)
    beyond = record.most_digits_within_int64() + 1
    assert record.apply(10**beyond - 1, 10**beyond - 1) > INT64_MAX  # the limit is the largest that fits


@pytest.mark.parametrize("op", OPS)
def test_ints_and_tensors_give_the_same_answers_carries_and_equivalents(op):
    record, pairs = operation(op), pairs_within(4, 64, seed=0)
    a, b = pairs.unbind(1)
    assert record.apply(a, b).tolist() == [record.apply(x, y) for x, y in pairs.tolist()]
    for i in range(5):
        assert record.carry_into(a, b, i).tolist() == [record.carry_into(x, y, i) for x, y in pairs.tolist()]
    low = [record.equivalent(x, y, 2) for x, y in pairs.tolist()]
    assert torch.stack(record.equivalent(a, b, 2), 1).tolist() == [list(p) for p in low]


@pytest.mark.parametrize("op", OPS)
def test_the_carry_into_a_digit_reads_only_the_digits_below_it(op):
    record, pairs = operation(op), pairs_within(5, 256, seed=1)
    a, b = pairs.unbind(1)
    assert (record.carry_into(a, b, 0) == 0).all()  # nothing below the units digit
    for i in range(1, 6):
        carry = record.carry_into(a, b, i)
        assert (carry >= 0).all()
        assert torch.equal(carry, record.carry_into(a % 10**i, b % 10**i, i))


@pytest.mark.parametrize("op", OPS)
def test_the_carry_rule_writes_the_answer_digits_schoolbook_fashion(op):
    """Digit i of f(a, b) and the carry out of it are what the carry into it and the terms of
    place i sum to: carry_i + T_i = 10 carry_(i+1) + digit_i, with T_i >= 0 reading only the
    digits up to place i (a + b: a_i + b_i; a * b: the a_j b_k with j + k = i)."""
    record, pairs = operation(op), pairs_within(4, 256, seed=5)
    a, b = pairs.unbind(1)

    def place_terms(x: torch.Tensor, y: torch.Tensor, i: int) -> torch.Tensor:
        digit = record.apply(x, y) // 10**i % 10
        return 10 * record.carry_into(x, y, i + 1) + digit - record.carry_into(x, y, i)

    for i in range(6):
        terms = place_terms(a, b, i)
        assert (terms >= 0).all(), i
        assert torch.equal(terms, place_terms(a % 10 ** (i + 1), b % 10 ** (i + 1), i)), i


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("modulus", [None, 97])
def test_the_equivalence_answer_is_the_answer_on_id_lengths(op, modulus):
    n = 3
    a, b = pairs_within(n, 256, seed=2).unbind(1)
    assert torch.equal(equivalent_of(a, b, n, op, modulus), answer_of(a, b, op, modulus))
    # beyond n digits it is the answer of the operands' low n digits
    longer = pairs_within(n + 3, 256, seed=3)
    x, y = longer.unbind(1)
    assert torch.equal(equivalent_of(x, y, n, op, modulus), answer_of(x % 10**n, y % 10**n, op, modulus))


@pytest.mark.parametrize("op", OPS)
def test_operands_beyond_int64_are_computed_digit_by_digit_or_refused(op):
    record = operation(op)
    longest = record.most_digits_within_int64() + 1
    fields = dict(op=op, digits=3, width=max(longest, 20), eval_max_len=max(longest, 20))
    if not record.digit_by_digit:
        assert op not in DIGIT_ROW_ANSWERS
        with pytest.raises(ValueError, match=f"{record.result}s beyond int64"):
            ArithmeticTask(**fields)
        return
    task = Arithmetic(ArithmeticTask(**fields, eval_lengths=[3, 20], eval_grid="diagonal", **SMALL), seed=0)
    rows = task.eval_pairs[(20, 20)]  # digit rows, least significant first
    number = lambda row: int("".join(map(str, reversed(row))))  # noqa: E731
    answers = answer_of(rows[:, 0], rows[:, 1], op)
    for pair, answer in zip(rows.tolist(), answers.tolist()):
        assert number(answer) == record.apply(number(pair[0]), number(pair[1]))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("pad", [True, False])
def test_a_sequence_spells_the_operands_and_their_answer(op, pad):
    cfg = ArithmeticTask(op=op, pad=pad, symbols=True, reverse=False, digits=3, width=4, eval_max_len=4)
    vocab, record = vocabulary(cfg), operation(op)
    a, b = pairs_within(3, 16, seed=4).unbind(1)
    enc = encode(a, b, cfg, 3)
    for x, y, row in zip(a.tolist(), b.tolist(), enc.tokens.tolist()):
        text = "".join(vocab[t] for t in row).rstrip("_")
        left, answer = text.split("=")
        assert [int(v) for v in left.split(record.symbol)] == [x, y]
        assert int(answer.rstrip("$")) == record.apply(x, y)


@pytest.mark.parametrize("op", OPS)
def test_batches_have_the_convention_shapes_and_follow_the_generator(op):
    task = Arithmetic(ArithmeticTask(op=op, digits=2, width=3, eval_max_len=3, **SMALL), seed=0)
    batch = task.train_batch(16, 0, torch.Generator().manual_seed(7))
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape
    assert batch.inputs.shape[0] == 16 and batch.inputs.shape[1] <= task.io.max_seq_len
    assert batch.mask.any(1).all() and batch.positions is None
    again = task.train_batch(16, 0, torch.Generator().manual_seed(7))
    other = task.train_batch(16, 0, torch.Generator().manual_seed(8))
    assert torch.equal(batch.inputs, again.inputs) and not torch.equal(batch.inputs, other.inputs)
    twin = Arithmetic(ArithmeticTask(op=op, digits=2, width=3, eval_max_len=3, **SMALL), seed=0)
    assert all(torch.equal(x.prompts, y.prompts) for x, y in zip(task.eval_groups, twin.eval_groups))


# --------------------------------------------------------------------------- position schemes

FORMATS = {
    "padded": dict(pad=True, symbols=True, digits=3, width=5, eval_max_len=5),
    "unpadded": dict(pad=False, symbols=True, digits=3, width=6, eval_max_len=6, train_set="fresh"),
    "zero_padded": dict(
        pad=False, symbols=True, digits=2, width=6, eval_max_len=4, train_set="fresh", random_zero_pad=True
    ),
    "hints": dict(pad=True, symbols=True, digits=2, width=4, eval_max_len=4, index_hints=True),
    "mul": dict(op="mul", pad=True, symbols=True, digits=2, width=4, eval_max_len=4),
    "most_significant_first": dict(pad=True, symbols=True, reverse=False, digits=2, width=4, eval_max_len=4),
}


def test_an_unknown_scheme_fails_loudly_with_the_known_names():
    with pytest.raises(ValueError, match="known: " + ", ".join(SCHEMES)):
        position_scheme("sideways")
    with pytest.raises(ConfigError, match="sideways"):
        trial_config({"model": {"pos_encoding": "sideways"}})


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_record_is_complete_and_the_config_accepts_the_scheme(scheme):
    record = position_scheme(scheme)
    assert record.table in ("learned", "sinusoidal", None) and record.attention in ("alibi", "rope", None)
    assert ModelConfig(pos_encoding=scheme).pos_encoding == scheme
    if record.task_ids:  # the task numbers the tokens: its rule exists in both halves
        assert record.ids in ID_RULES and record.ids in ID_RULE_FORMATS
    else:
        assert not record.offset


def task_for(scheme: str, fmt: str, max_position: int = 64) -> Arithmetic | None:
    """The task of a format under a scheme, or None where the config refuses the pair."""
    try:
        cfg = trial_config(
            {"task": {**FORMATS[fmt], **SMALL}, "model": {"pos_encoding": scheme, "max_position": max_position}}
        )
    except ConfigError:
        return None
    ids = scheme if position_scheme(scheme).task_ids else None
    return Arithmetic(cfg.task, seed=0, position_scheme=ids, max_position=max_position)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("scheme", TASK_SCHEMES)
def test_the_largest_id_bounds_every_id_the_scheme_gives(scheme, fmt):
    task = task_for(scheme, fmt)
    if task is None:
        pytest.skip(f"{scheme} refuses the {fmt} format")
    largest = largest_position_id(task.cfg, scheme)
    record = position_scheme(scheme)
    for group in task.eval_groups:  # evaluation ids: no offset
        assert group.positions.shape == (len(group.prompts), group.prompts.shape[1] + group.target.shape[1] - 1)
        if ID_RULE_FORMATS[record.ids].units_id is None:  # random ids: the bound is how many a sequence needs
            assert group.positions.shape[1] <= largest
        else:
            assert 0 <= group.positions.min() and group.positions.max() <= largest
    batch = task.train_batch(64, 0, torch.Generator().manual_seed(3))
    assert batch.positions.shape == batch.inputs.shape
    assert 0 <= batch.positions.min() and batch.positions.max() < task.max_position
    enc = encode(task.test_pairs[:, 0], task.test_pairs[:, 1], task.cfg, task.n)
    if ID_RULE_FORMATS[record.ids].units_id is not None:
        assert position_ids(enc.significance, enc.prompt_len, scheme).max() <= largest


@pytest.mark.parametrize("scheme", TASK_SCHEMES)
def test_training_ids_follow_the_generator_and_offsets_only_where_the_record_says(scheme):
    task = task_for(scheme, "padded")
    batch = task.train_batch(64, 0, torch.Generator().manual_seed(5))
    assert torch.equal(batch.positions, task.train_batch(64, 0, torch.Generator().manual_seed(5)).positions)
    assert not torch.equal(batch.positions, task.train_batch(64, 0, torch.Generator().manual_seed(6)).positions)
    if position_scheme(scheme).offset:  # one shift per sequence of the evaluation's ids
        enc = encode(batch.inputs[:, 0], batch.inputs[:, 0], task.cfg, task.n)  # padded ids do not depend on values
        base = position_ids(enc.significance, enc.prompt_len, scheme)
        shift = torch.where(base > 0, batch.positions - base, 0)
        assert ((shift == shift.amax(1, keepdim=True)) | (base == 0)).all()


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if not position_scheme(s).task_ids])
def test_the_task_hands_no_ids_for_the_models_own_schemes(scheme):
    task = task_for(scheme, "padded")
    assert task.train_batch(4, 0, torch.Generator().manual_seed(0)).positions is None
    assert all(group.positions is None for group in task.eval_groups)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_model_runs_a_forward_pass_with_the_scheme(scheme):
    task = task_for(scheme, "padded", max_position=32)
    cfg = ModelConfig(n_layer=1, n_head=2, d_model=16, pos_encoding=scheme, max_position=32, dropout=0.0)
    batch = task.train_batch(4, 0, torch.Generator().manual_seed(0))
    kwargs = {} if batch.positions is None else {"positions": batch.positions}
    model = Transformer(cfg, task.io, seeds=[0]).eval()
    out = model(batch.inputs, **kwargs)
    assert out.shape == (*batch.inputs.shape, task.io.n_out) and torch.isfinite(out).all()
    _, internals = model(batch.inputs, return_internals=True, **kwargs)  # the explicit attention path
    assert len(internals.attention) == 1 and torch.isfinite(internals.hidden).all()
    pack = Transformer(cfg, task.io, n_members=2, seeds=[0, 1]).eval()  # member 0 of a pack = the model alone
    packed = pack(batch.inputs.expand(2, -1, -1), **{k: v.expand(2, -1, -1) for k, v in kwargs.items()})
    assert torch.allclose(packed[0], out, atol=1e-5)
    if position_scheme(scheme).task_ids:
        with pytest.raises(ValueError, match="needs the task's position ids"):
            model(batch.inputs)


# --------------------------------------------------------------------------- probes told the step


def test_the_probes_run_at_the_step_they_are_told():
    task = Arithmetic(
        ArithmeticTask(
            digits=2, width=3, eval_max_len=3, eval_examples=4, probes={"points": 64, "every": 1000, "attention": False}
        ),
        seed=0,
    )
    assert not task.probes_due(500) and task.probes_due(1000) and task.probes_due(None)
    model = Transformer(ModelConfig(n_layer=1, n_head=2, d_model=16), task.io, seeds=[0]).eval()
    scored = lambda rows: [r for r in rows if "value" in r]  # noqa: E731
    assert not scored(task.representations(model, step=500))
    assert scored(task.representations(model, step=1000))
