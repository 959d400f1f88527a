"""Position ids the tasks compute (coupled, abacus, randomized), index hints, and the
evaluation grid of lengths: hand-checked examples and the invariants the schemes rest on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from study.config import ArithmeticTask, ModelConfig, trial_config
from study.errors import ConfigError
from study.model import Transformer
from study.tasks.arithmetic import Arithmetic
from study.tasks.arithmetic_format import encode
from study.tasks.arithmetic_positions import position_ids
from study.tasks.base import ModelIO
from study.train import Report, train, train_pack

from arithmetic_helpers import format_example


def ids_of(cfg: ArithmeticTask, a: int, b: int, scheme: str) -> list[int]:
    enc = encode(torch.tensor([a]), torch.tensor([b]), cfg, max(len(str(a)), len(str(b))))
    return position_ids(enc.significance, enc.prompt_len, scheme)[0].tolist()


# --------------------------------------------------------------------------- hand-checked ids


def test_coupled_ids_of_a_padded_sum_give_equal_significance_equal_ids():
    cfg = ArithmeticTask(width=4, digits=3, eval_max_len=3, symbols=True)  # 0349+0705= -> reversed answer 45010
    #          a: 0 3 4 9 +   b: 0 7 0 5 =   answer inputs: 4 5 0 1 (the last answer token is never read)
    assert ids_of(cfg, 349, 705, "coupled") == [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 2, 3, 4, 5]
    # a digit worth 10^s has id 2 + s in both operands and in the answer; '+' and '=' sit one
    # below the units (Cho et al., arXiv 2405.20671): '=' predicts the units digit from id 2


def test_coupled_and_abacus_ids_of_an_unpadded_sum():
    cfg = ArithmeticTask(pad=False, symbols=True, width=4, digits=3, eval_max_len=3)  # 349+12=163$
    #                                   3  4  9  +  1  2  =  1  6  3
    assert ids_of(cfg, 349, 12, "coupled")[:10] == [4, 3, 2, 1, 3, 2, 1, 2, 3, 4]
    assert ids_of(cfg, 349, 12, "abacus")[:10] == [3, 2, 1, 0, 2, 1, 0, 1, 2, 3]  # each digit: 1 + offset in its number
    # (the tail of the row is pad tokens after the end token, never read for an answer)


def test_coupled_ids_put_the_digits_each_answer_token_sums_one_id_above_it():
    cfg = ArithmeticTask(pad=False, symbols=True, width=8, digits=8, eval_max_len=8, train_set="fresh")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 10**8, (64,), generator=g), torch.randint(0, 10**8, (64,), generator=g)
    enc = encode(a, b, cfg, 8)
    ids = position_ids(enc.significance, enc.prompt_len, "coupled")
    for i in range(64):
        P = int(enc.prompt_len[i])
        la, lb = len(str(int(a[i]))), len(str(int(b[i])))
        for s in range(min(la, lb)):
            digit = P + s  # answer digit s (reversed answer); the input before it predicts it
            assert ids[i, la - 1 - s] == ids[i, la + 1 + lb - 1 - s] == ids[i, digit] == 2 + s
            assert ids[i, digit - 1] == 1 + s  # '=' for the units, else answer digit s-1
        assert ids[i, la] == ids[i, P - 1] == 1  # '+' and '='
        assert 1 not in ids[i, P:].tolist()  # no answer token on the symbols' id


# --------------------------------------------------------------------------- random ids in training


@pytest.mark.parametrize("scheme", ["coupled", "abacus"])
def test_training_offsets_stay_in_range_and_repeat_from_the_seed(scheme):
    cfg = ArithmeticTask(width=6, digits=3, eval_max_len=6, train_set="fresh", eval_examples=8, symbols=True)
    task = Arithmetic(cfg, seed=0, position_scheme=scheme, max_position=20)
    batch = task.train_batch(256, 0, torch.Generator().manual_seed(5))
    again = task.train_batch(256, 0, torch.Generator().manual_seed(5))
    assert torch.equal(batch.positions, again.positions) and torch.equal(batch.inputs, again.inputs)
    enc = encode(batch.inputs[:, 0], batch.inputs[:, 0], cfg, 3)  # any pair: padded ids do not depend on values
    base = position_ids(enc.significance, enc.prompt_len, scheme)[:1]
    offset = batch.positions - base
    has_id = base.expand_as(offset) > 0
    assert (batch.positions[~has_id] == 0).all()  # abacus symbols keep id 0; coupled ones shift
    assert has_id[0].sum() == len(base[0]) - (2 if scheme == "abacus" else 0)
    per_row = offset[:, :1]
    assert (offset == per_row)[has_id].all(), "one offset per sequence"
    assert batch.positions.min() >= 0 and batch.positions.max() <= 19
    assert set(per_row.flatten().tolist()) == set(range(20 - int(base.max())))  # every offset drawn


@pytest.mark.parametrize("scheme, largest", [("coupled", 7), ("abacus", 6)])
def test_the_smallest_id_range_the_config_allows_holds_every_unpadded_sequence(scheme, largest):
    """Pad tokens after a short answer carry no id, so short sequences do not need more."""
    cfg = ArithmeticTask(pad=False, symbols=True, width=4, digits=2, eval_max_len=4, train_set="fresh", eval_examples=8)
    # 4-digit sums have 5 digits and an end token: the slot after the last digit (significance 5)
    # is id 6 with Abacus, 7 when coupled (whose symbols take id 1)
    with pytest.raises(ConfigError, match=f"at least {largest + 1}"):
        trial_config({"task": cfg.model_dump(), "model": {"pos_encoding": scheme, "max_position": largest}})
    task = Arithmetic(cfg, seed=0, position_scheme=scheme, max_position=largest + 1)
    ids = task.train_batch(512, 0, torch.Generator().manual_seed(0)).positions
    assert ids.max() == largest and ids.min() == 0
    assert all(group.positions.max() <= largest for group in task.eval_groups)


def test_random_zero_padding_writes_training_operands_with_leading_zeros_up_to_the_width():
    cfg = ArithmeticTask(
        pad=False,
        symbols=True,
        width=9,
        digits=3,
        eval_max_len=6,
        train_set="fresh",
        eval_examples=8,
        random_zero_pad=True,
    )
    task = Arithmetic(cfg, seed=0, position_scheme="coupled", max_position=14)
    batch = task.train_batch(512, 0, torch.Generator().manual_seed(2))
    again = task.train_batch(512, 0, torch.Generator().manual_seed(2))
    assert torch.equal(batch.inputs, again.inputs) and torch.equal(batch.positions, again.positions)
    widths = set()
    for row, ids in zip(torch.cat([batch.inputs, batch.targets[:, -1:]], 1), batch.positions):
        a, rest = task.decode(row).split("+")
        b, answer = rest.split("=")
        widths.update((len(a), len(b)))
        assert len(str(int(a))) <= 3 and len(str(int(b))) <= 3  # 3-digit numbers, written up to 9 digits
        assert answer.rstrip("_") == str(int(a) + int(b))[::-1] + "$"  # the answer as always: no leading zero
        # coupled ids still follow significance: the leading zeros take the ids above the digits
        assert ids[0] - ids[len(a) - 1] == len(a) - 1 and ids[len(a) - 1] == ids[len(a) + len(b)]
    assert widths == set(range(1, 10))  # every width up to task.width is drawn
    assert batch.positions.max() < 14
    for group in task.eval_groups:  # evaluation stays unpadded: no operand starts with a zero
        sums = [task.decode(p) for p in group.prompts]
        assert all(not (x.startswith("0") and x != "0") for s in sums for x in s.rstrip("=").split("+"))


def test_randomized_ids_are_sorted_subsets_of_the_range_and_repeat_from_the_seed():
    cfg = ArithmeticTask(width=4, digits=3, eval_max_len=4, train_set="fresh", eval_examples=8)
    task = Arithmetic(cfg, seed=0, position_scheme="randomized", max_position=40)
    batch = task.train_batch(128, 0, torch.Generator().manual_seed(1))
    ids = batch.positions
    assert ids.shape == batch.inputs.shape and ids.min() >= 0 and ids.max() < 40
    assert (ids.diff(dim=1) > 0).all()  # strictly increasing: an ordered subset
    assert len({tuple(r) for r in ids.tolist()}) > 100  # drawn per sequence
    assert torch.equal(ids, task.train_batch(128, 0, torch.Generator().manual_seed(1)).positions)
    # evaluation ids are fixed at construction: the same task seed gives the same ones
    other = Arithmetic(cfg, seed=0, position_scheme="randomized", max_position=40)
    assert torch.equal(task.eval_groups[0].positions, other.eval_groups[0].positions)


def test_evaluation_ids_have_no_offset():
    cfg = ArithmeticTask(width=4, digits=3, eval_max_len=3, eval_examples=8, symbols=True)
    task = Arithmetic(cfg, seed=0, position_scheme="coupled", max_position=32)
    group = task.eval_groups[0]
    assert group.positions.shape == (len(group.prompts), group.prompts.shape[1] + group.target.shape[1] - 1)
    assert group.positions[0].tolist() == [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- the model


def test_output_does_not_depend_on_the_scheme_when_all_ids_are_equal():
    """With every id equal, the position table adds one vector to every token: the same
    model as NoPE with that vector folded into the token embedding, whatever the scheme
    (ALiBi over ids adds 0 to every score, RoPE over ids turns every query and key alike)."""
    io = ModelIO(12, 12, True, 10)
    tokens = torch.randint(0, 12, (3, 10), generator=torch.Generator().manual_seed(0))
    same = torch.full((3, 10), 4)
    outputs = []
    for scheme in ("coupled", "abacus", "randomized", "coupled_alibi", "coupled_rope"):
        model = Transformer(
            ModelConfig(n_layer=2, pos_encoding=scheme, max_position=8, dropout=0.0), io, seeds=[3]
        ).eval()
        with torch.no_grad():
            model.pos_table.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(9))
        outputs.append(model(tokens, positions=same))
        nope = Transformer(ModelConfig(n_layer=2, pos_encoding="none", dropout=0.0), io).eval()
        weights = {k: v for k, v in model.state_dict().items() if k != "pos_table"}
        nope.load_state_dict(weights)
        with torch.no_grad():
            nope.read_in.weight.add_(model.pos_table[:, 4:5])
        torch.testing.assert_close(outputs[-1], nope(tokens))
        shifted = model(tokens, positions=(torch.arange(10) % 8).expand(3, 10))
        assert not torch.allclose(shifted, outputs[-1])  # the ids do reach the output
    for other in outputs[1:]:
        torch.testing.assert_close(outputs[0], other)


def test_alibi_over_coupled_ids_weighs_each_key_by_its_place_distance():
    """349+12=: with queries and keys zeroed, the attention of each head is the softmax of
    its bias alone, -m_h * |id_q - id_k| over the keys up to the query (slopes 4, 4, 2, 2)."""
    cfg = ArithmeticTask(pad=False, symbols=True, width=4, digits=3, eval_max_len=3)
    ids = ids_of(cfg, 349, 12, "coupled_alibi")
    assert ids == ids_of(cfg, 349, 12, "coupled")  # the ids are coupled; only attention differs
    task = Arithmetic(cfg, seed=0, position_scheme="coupled_alibi", max_position=8)
    model = Transformer(
        ModelConfig(n_layer=1, n_head=4, d_model=32, pos_encoding="coupled_alibi", max_position=8, dropout=0.0),
        task.io,
        seeds=[0],
    ).eval()
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight[:, :, :64].zero_()  # queries and keys: 0, values kept
    tokens = torch.tensor([[task.vocab.index(c) for c in "349+12=16"]])
    positions = torch.tensor([ids[:9]])  #   3  4  9  +  1  2  =  1  6
    assert positions.tolist() == [[4, 3, 2, 1, 3, 2, 1, 2, 3]]
    _, internals = model(tokens, positions=positions, return_internals=True)
    weights = internals.attention[0][0]  # [H, T, T]
    # the last query ('6', the tens digit, id 3) and keys 3 4 9 + 1 2 = 1 6: distances by hand
    distance = torch.tensor([1.0, 0, 1, 2, 0, 1, 2, 1, 0])
    for head, slope in enumerate([4.0, 4.0, 2.0, 2.0]):
        torch.testing.assert_close(weights[head, 8], torch.softmax(-slope * distance, 0))
    # '+' (query 3, id 1) sees 3 4 9 + at distances 3 2 1 0, and nothing after it
    torch.testing.assert_close(
        weights[3, 3], torch.cat([torch.softmax(-2.0 * torch.tensor([3.0, 2, 1, 0]), 0), torch.zeros(5)])
    )


@pytest.mark.parametrize("scheme", ["coupled_alibi", "coupled_rope"])
def test_attention_over_ids_sees_only_their_differences(scheme):
    """Without the id table (zeroed), shifting every id by one constant leaves the output,
    and moving one id changes it: attention reads id_q - id_k and nothing absolute."""
    io = ModelIO(12, 12, True, 10)
    model = Transformer(ModelConfig(n_layer=2, pos_encoding=scheme, max_position=16, dropout=0.0), io, seeds=[2]).eval()
    with torch.no_grad():
        model.pos_table.zero_()
    tokens = torch.randint(0, 12, (3, 10), generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([5, 4, 3, 2, 1, 4, 3, 2, 1, 2]).expand(3, 10)
    out = model(tokens, positions=ids)
    torch.testing.assert_close(model(tokens, positions=ids + 5), out)
    moved = ids.clone()
    moved[:, 1] = 9
    assert not torch.allclose(model(tokens, positions=moved)[:, 1:], out[:, 1:])
    explicit, _ = model(tokens, positions=ids, return_internals=True)  # softmax written out, not the fused kernel
    torch.testing.assert_close(explicit, out)


@pytest.mark.parametrize("scheme", ["coupled_alibi", "coupled_rope"])
def test_a_packed_member_reads_its_own_ids(scheme):
    """Member k of a pack, given its own ids among other members' different ones, computes
    what the same seed computes alone (the attention over ids keeps members apart)."""
    io = ModelIO(12, 12, True, 10)
    cfg = ModelConfig(n_layer=2, pos_encoding=scheme, max_position=16, dropout=0.0)
    g = torch.Generator().manual_seed(0)
    tokens, ids = torch.randint(0, 12, (2, 3, 10), generator=g), torch.randint(0, 16, (2, 3, 10), generator=g)
    pack = Transformer(cfg, io, n_members=2, seeds=[5, 6]).eval()
    alone = Transformer(cfg, io, seeds=[6]).eval()
    torch.testing.assert_close(pack(tokens, positions=ids)[1], alone(tokens[1], positions=ids[1]), atol=1e-5, rtol=1e-5)


def test_coupled_alibi_and_rope_give_the_training_batch_coupled_ids():
    cfg = ArithmeticTask(pad=False, symbols=True, width=6, digits=3, eval_max_len=6, train_set="fresh", eval_examples=8)
    batches = [
        Arithmetic(cfg, seed=0, position_scheme=scheme, max_position=12).train_batch(
            64, 0, torch.Generator().manual_seed(4)
        )
        for scheme in ("coupled", "coupled_alibi", "coupled_rope")
    ]
    for batch in batches[1:]:
        assert torch.equal(batch.positions, batches[0].positions) and torch.equal(batch.inputs, batches[0].inputs)


def test_a_model_with_task_ids_refuses_to_run_without_them():
    model = Transformer(ModelConfig(pos_encoding="coupled"), ModelIO(12, 12, True, 10))
    with pytest.raises(ValueError, match="needs the task's position ids"):
        model(torch.zeros(2, 10, dtype=torch.long))


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.family=icl", "model.pos_encoding=coupled"], "task.family=icl prompts have none"),
        (["task.family=icl", "model.pos_encoding=randomized"], "task.family=icl prompts have none"),
        (["task.family=icl", "model.pos_encoding=coupled_alibi"], "task.family=icl prompts have none"),
        (["task.family=icl", "model.pos_encoding=coupled_rope"], "task.family=icl prompts have none"),
        (
            ["model.pos_encoding=coupled_alibi", "task.symbols=false"],
            "coupled_alibi gives the '=' token.*set task.symbols=true",
        ),
        (["model.pos_encoding=coupled_rope", "task.reverse=false", "task.symbols=true"], "set task.reverse=true"),
        (
            ["model.pos_encoding=coupled_rope", "model.d_model=48", "model.n_head=16"],
            "coupled_rope needs an even head size",
        ),
        (
            [
                "model.pos_encoding=coupled_alibi",
                "task.symbols=true",
                "task.width=12",
                "task.eval_max_len=12",
                "model.max_position=12",
            ],
            "set model.max_position to at least 15",
        ),
        (["model.pos_encoding=abacus", "task.reverse=false"], "set task.reverse=true"),
        (
            [
                "model.pos_encoding=coupled",
                "task.symbols=true",
                "task.width=12",
                "task.eval_max_len=12",
                "model.max_position=12",
            ],
            "set model.max_position to at least 15",
        ),
        (["model.pos_encoding=coupled", "task.symbols=false"], "set task.symbols=true"),
        (["model.pos_encoding=randomized", "model.max_position=10"], "set model.max_position to at least"),
        (["task.index_hints=true", "task.pad=false", "task.symbols=true"], "set task.pad=true"),
        (["task.random_zero_pad=true", "task.pad=true"], "set task.pad=false"),
        (["task.eval_lengths=[3,8]", "task.eval_max_len=5", "task.width=8"], "drop task.eval_max_len"),
    ],
)
def test_a_scheme_that_does_not_apply_is_one_clear_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        trial_config(overrides=overrides)


# --------------------------------------------------------------------------- index hints and the grid


def test_index_hints_mark_every_digit_with_its_significance():
    task = Arithmetic(ArithmeticTask(width=4, digits=3, eval_max_len=3, index_hints=True), seed=0)
    # 0349 -> d0 c3 b4 a9; the reversed answer 45010 -> a4 b5 c0 d1 e0
    assert format_example(task, 349, 705) == "d0c3b4a9" + "d0c7b0a5" + "a4b5c0d1e0"
    batch = task.train_batch(4, 0, torch.Generator().manual_seed(0))
    assert batch.mask.sum(1).tolist() == [10] * 4  # hints and digits of the answer are trained


class Lookup(nn.Module):
    """Answers every evaluation prompt of a task correctly (the target of its group), and
    records the position ids it is given."""

    def __init__(self, task: Arithmetic):
        super().__init__()
        self.answers = {}
        for group in task.eval_groups:
            for prompt, target in zip(group.prompts.tolist(), group.target.tolist()):
                self.answers[tuple(prompt)] = target
        self.vocab, self.seen = len(task.vocab), []

    def forward(self, inputs, positions=None, return_hidden=False):
        self.seen.append(positions)
        logits = torch.zeros(*inputs.shape, self.vocab)
        for i, row in enumerate(inputs.tolist()):
            for P in range(1, len(row) + 1):
                if tuple(row[:P]) in self.answers:
                    for j, token in enumerate(self.answers[tuple(row[:P])][: len(row) - P + 1]):
                        logits[i, P - 1 + j, token] = 1.0
                    break
        return (logits, logits) if return_hidden else logits


def test_a_perfect_model_scores_one_with_hints_and_coupled_ids_on_a_diagonal_grid():
    cfg = ArithmeticTask(
        width=12,
        digits=3,
        eval_lengths=[1, 2, 3, 8, 12],
        eval_grid="diagonal",
        index_hints=True,
        symbols=True,
        eval_examples=8,
    )
    task = Arithmetic(cfg, seed=0, position_scheme="coupled", max_position=32)
    assert task.conditions == [(1, 1, "id"), (2, 2, "id"), (3, 3, "id"), (8, 8, "ood"), (12, 12, "ood")]
    oracle = Lookup(task)
    rows = task.evaluate(oracle)
    assert {r["value"] for r in rows if r["metric"] in ("exact_match", "digit_acc")} == {1.0}
    assert all(p is not None and p.max() < 32 for p in oracle.seen)


def test_square_grid_of_listed_lengths():
    task = Arithmetic(ArithmeticTask(width=10, digits=2, eval_lengths=[2, 10], eval_examples=8), seed=0)
    assert task.conditions == [(2, 2, "id"), (2, 10, "ood"), (10, 2, "ood"), (10, 10, "ood")]


# --------------------------------------------------------------------------- training with task ids

TINY = [
    "task.digits=2",
    "task.width=4",
    "task.eval_max_len=4",
    "task.eval_examples=16",
    "task.train_set=fresh",
    "task.pad=false",
    "task.symbols=true",
    "model.n_layer=1",
    "model.pos_encoding=coupled",
    "model.max_position=16",
    "train.steps=20",
    "train.eval_every=10",
    "train.batch_size=8",
    "train.log_every=5",
    "train.device=cpu",
]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["task.random_zero_pad=true"]])
def test_a_coupled_run_restored_from_a_checkpoint_ends_bit_for_bit_the_same(extra):
    cfg = trial_config(overrides=TINY + extra)
    uninterrupted: list[Report] = []
    train(cfg, report=uninterrupted.append)
    checkpoint = uninterrupted[0].state
    resumed: list[Report] = []
    train(cfg, restore=checkpoint, report=resumed.append)
    for name, value in uninterrupted[-1].state["model"].items():
        assert torch.equal(value, resumed[-1].state["model"][name]), name
    assert uninterrupted[-1].rows["evals"] == resumed[-1].rows["evals"]


@pytest.mark.slow
def test_a_pack_with_task_ids_trains_each_member_as_alone():
    members = [trial_config(overrides=TINY + [f"train.seed={s}", "model.dropout=0"]) for s in (0, 1)]
    pack = train_pack(members)
    alone = train(members[1])
    assert pack[1].metrics["loss"] == pytest.approx(alone.metrics["loss"], rel=1e-4)
