"""The arithmetic family's structure probes: what the hidden states at the answer digits hold.

The task reads the states (:meth:`study.tasks.arithmetic.Arithmetic.answer_states`); the
functions here score them (pure functions of the states, the probe inputs and the config's
operation).  The scorers themselves (linear probes, silhouettes, equivalence rates,
attention shares) are :mod:`study.tasks.probes`, imported on first use (scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from study.tasks.arithmetic_numbers import apply_op, carry_into, equivalent_of
from study.tasks.operations import operation

FINAL_LAYER = -1  # the ``layer`` of the final hidden state (after the last block and norm)


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


@dataclass
class Parts:
    """One quantity over the probe inputs (see :func:`probe_inputs`), split into the ID inputs,
    the OOD inputs of each length and those inputs' ID equivalents."""

    id: Any
    ood: list[Any]
    equivalent: list[Any]


def probe_layers(layers: str | list[int], n_layer: int) -> list[int]:
    """The layers a ``task.probes.layers`` value names for a model of ``n_layer`` blocks: -1
    (the final state) for "last", every block's output 0..n_layer-1 and -1 for "all", else
    the list (without repeats)."""
    if layers == "last":
        return [FINAL_LAYER]
    if layers == "all":
        return list(range(n_layer)) + [FINAL_LAYER]
    assert not isinstance(layers, str), f"task.probes.layers={layers!r}: last, all or a list of layers"
    return list(dict.fromkeys(layers))


def pad_places(shares: np.ndarray, width: int) -> np.ndarray:
    """Attention shares Float [N, H, I, S] widened to ``width`` operand places, NaN where a
    shorter batch has no such place: Float [N, H, I, width]."""
    return np.pad(shares, [(0, 0)] * 3 + [(0, width - shares.shape[-1])], constant_values=np.nan)


def probe_inputs(probe_set: ProbeSet, n: int, op: str) -> torch.Tensor:
    """Long [P + 2 Q, 2]: the ID pairs, the OOD pairs of each length, then each OOD pair's
    equivalent (the operation's ``equivalent`` operands, (a mod 10^n, b mod 10^n))."""
    ood = list(probe_set.ood_pairs.values())
    equivalents = [torch.stack(operation(op).equivalent(p[:, 0], p[:, 1], n), 1) for p in ood]
    return torch.cat([probe_set.id_pairs, *ood, *equivalents])


def input_sizes(probe_set: ProbeSet) -> list[int]:
    """How many of :func:`probe_inputs` each part holds: ID, OOD of each length, their equivalents."""
    ood = [len(p) for p in probe_set.ood_pairs.values()]
    return [len(probe_set.id_pairs)] + ood + ood


def split_parts(x: torch.Tensor, sizes: list[int]) -> Parts:
    """x over :func:`probe_inputs` (first dimension) as its :class:`Parts`."""
    split = x.split(sizes)
    n_lengths = (len(sizes) - 1) // 2
    return Parts(id=split[0], ood=list(split[1 : 1 + n_lengths]), equivalent=list(split[1 + n_lengths :]))


