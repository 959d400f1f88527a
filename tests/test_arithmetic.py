"""The arithmetic task: formats, sampling, decoding and the OOD metrics.

The metric tests use small hand-written oracles: real modules that read a and b from
the input tokens, compute an answer with plain Python and emit one-hot logits for it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from study.config import ArithmeticTask, ModelConfig
from study.tasks.arithmetic_config import pair_space_size
from study.tasks.arithmetic import Arithmetic
from study.tasks.arithmetic_decoding import answer_matches, digit_matches, greedy_decode
from study.tasks.arithmetic_numbers import apply_op, num_digits, to_digits
from study.tasks.arithmetic_sampling import sample_pairs

from arithmetic_helpers import equivalent_answer, format_example

UNPADDED = dict(pad=False, symbols=True)


def make(seed: int = 0, **fields) -> Arithmetic:
    fields.setdefault("eval_examples", 16)  # a small grid keeps construction quick
    return Arithmetic(ArithmeticTask(**fields), seed=seed, device="cpu")


# --------------------------------------------------------------------------- oracles


class Oracle(nn.Module):
    """Answers fn(a, b) in the task's format; the hidden state is the one-hot of the output."""

    def __init__(self, task: Arithmetic, fn):
        super().__init__()
        self.vocab, self.cfg, self.fn = task.vocab, task.cfg, fn

    def render(self, c: int) -> str:
        cfg = self.cfg
        if cfg.modulus is not None:
            c %= cfg.modulus
        text = str(c)
        if cfg.pad:
            if cfg.modulus is not None:
                width = len(str(cfg.modulus - 1))
            else:
                width = cfg.width + 1 if cfg.op == "add" else 2 * cfg.width
            text = text.zfill(width)
        text = text[::-1] if cfg.reverse else text
        return text if cfg.pad else text + "$"

    def parse(self, text: str) -> tuple[int, int, int]:
        """(a, b, prompt length) of a token string."""
        if self.cfg.symbols:
            op, eq = text.index("+" if self.cfg.op == "add" else "*"), text.index("=")
            return int(text[:op]), int(text[op + 1 : eq]), eq + 1
        w = self.cfg.width
        return int(text[:w]), int(text[w : 2 * w]), 2 * w

    def forward(self, inputs: torch.Tensor, return_hidden: bool = False):
        B, T = inputs.shape
        logits = torch.zeros(B, T, len(self.vocab))
        for i, row in enumerate(inputs.tolist()):
            a, b, prompt_len = self.parse("".join(self.vocab[t] for t in row))
            for j, ch in enumerate(self.render(self.fn(a, b))):
                if prompt_len - 1 + j < T:
                    logits[i, prompt_len - 1 + j, self.vocab.index(ch)] = 1.0
        return (logits, logits.clone()) if return_hidden else logits


def perfect(task: Arithmetic) -> Oracle:
    return Oracle(task, lambda a, b: a + b if task.cfg.op == "add" else a * b)


def mod_oracle(task: Arithmetic) -> Oracle:
    """Answers f(a mod 10^n, b mod 10^n): the equivalence a length-n model shows."""
    p = 10**task.cfg.train_len
    return Oracle(task, lambda a, b: (a % p) + (b % p) if task.cfg.op == "add" else (a % p) * (b % p))


class RandomCausal(nn.Module):
    """A random causal model: output t depends on tokens <= t only."""

    def __init__(self, vocab: int, d: int = 32):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.pos, self.out = nn.Embedding(vocab, d), nn.Embedding(64, d), nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        h = torch.tanh(self.emb(x) + self.pos(torch.arange(T)))
        h = h.cumsum(1) / torch.arange(1, T + 1)[:, None]
        return self.out(3 * torch.tanh(4 * h))


def table(rows: list[dict]) -> dict[tuple[str, int, int], float]:
    return {(r["metric"], r["len_a"], r["len_b"]): r["value"] for r in rows}


# --------------------------------------------------------------------------- helpers


