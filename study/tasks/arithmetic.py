"""n-digit addition and multiplication as token sequences, and their OOD metrics: the task.

The family's pieces are one module each: the operations (:mod:`study.tasks.operations`),
the config and its limits (:mod:`study.tasks.arithmetic_config`), numbers and digit rows
(:mod:`study.tasks.arithmetic_numbers`), operand sampling (:mod:`study.tasks.arithmetic_sampling`),
the token format (:mod:`study.tasks.arithmetic_format`), position ids
(:mod:`study.tasks.arithmetic_positions`), greedy decoding (:mod:`study.tasks.arithmetic_decoding`)
and the structure probes (:mod:`study.tasks.arithmetic_probes`).

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
    INT64_DIGITS,
    PAD,
    ArithmeticTask,
    answer_digits,
    answer_width,
    check_position_scheme,
    check_supported,
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
from study.tasks.arithmetic_decoding import answer_matches, digit_matches, greedy_decode
from study.tasks.arithmetic_format import Encoded, answer_significance, encode, encode_answer
from study.tasks.arithmetic_numbers import answer_of, apply_op, equivalent_of, num_digits
from study.tasks.arithmetic_positions import offset_ids, position_ids
from study.tasks.arithmetic_probes import (
    FINAL_LAYER,
    AnswerStates,
    ProbeSet,
    pad_places,
    pca_2d,
    probe_inputs,
    probe_layers,
    probe_scores,
)
from study.tasks.arithmetic_sampling import draw_distinct, rows_in, sample_exact, sample_exact_digits, sample_pairs
from study.tasks.base import Batch, ModelIO, as_pack, given
from study.tasks.position_schemes import POSITION_SCHEMES

REPR_POINTS = 256  # probe pairs per split for the units-digit PCA
PROBE_TEST_SHARE = 0.25  # of the ID probe inputs, held out to score the probes
# The random streams of the task seed (one generator each, see Arithmetic._generator); a stream
# is drawn from only for what its name says, so each set stays the same when another changes.
TRAIN_TEST_STREAM = 0  # the fixed training set and the held-out ID test set
EVAL_SET_STREAM = 1  # the evaluation grid's pairs
PCA_PAIR_STREAM = 2  # the pairs of the units-digit PCA
PROBE_SET_STREAM = 3  # the structure probes' inputs
PCA_ID_STREAM = 4  # task-computed position schemes: the ids of the PCA sequences (randomized draws)
EVAL_ID_STREAM = 5  # randomized positions: the fixed ids of the evaluation sequences
PROBE_ID_STREAM = 6  # randomized positions: the ids of the probe sequences


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

    def __init__(
        self,
        cfg: ArithmeticTask,
        seed: int,
        device: torch.device | str = "cpu",
        position_scheme: str | None = None,
        max_position: int = 64,
    ):
        check_supported(cfg)
        if position_scheme is not None:
            check_position_scheme(cfg, position_scheme, max_position)
        self.cfg, self.seed, self.device = cfg, seed, torch.device(device)
        # the scheme whose ids the task computes (its record names the id rule), or None
        self.position_scheme = position_scheme
        self.scheme = POSITION_SCHEMES[position_scheme] if position_scheme is not None else None
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
        train_pairs, test_pairs = self._draw_train_test(self._generator(TRAIN_TEST_STREAM))
        self.conditions, self.eval_pairs = self._draw_eval(self._generator(EVAL_SET_STREAM), train_pairs)
        self.train_pairs = train_pairs.to(self.device) if train_pairs is not None else None
        self.test_pairs = test_pairs.to(self.device)
        self.eval_groups = self._build_eval_groups()
        self.probe_pairs, self.probe_splits = self._draw_probe(self._generator(PCA_PAIR_STREAM))
        self.probe_positions = list(cfg.probes.positions or range(answer_digits(cfg, self.n)))
        self.probe_set = self._draw_probe_set(self._generator(PROBE_SET_STREAM)) if cfg.probes.enabled else None

    # ---- data

    def _generator(self, stream: int) -> torch.Generator:
        """A CPU generator for one of the task seed's streams (the ``*_STREAM`` constants)."""
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
            drawn.append(
                sample_exact(len_a, len_b, 2 * E + 64, g)
                if max(len_a, len_b) <= INT64_DIGITS
                else sample_exact_digits(len_a, len_b, E, g)
            )
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
        cfg = self.cfg
        by_prompt: dict[int, list[int]] = {}
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

    def fixed_positions(
        self, significance: torch.Tensor, prompt_len: torch.Tensor | int, g: torch.Generator
    ) -> torch.Tensor | None:
        """Evaluation ids of the inputs of full sequences (significance [N, L]) -> Long
        [N, L-1]: no offset (randomized: a sorted random subset per example, drawn from
        ``g``); None for the model's own position schemes."""
        if self.position_scheme is None:
            return None
        return position_ids(significance, prompt_len, self.position_scheme, self.max_position, g).to(self.device)

    def eval_positions(
        self, prompt_significance: torch.Tensor, prompt_len: int, k: int, g: torch.Generator
    ) -> torch.Tensor | None:
        """:meth:`fixed_positions` of prompts followed by k answer slots: Long [N, P+k-1]."""
        answer = answer_significance(self.cfg, k, prompt_significance.device).expand(len(prompt_significance), k)
        return self.fixed_positions(torch.cat([prompt_significance, answer], 1), prompt_len, g)

    def train_positions(self, enc: Encoded, generator: torch.Generator) -> torch.Tensor | None:
        """Ids of a training batch's inputs, Long [B, T-1], with the scheme's randomness drawn
        from the training generator (so a restored run draws the same); None for the
        model's own schemes."""
        if self.position_scheme is None:
            return None
        ids = position_ids(enc.significance, enc.prompt_len, self.position_scheme, self.max_position, generator)
        ids = ids.to(self.device)
        assert self.scheme is not None  # set with position_scheme
        return offset_ids(ids, self.max_position, generator) if self.scheme.offset else ids

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
        `step` is not read: the batch depends on the generator alone.
        """
        if self.train_pairs is not None:
            idx = torch.randint(0, len(self.train_pairs), (batch_size,), generator=generator, device=generator.device)
            pairs = self.train_pairs[idx.to(self.device)]
        else:
            pairs = self._sample_mixture(batch_size, generator).to(self.device)
        if self.cfg.random_zero_pad:
            enc = self.zero_padded(pairs, generator)
        else:
            enc = encode(pairs[:, 0], pairs[:, 1], self.cfg, self.n)
        return Batch(
            inputs=enc.tokens[:, :-1],
            targets=enc.tokens[:, 1:],
            mask=enc.answer[:, 1:],
            positions=self.train_positions(enc, generator),
        )

    def zero_padded(self, pairs: torch.Tensor, generator: torch.Generator) -> Encoded:
        """Training sequences of pairs [B, 2] under ``task.random_zero_pad``: each operand
        written with leading zeros up to a width uniform in [its digit count, task.width],
        drawn from the training generator, so that every id up to the width meets the answer
        queries in training; the answer is written as usual.  Columns of pads only are cut."""
        width = self.cfg.width
        assert self.pad_id is not None  # random_zero_pad trains unpadded operands, whose sequences end in PAD
        count = torch.stack([num_digits(pairs[:, 0]), num_digits(pairs[:, 1])], 1)  # [B, 2]
        u = torch.rand(pairs.shape, generator=generator, device=generator.device).to(pairs.device)
        written = count + (u * (width - count + 1)).long().clamp(max=width - count)
        enc = encode(pairs[:, 0], pairs[:, 1], self.cfg, width, written=(written[:, 0], written[:, 1]))
        used = int((enc.tokens != self.pad_id).any(0).nonzero().max()) + 1
        return Encoded(
            tokens=enc.tokens[:, :used],
            answer=enc.answer[:, :used],
            prompt_len=enc.prompt_len,
            significance=enc.significance[:, :used],
        )

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
                for name in ("prompts", "target", "equivalent", "chance", "cond")
            )  # [K, N, ...]
            positions = torch.stack([given(m.positions) for m in members]) if group.positions is not None else None
            cond = cond + C * torch.arange(K, device=dev)[:, None]
            for start in range(0, prompts.shape[1], per_member):
                rows = slice(start, start + per_member)
                # start from the equivalence answer: 1 pass when the model answers it (ID and OOD)
                out = greedy_decode(
                    model,
                    prompts[:, rows],
                    equivalent[:, rows],
                    first.end_id,
                    positions[:, rows] if positions is not None else None,
                )  # [K, n, A]
                t, e = target[:, rows].flatten(0, 1), equivalent[:, rows].flatten(0, 1)
                out = out.flatten(0, 1)  # [K * n, A]: the metrics are per row
                exact = answer_matches(out, t, first.end_id)
                equiv = answer_matches(out, e, first.end_id)
                digits = slice(1, None, 2) if cfg.index_hints else slice(None)  # hints are not digits
                correct, counted = digit_matches(out[:, digits], t[:, digits], cfg.reverse, first.end_id)
                for name, value in (
                    ("n", torch.ones_like(exact)),
                    ("exact", exact),
                    ("equiv", equiv),
                    ("wrong_equiv", equiv & ~exact),
                    ("correct", correct),
                    ("counted", counted),
                    ("chance", chance[:, rows].flatten()),
                ):
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
            member_rows = []
            for (len_a, len_b, split), row in zip(first.conditions, member_table):
                for metric, value in zip(values, row):
                    member_rows.append(
                        {"split": split, "metric": metric, "value": value, "len_a": len_a, "len_b": len_b}
                    )
            out_rows.append(member_rows)
        return out_rows

    @torch.no_grad()
    def representations(self, model: nn.Module, step: int | None = None) -> list[dict[str, Any]]:
        """2-D PCA of the final hidden state at the position that predicts the answer's units digit,
        and the structure probes' rows (:meth:`probe_scores`) when they are due at ``step``.

        Fitted on all probe points (REPR_POINTS ID pairs below 10^n, and as many OOD pairs with
        eval_max_len digits when that is longer than n).  label = the units digit of the answer.
        ``step``: the training step of this evaluation (see :meth:`probes_due`); None: an
        evaluation outside training.
        """
        a, b = self.probe_pairs.unbind(1)
        enc = encode(a, b, self.cfg, self.eval_len)
        c = apply_op(a, b, self.cfg.op, self.cfg.modulus)
        hf = hint_factor(self.cfg)  # tokens per answer digit: (hint letter,) digit
        digits = torch.full_like(c, answer_width(self.cfg, self.eval_len) // hf) if self.cfg.pad else num_digits(c)
        slot = torch.zeros_like(c) if self.cfg.reverse else digits - 1  # the units digit's place in the answer
        units = enc.prompt_len + slot * hf + hf - 1  # its index in the sequence (after its hint)
        ids = self.fixed_positions(enc.significance, enc.prompt_len, self._generator(PCA_ID_STREAM))
        _, hidden = (
            model(enc.tokens[:, :-1], return_hidden=True)
            if ids is None
            else model(enc.tokens[:, :-1], positions=ids, return_hidden=True)
        )  # [N, T-1, d]
        h = hidden[torch.arange(len(a), device=hidden.device), units - 1]  # output units-1 predicts token units
        pcs = pca_2d(h.float().cpu()).tolist()
        labels = (c % 10).tolist()
        rows = []
        for i, (ai, bi, label, split, (pc1, pc2)) in enumerate(
            zip(a.tolist(), b.tolist(), labels, self.probe_splits, pcs)
        ):
            rows.append(
                {
                    "kind": "pca_units_digit",
                    "split": split,
                    "point": i,
                    "label": str(label),
                    "a": ai,
                    "b": bi,
                    "pc1": pc1,
                    "pc2": pc2,
                }
            )
        if self.probes_due(step):
            rows += self.probe_scores(model)
        return rows

    def probes_due(self, step: int | None) -> bool:
        """Whether the structure probes run at an evaluation of training step ``step``: when they
        are on, at every evaluation, or at the multiples of ``task.probes.every`` (None: an
        evaluation outside training, always due)."""
        every = self.cfg.probes.every
        return self.probe_set is not None and (every is None or step is None or step % every == 0)

    def answer_states(
        self, model: nn.Module, pairs: torch.Tensor, layers: str | list[int] = "last", attention: bool = False
    ) -> AnswerStates:
        """Hidden states (and attention) at the positions that predict each probed answer digit.

        pairs Long [N, 2] -> :class:`AnswerStates` for the I = len(probe_positions) digits, the
        true answer fed as the model's input (teacher forcing), in batches of
        ``task.eval_batch_size``.  The state predicting the sequence's token s is the output at
        s - 1.  ``layers`` as ``task.probes.layers`` (see :func:`arithmetic_probes.probe_layers`):
        -1 is the final hidden state, l >= 0 the residual stream after block l.  ``attention``:
        also each block's attention shares from those positions onto the operand digits of each
        significance (see :func:`study.tasks.probes.attention_shares`).
        """
        size = self.cfg.eval_batch_size
        parts = [
            self._answer_states(model, pairs[start : start + size], layers, attention)
            for start in range(0, len(pairs), size)
        ]
        shares = None
        if attention:
            part_shares = [given(p.shares) for p in parts]  # read with attention: every part has them
            width = max(s[0].shape[-1] for s in part_shares)  # the operand places of the longest batch
            shares = [
                np.concatenate([pad_places(s[k], width) for s in part_shares]) for k in range(len(part_shares[0]))
            ]
        return AnswerStates(
            states={layer: torch.cat([p.states[layer] for p in parts]) for layer in parts[0].states},
            present=torch.cat([p.present for p in parts]),
            shares=shares,
        )

    def _answer_states(
        self, model: nn.Module, pairs: torch.Tensor, layers: str | list[int], attention: bool
    ) -> AnswerStates:
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
            by_layer = {
                layer: trace.hidden if layer == FINAL_LAYER else trace.layers[layer]
                for layer in probe_layers(layers, len(trace.layers))
            }
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
                shares.append(
                    attention_shares(rows.float().cpu().numpy(), groups.cpu().numpy(), n_groups, present.cpu().numpy())
                )
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
        cfg = self.cfg
        probe_set = self.probe_set
        assert probe_set is not None, "probe scores with task.probes.enabled only"
        inputs = probe_inputs(probe_set, self.n, cfg.op)
        read = self.answer_states(model, inputs, layers=cfg.probes.layers, attention=cfg.probes.attention)
        return probe_scores(read, probe_set, self.probe_positions, self.n, cfg.op, cfg.modulus)

    # ---- rendering

    def decode(self, tokens: torch.Tensor | list[int]) -> str:
        """Token ids -> the string they spell, e.g. '0034900705450100'."""
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens
        return "".join(self.vocab[i] for i in ids)