def answer_digit(
    pairs: torch.Tensor, i: int, n: int, op: str, modulus: int | None, equivalent: bool = False
) -> np.ndarray:
    """Digit i of f(a, b) [mod p] of pairs Long [N, 2], or of the equivalence answer: Long [N] (numpy)."""
    a, b = pairs.unbind(1)
    c = equivalent_of(a, b, n, op, modulus) if equivalent else apply_op(a, b, op, modulus)
    return ((c // 10**i) % 10).numpy()


def carry_digit(pairs: torch.Tensor, i: int, op: str) -> np.ndarray:
    """The carry into answer digit i of f(a, b) of pairs Long [N, 2]: Long [N] (numpy)."""
    return carry_into(pairs[:, 0], pairs[:, 1], i, op).numpy()


def probe_labels(kind: str, pairs: torch.Tensor, i: int, n: int, op: str, modulus: int | None) -> np.ndarray:
    """What a linear probe of ``kind`` is fitted to: digit i of the answer (probe_digit) or the
    carry into it (probe_carry)."""
    return answer_digit(pairs, i, n, op, modulus) if kind == "probe_digit" else carry_digit(pairs, i, op)


def score_row(
    kind: str, split: str, i: int, length: int, value: float, layer: int, head: int | None = None
) -> dict[str, Any]:
    """One row of the representations table."""
    row = {"kind": kind, "split": split, "position": i, "layer": layer, "length": length, "value": value}
    if head is not None:
        row["head"] = head
    return row


@dataclass
class DigitStates:
    """The states of one layer at one probed answer digit i (numpy, the digit present only).

    id:   Float [P, d] the ID states (all of them; ``keep`` marks where the digit is present)
    keep: Bool [P]     the ID inputs whose answer has digit i
    fit, held: index arrays of the present ID states that fit the probes and that test them
    ood:  per OOD length, Float [Q', d] the states of the inputs whose answer has digit i
    ood_pairs: per OOD length, Long [Q', 2] those inputs
    """

    id: np.ndarray
    keep: np.ndarray
    fit: np.ndarray
    held: np.ndarray
    ood: list[np.ndarray]
    ood_pairs: list[torch.Tensor]


def digit_states(states: Parts, present: Parts, pairs: Parts, probe_set: ProbeSet, col: int) -> DigitStates:
    """The :class:`DigitStates` of column ``col`` (the probed digit's index) of one layer's states."""
    keep = present.id[:, col].numpy()
    return DigitStates(
        id=states.id[:, col].numpy(),
        keep=keep,
        fit=probe_set.train[keep[probe_set.train]],
        held=probe_set.test[keep[probe_set.test]],
        ood=[s[:, col].numpy()[m[:, col].numpy()] for s, m in zip(states.ood, present.ood)],
        ood_pairs=[p[m[:, col]] for p, m in zip(pairs.ood, present.ood)],
    )


def linear_probe_rows(
    d: DigitStates, id_pairs: torch.Tensor, i: int, layer: int, lengths: list[int], n: int, op: str, modulus: int | None
) -> list[dict[str, Any]]:
    """probe_digit (ID held out, OOD per length), probe_digit_equiv (OOD per length, against the
    equivalence answer) and, without a modulus above the units, probe_carry."""
    from study.tasks import probes

    rows = []
    targets = ["probe_digit"] + (["probe_carry"] if modulus is None and i >= 1 else [])
    for kind in targets:
        y = probe_labels(kind, id_pairs, i, n, op, modulus)
        tests = [(d.id[d.held], y[d.held])] + [
            (hs, probe_labels(kind, p, i, n, op, modulus)) for hs, p in zip(d.ood, d.ood_pairs)
        ]
        if kind == "probe_digit":
            tests += [(hs, answer_digit(p, i, n, op, modulus, equivalent=True)) for hs, p in zip(d.ood, d.ood_pairs)]
        scores = probes.probe_accuracy(d.id[d.fit], y[d.fit], tests)
        rows.append(score_row(kind, "id", i, n, scores[0], layer))
        rows += [score_row(kind, "ood", i, L, value, layer) for L, value in zip(lengths, scores[1 : 1 + len(lengths)])]
        rows += [
            score_row("probe_digit_equiv", "ood", i, L, value, layer)
            for L, value in zip(lengths, scores[1 + len(lengths) :])
        ]
    return rows


def silhouette_rows(
    d: DigitStates, id_digit: np.ndarray, i: int, layer: int, lengths: list[int], n: int, op: str, modulus: int | None
) -> list[dict[str, Any]]:
    """silhouette_digit of the ID states and of the OOD states of each length, grouped by digit i."""
    from study.tasks import probes

    rows = [score_row("silhouette_digit", "id", i, n, probes.cluster_score(d.id[d.keep], id_digit[d.keep]), layer)]
    for L, hs, p in zip(lengths, d.ood, d.ood_pairs):
        rows.append(
            score_row(
                "silhouette_digit", "ood", i, L, probes.cluster_score(hs, answer_digit(p, i, n, op, modulus)), layer
            )
        )
    return rows


def equivalence_rows(
    d: DigitStates,
    id_digit: np.ndarray,
    states: Parts,
    present: Parts,
    pairs: Parts,
    col: int,
    i: int,
    layer: int,
    lengths: list[int],
    n: int,
    op: str,
    modulus: int | None,
) -> list[dict[str, Any]]:
    """repr_equivalence, repr_equivalence_chance and repr_equivalence_digit of each OOD length."""
    from study.tasks import probes

    rows = []
    for L, s, m, p, es, em in zip(lengths, states.ood, present.ood, pairs.ood, states.equivalent, present.equivalent):
        both = (m[:, col] & em[:, col]).numpy()
        x, e = s[:, col].numpy()[both], es[:, col].numpy()[both]
        e_digit = answer_digit(p[both], i, n, op, modulus, equivalent=True)
        eq_keep = em[:, col].numpy()
        reference = np.concatenate([d.id[d.keep], es[:, col].numpy()[eq_keep]])
        reference_digit = np.concatenate(
            [id_digit[d.keep], answer_digit(p[eq_keep], i, n, op, modulus, equivalent=True)]
        )
        rows.append(
            score_row(
                "repr_equivalence",
                "ood",
                i,
                L,
                probes.equivalence_rate(x, e, e_digit, reference, reference_digit),
                layer,
            )
        )
        shift = np.roll(np.arange(len(x)), 1)  # each OOD state against another input's equivalent
        rows.append(
            score_row(
                "repr_equivalence_chance",
                "ood",
                i,
                L,
                probes.equivalence_rate(x, e[shift], e_digit[shift], reference, reference_digit),
                layer,
            )
        )
        rows.append(
            score_row(
                "repr_equivalence_digit",
                "ood",
                i,
                L,
                probes.nearest_label_rate(x, e_digit, d.id[d.keep], id_digit[d.keep]),
                layer,
            )
        )
    return rows


def attention_rows(
    shares: list[np.ndarray], sizes: list[int], lengths: list[int], n: int, positions: list[int]
) -> list[dict[str, Any]]:
    """attention_alignment and attention_argmax per block, head and probed digit, on the ID
    inputs (split id) and the OOD inputs of each length (split ood)."""
    from study.tasks import probes

    rows = []
    share_splits = [("id", n, 0)] + [("ood", L, 1 + k) for k, L in enumerate(lengths)]
    for layer, layer_shares in enumerate(shares):
        pieces = np.split(layer_shares, np.cumsum(sizes)[:-1])
        for split, L, part in share_splits:
            aligned = probes.alignment_scores(pieces[part], positions)  # [H, I]
            argmax = probes.most_attended(pieces[part])  # [H, I]
            for head in range(aligned.shape[0]):
                for col, i in enumerate(positions):
                    rows.append(score_row("attention_alignment", split, i, L, float(aligned[head, col]), layer, head))
                    rows.append(score_row("attention_argmax", split, i, L, float(argmax[head, col]), layer, head))
    return rows


def probe_scores(
    read: AnswerStates, probe_set: ProbeSet, positions: list[int], n: int, op: str, modulus: int | None
) -> list[dict[str, Any]]:
    """The rows of :meth:`study.tasks.arithmetic.Arithmetic.probe_scores` from the states it read
    on :func:`probe_inputs` (see there for what each kind measures): per layer and probed digit
    the linear probes, the silhouettes and the equivalence rates, then the attention rows."""
    lengths = list(probe_set.ood_pairs)
    sizes = input_sizes(probe_set)
    pairs = split_parts(probe_inputs(probe_set, n, op).cpu(), sizes)
    present = split_parts(read.present, sizes)
    rows: list[dict[str, Any]] = []
    for layer, layer_states in read.states.items():
        states = split_parts(layer_states, sizes)
        for col, i in enumerate(positions):
            d = digit_states(states, present, pairs, probe_set, col)
            id_digit = answer_digit(pairs.id, i, n, op, modulus)
            rows += linear_probe_rows(d, pairs.id, i, layer, lengths, n, op, modulus)
            rows += silhouette_rows(d, id_digit, i, layer, lengths, n, op, modulus)
            rows += equivalence_rows(d, id_digit, states, present, pairs, col, i, layer, lengths, n, op, modulus)
    if read.shares is not None:
        rows += attention_rows(read.shares, sizes, lengths, n, positions)
    return rows


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