def test_number_helpers():
    x = torch.tensor([0, 9, 10, 349, 10**18])
    assert to_digits(torch.tensor([349]), 5).tolist() == [[9, 4, 3, 0, 0]]
    assert num_digits(x).tolist() == [1, 1, 2, 3, 19]
    a, b = torch.tensor([1349, 349]), torch.tensor([705, 705])
    assert apply_op(a, b, "add").tolist() == [2054, 1054]
    assert apply_op(a, b, "mul", 51).tolist() == [(1349 * 705) % 51, (349 * 705) % 51]
    # Xu et al. (2308.08268): a 3-digit model answers 1349+705 with 1054
    assert equivalent_answer(a, b, 3, "add").tolist() == [1054, 1054]
    assert pair_space_size(3, "below") == 10**6
    assert pair_space_size(3, "ab") == 900**2
    assert pair_space_size(3, "D") == 10**6 - 100**2


# --------------------------------------------------------------------------- formats


def test_paper_format():
    task = make()  # 2308.08268: padded to 5, reversed answer, digits only
    assert task.vocab == list("0123456789")
    assert format_example(task, 349, 705) == "0034900705450100"
    assert task.io.max_seq_len == 15 and task.io.n_in == task.io.n_out == 10


@pytest.mark.parametrize(
    "fields, expected",
    [
        (dict(reverse=False), "0034900705001054"),
        (dict(symbols=True), "00349+00705=450100"),
        (UNPADDED, "349+705=4501$"),
        (dict(UNPADDED, reverse=False), "349+705=1054$"),
        (dict(op="mul"), "00349007055406420000"),  # 246045 in 2*5 digits, reversed
        (dict(op="mul", symbols=True, reverse=False), "00349*00705=0000246045"),
        (dict(modulus=150), "0034900705400"),  # 1054 mod 150 = 4, in len("149") digits
        (dict(op="mul", modulus=51, reverse=False), "003490070521"),  # 246045 mod 51 = 21
        (dict(UNPADDED, modulus=150), "349+705=4$"),
    ],
)
def test_formats(fields, expected):
    task = make(**fields)
    assert format_example(task, 349, 705) == expected


def test_vocab_only_has_needed_symbols():
    assert make(symbols=True).vocab[10:] == ["+", "="]
    assert make(op="mul", symbols=True).vocab[10:] == ["*", "="]
    assert make(**UNPADDED).vocab[10:] == ["+", "=", "$", "_"]


def test_batch_convention_padded():
    task = make()
    batch = task.train_batch(8, 0, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (8, 15)
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    # answer tokens are sequence positions 10..15, i.e. targets 9..14
    assert batch.mask.sum(1).tolist() == [6] * 8 and batch.mask[:, 9:].all()


def test_batch_convention_unpadded():
    task = make(**UNPADDED, sampling="below", digits=3)
    batch = task.train_batch(64, 0, torch.Generator().manual_seed(0))
    pad, end = task.vocab.index("_"), task.vocab.index("$")
    for inp, tgt, m in zip(batch.inputs, batch.targets, batch.mask):
        text = task.decode(torch.cat([inp[:1], tgt])).rstrip("_")
        a, rest = text.split("+")
        b, answer = rest.split("=")
        assert answer == str(int(a) + int(b))[::-1] + "$"
        masked = task.decode(tgt[m])
        assert masked == answer  # the digits and the end token; no prompt, no pad
        assert (tgt[~m] != end).all()
    assert (batch.targets == pad).any()  # shorter sequences are right-padded


# --------------------------------------------------------------------------- sampling


def test_sampling_rules():
    g = torch.Generator().manual_seed(0)
    d = sample_pairs(3, "D", 20000, g)
    assert (d < 1000).all() and (d >= 0).all()
    assert ((d >= 100).any(1)).all()  # at least one operand has exactly 3 digits
    # the short operand is below 100 with probability 0.1, and either operand is the short one
    assert 0.03 < (d[:, 0] < 100).float().mean() < 0.07 and 0.03 < (d[:, 1] < 100).float().mean() < 0.07
    ab = sample_pairs(3, "ab", 20000, g)
    assert ((ab >= 100) & (ab < 1000)).all()
    below = sample_pairs(3, "below", 20000, g)
    assert (below < 1000).all() and (below < 100).any()
    lengths = sample_pairs(3, "lengths", 30000, g)  # digit count uniform in 1..3, then uniform
    counts = torch.bincount(num_digits(lengths.flatten()), minlength=4)[1:] / lengths.numel()
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.01)
    units = lengths.flatten()[num_digits(lengths.flatten()) == 1]
    assert torch.bincount(units, minlength=10).min() > 0.08 * len(units)  # 0 is a one-digit number


def first_operand(task: Arithmetic, inputs: torch.Tensor) -> torch.Tensor:
    """a from padded digit-only inputs."""
    w = task.cfg.width
    return (inputs[:, :w] * torch.tensor([10**k for k in range(w - 1, -1, -1)])).sum(1)


def test_fresh_mixture_proportions():
    task = make(train_set="fresh", train_fraction=None, sampling="ab", digits=3, mix_digits=1, mix_weight=0.3)
    a = first_operand(task, task.train_batch(20000, 0, torch.Generator().manual_seed(0)).inputs)
    assert abs((a < 10).float().mean().item() - 0.3) < 0.02
    assert ((a < 10) | (a >= 100)).all()


def test_fixed_mixture_shares():
    task = make(sampling="ab", digits=3, mix_digits=2, mix_weight=0.3, train_size=1000)
    a = task.train_pairs[:, 0]
    assert len(task.train_pairs) == 1000 and (a < 100).sum() == 300


def test_fixed_train_set():
    task = make(eval_examples=512)
    train, test = task.train_pairs, task.test_pairs
    assert train.shape == (10000, 2)  # 1% of the 10^6 pairs below 10^3
    assert len(torch.unique(train, dim=0)) == 10000 and (train < 1000).all()
    assert len(test) == 512 and len(torch.unique(torch.cat([train, test]), dim=0)) == 10512
    seen = {tuple(p) for p in train.tolist()}
    for len_a, len_b, split in task.conditions:
        if split == "id":
            assert not seen & {tuple(p) for p in task.eval_pairs[(len_a, len_b)].tolist()}
    assert torch.equal(make(seed=0).train_pairs, train)  # (eval_examples does not matter)
    assert not torch.equal(make(seed=1).train_pairs, train)


def test_eval_grid():
    task = make(digits=2, mix_digits=3, mix_weight=0.5, eval_max_len=4, eval_examples=64)
    assert task.cfg.train_len == 3
    for len_a, len_b, split in task.conditions:
        assert split == ("id" if max(len_a, len_b) <= 3 else "ood")
        a, b = task.eval_pairs[(len_a, len_b)].unbind(1)
        assert len(a) == 64
        assert (num_digits(a) == len_a).all() and (num_digits(b) == len_b).all()
    assert len(task.conditions) == 16
    assert (task.eval_pairs[(1, 1)] == 0).any()  # length 1 includes 0


@pytest.mark.parametrize("fields", [dict(), dict(train_set="fresh", train_fraction=None)])
def test_train_batch_follows_generator(fields):
    task = make(**fields)
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    first = task.train_batch(32, 0, g)
    g.set_state(state)
    again = task.train_batch(32, 5, g)
    assert torch.equal(first.inputs, again.inputs)
    assert not torch.equal(task.train_batch(32, 0, g).inputs, first.inputs)


# --------------------------------------------------------------------------- decoding and metrics


@pytest.mark.parametrize("end_id", [None, 3])
def test_greedy_decode_is_greedy(end_id):
    model = RandomCausal(vocab=12)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 12, (64, 7), generator=g)
    K = 6
    seq = prompts
    for _ in range(K):  # the plain loop: one token at a time
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    naive = seq[:, 7:]
    out = greedy_decode(model, prompts, torch.randint(0, 12, (64, K), generator=g), end_id)
    assert answer_matches(out, naive, end_id).all()
    if end_id is None:
        assert torch.equal(out, naive)


def test_digit_matches_by_significance():
    task = make(**UNPADDED)
    enc = lambda texts: torch.tensor([[task.vocab.index(ch) for ch in t] for t in texts])  # noqa: E731
    end = task.vocab.index("$")
    target = enc(["4501$", "4501$", "4501$", "4501$"])
    out = enc(["451$_", "45010", "4501$", "5$___"])
    correct, counted = digit_matches(out, target, reverse=True, end_id=end)
    assert correct.tolist() == [2, 4, 4, 0] and counted.tolist() == [4, 5, 4, 4]
    assert answer_matches(out, target, end).tolist() == [False, False, True, False]
    # not reversed: 1054 vs 154 agree on the units and tens
    correct, counted = digit_matches(enc(["154$_"]), enc(["1054$"]), reverse=False, end_id=end)
    assert (correct.item(), counted.item()) == (2, 4)


FORMATS = [dict(), dict(reverse=False, symbols=True), UNPADDED, dict(UNPADDED, reverse=False), dict(op="mul")]


@pytest.mark.parametrize("fields", FORMATS)
def test_perfect_oracle(fields):
    task = make(**fields, eval_max_len=4, eval_examples=32)
    values = table(task.evaluate(perfect(task)))
    for len_a, len_b, split in task.conditions:
        assert values[("exact_match", len_a, len_b)] == 1.0
        assert values[("digit_acc", len_a, len_b)] == 1.0
        assert math.isnan(values[("equivalence_of_wrong", len_a, len_b)])
        if split == "id":
            assert values[("equivalence", len_a, len_b)] == 1.0


@pytest.mark.parametrize("fields", FORMATS)
def test_equivalence_oracle(fields):
    task = make(**fields, eval_max_len=4, eval_examples=32)
    rows = task.evaluate(mod_oracle(task))
    assert {r["metric"] for r in rows} == {"exact_match", "digit_acc", "equivalence", "equivalence_of_wrong"}
    values = table(rows)
    ood_exact = []
    for len_a, len_b, split in task.conditions:
        assert values[("equivalence", len_a, len_b)] == 1.0
        if split == "id":
            assert values[("exact_match", len_a, len_b)] == 1.0
        else:
            ood_exact.append(values[("exact_match", len_a, len_b)])  # x: right only when b = 0
            assert values[("equivalence_of_wrong", len_a, len_b)] == 1.0
            assert 0.0 < values[("digit_acc", len_a, len_b)] < 1.0
    assert sum(ood_exact) / len(ood_exact) < 0.1
    assert {r["split"] for r in rows if max(r["len_a"], r["len_b"]) == 4} == {"ood"}


def test_chance_for_modular_addition():
    # 1000 = 100 mod 150: the equivalence answer is right iff 3 divides the carried thousands
    task = make(modulus=150, eval_max_len=5, eval_examples=256)
    values = table(task.evaluate(mod_oracle(task)))
    ood = [c for c in task.conditions if c[2] == "ood"]
    chance = [values[("chance", a, b)] for a, b, _ in ood]
    assert abs(sum(chance) / len(chance) - 1 / 3) < 0.03
    for len_a, len_b, split in task.conditions:
        assert values[("exact_match", len_a, len_b)] == values[("chance", len_a, len_b)]
        assert values[("equivalence", len_a, len_b)] == 1.0
        if split == "id":
            assert values[("chance", len_a, len_b)] == 1.0


def test_chance_is_one_for_compatible_modulus():
    task = make(modulus=100, eval_max_len=5, eval_examples=32)  # 100 divides 10^3
    values = table(task.evaluate(mod_oracle(task)))
    for len_a, len_b, _ in task.conditions:
        assert values[("chance", len_a, len_b)] == 1.0
        assert values[("exact_match", len_a, len_b)] == 1.0


def test_loss_counts_answer_positions_only():
    task = make()
    batch = task.train_batch(16, 0, torch.Generator().manual_seed(0))
    logits = torch.randn(16, 15, 10)
    logits.scatter_(2, batch.targets[..., None], torch.where(batch.mask, 50.0, -50.0)[..., None])
    assert task.loss(logits, batch).item() < 1e-6


@pytest.mark.parametrize("fields", [dict(), dict(UNPADDED, reverse=False)])
def test_representations_at_units_digit(fields):
    task = make(**fields, eval_max_len=5, probes={"enabled": False})
    rows = task.representations(perfect(task))
    assert len(rows) == 512 and {r["split"] for r in rows} == {"id", "ood"}
    assert {r["kind"] for r in rows} == {"pca_units_digit"}
    # the oracle's hidden state is the one-hot of the digit it predicts: one point per label
    by_label: dict[str, set] = {}
    for r in rows:
        assert r["label"] == str((r["a"] + r["b"]) % 10)
        by_label.setdefault(r["label"], set()).add((round(r["pc1"], 4), round(r["pc2"], 4)))
    assert all(len(points) == 1 for points in by_label.values())


def test_real_model_smoke():
    from study.model import Transformer

    task = make(eval_max_len=4, eval_examples=2)
    model = Transformer(ModelConfig(size="nano"), task.io).eval()
    rows = task.evaluate(model)
    assert len(rows) == 16 * 4
    assert all(0.0 <= r["value"] <= 1.0 for r in rows if not math.isnan(r["value"]))
    rows = task.representations(model)
    assert sum(r["kind"] == "pca_units_digit" for r in rows) == 512
    # at initialization the units-digit probe reads the digit at about chance (0.1)
    units = {(r["split"], r["length"]): r["value"] for r in rows if r["kind"] == "probe_digit" and r["position"] == 0}
    assert set(units) == {("id", 3), ("ood", 4)} and units[("id", 3)] < 0.3


# --------------------------------------------------------------------------- structure probes


class KeyedOracle(Oracle):
    """An oracle whose hidden state is the one-hot of its output plus a code of a pair:
    (a mod 10^n, b mod 10^n) when ``residue`` (its OOD states equal its ID equivalents'), else
    (a, b) itself (every input has its own state)."""

    def __init__(self, task: Arithmetic, fn, residue: bool):
        super().__init__(task, fn)
        self.p = 10**task.cfg.train_len if residue else None

    def code(self, a: int, b: int) -> torch.Tensor:
        if self.p is not None:
            a, b = a % self.p, b % self.p
        return 0.1 * torch.randn(16, generator=torch.Generator().manual_seed(a * 10**9 + b))

    def forward(self, inputs: torch.Tensor, return_hidden: bool = False):
        logits = super().forward(inputs)
        if not return_hidden:
            return logits
        codes = torch.stack(
            [self.code(*self.parse("".join(self.vocab[t] for t in row))[:2]) for row in inputs.tolist()]
        )
        return logits, torch.cat([logits, codes[:, None, :].expand(-1, inputs.shape[1], -1)], 2)


def scores(rows: list[dict]) -> dict[tuple[str, str, int, int], float]:
    return {(r["kind"], r["split"], r["position"], r["length"]): r["value"] for r in rows if r.get("value") is not None}


def test_carry_into_a_digit():
    from study.tasks.arithmetic_numbers import carry_into

    a, b = torch.tensor([57, 999, 0]), torch.tensor([68, 1, 0])
    assert [carry_into(a, b, i, "add").tolist() for i in range(4)] == [[0, 0, 0], [1, 1, 0], [1, 1, 0], [0, 1, 0]]
    # 57 * 68 = 3876: 7*8 = 56 carries 5 into digit 1; 56 + (5*8 + 7*6)*10 = 876 carries 8 into digit 2
    assert [carry_into(a[:1], b[:1], i, "mul").item() for i in range(3)] == [0, 5, 8]


@pytest.mark.parametrize("fields", FORMATS[:4])
def test_probes_read_every_answer_digit_of_an_oracle(fields):
    """The oracle's state at each answer digit is the one-hot of that digit: every probe of the
    digit is exact on ID and OOD inputs, and its states cluster perfectly (so the states were read
    at the right positions in every format)."""
    task = make(**fields, eval_max_len=4, probes={"points": 128, "attention": False})
    rows = [r for r in task.representations(KeyedOracle(task, lambda a, b: a + b, residue=False)) if "value" in r]
    assert {r["layer"] for r in rows} == {-1} and {r["position"] for r in rows} == {0, 1, 2, 3}
    values = scores(rows)
    for i in range(4):
        assert values[("probe_digit", "id", i, 3)] == 1.0
        if i < 3:  # digit 3 of an ID answer is a carry (0 or 1; always 1 where it is written unpadded)
            assert values[("probe_digit", "ood", i, 4)] == 1.0 and values[("silhouette_digit", "id", i, 3)] > 0.5
    assert {k[2] for k in values if k[0] == "probe_carry"} == {1, 2, 3}  # nothing carries into the units
    # the oracle's state at digit 3 is the true carry out of the hundreds, which the 4-digit inputs'
    # equivalents often lack: their states are no nearer than the nearest other-digit ID state
    # (NaN unpadded: a written ID digit 3 is always 1, so no ID state has another digit)
    rate = values[("repr_equivalence", "ood", 3, 4)]
    assert rate < 0.7 if fields.get("pad", True) else math.isnan(rate)


def test_probes_of_an_equivalence_model():
    """A model that answers f(a mod 10^n, b mod 10^n) and whose OOD states equal those of the ID
    equivalents: equivalence rate 1 at every digit; the ID probe reads OOD states as the
    equivalent's digits, which differ from the true ones at digit n = 3."""
    task = make(eval_max_len=5, probes={"points": 128, "attention": False})
    rows = task.representations(KeyedOracle(task, lambda a, b: a % 1000 + b % 1000, residue=True))
    values = scores(rows)
    for L in (4, 5):
        assert values[("repr_equivalence_chance", "ood", 0, L)] < 0.2  # another input's equivalent: its digit 1/10
        for i in range(4):
            assert values[("repr_equivalence", "ood", i, L)] == 1.0
            assert values[("repr_equivalence_digit", "ood", i, L)] == 1.0
            assert values[("probe_digit_equiv", "ood", i, L)] == 1.0
        assert values[("probe_digit", "ood", 3, L)] < 0.5


def test_probe_positions_and_every_follow_the_config():
    task = make(probes={"points": 64, "positions": [1], "every": 1000, "attention": False})
    model = perfect(task)
    assert {r["position"] for r in task.representations(model) if "value" in r} == {1}  # outside training: probed
    assert {r["position"] for r in task.representations(model, step=0) if "value" in r} == {1}
    assert not [r for r in task.representations(model, step=500) if "value" in r]
    assert [r for r in task.representations(model, step=1000) if "value" in r]
    assert not [r for r in make(probes={"enabled": False}).representations(model) if "value" in r]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(digits=1, train_size=60), "task.train_size"),
        (dict(digits=1, train_fraction=0.6), "task.train_fraction"),
        (dict(pad=False, symbols=False), "task.symbols"),
        (dict(op="mul", width=10, digits=3, eval_max_len=10), "task.eval_max_len"),
        (dict(width=20, digits=19, eval_max_len=19), "task.digits"),  # evaluation may go beyond int64
        (dict(op="mul", modulus=2**40), "task.modulus"),
    ],
)
def test_bad_input_names_the_field(fields, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make(**fields)


def test_wide_padding_is_supported():
    task = make(width=20, digits=4, sampling="D", train_size=1000, eval_max_len=9, eval_examples=8)  # 2407.17963
    assert format_example(task, 349, 705) == "349".zfill(20) + "705".zfill(20) + "1054"[::-1].ljust(21, "0")
