"""Position ids the arithmetic task computes for the schemes whose record names a task id rule
(:mod:`study.tasks.position_schemes`): one function per rule in :data:`ID_RULES`, all of the
shape ``(significance [N, L], prompt_len, max_position, generator) -> ids [N, L-1]``, the ids
of the model inputs ``tokens[:, :-1]`` of full sequences.  0 marks a token that gets no id of
its own (no digit; the training offset leaves it at 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from study.tasks.position_schemes import position_scheme


def abacus_ids(
    significance: torch.Tensor,
    prompt_len: torch.Tensor | int,
    max_position: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Abacus (McLeish et al., arXiv 2405.17399): every digit, answer included, gets 1 + its
    offset within its number counted from the units digit; symbols 0."""
    return torch.where(significance >= 0, 1 + significance, 0)[:, :-1]


def coupled_ids(
    significance: torch.Tensor,
    prompt_len: torch.Tensor | int,
    max_position: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Coupled (Cho et al., arXiv 2405.20671, Sec. 4): every token gets the id of its own
    significance, answer digits included, unshifted: 2 + s for a digit worth 10^s, and the
    operator and '=' the id one below the units digit (1, "significance -1").  The token that
    predicts answer digit s is then '=' (s = 0) or answer digit s-1, with id 1 + s: the operand
    digits it sums sit at the next id, 2 + s, where the causal mask hides every answer token;
    the digits of the carry into s sit at its own id.  (Giving that token the id of digit s
    instead would put the already written answer digits on the ids of the operand digits, and a
    head reading an id could not tell them apart.)  Pad tokens after the answer get 0."""
    L = significance.shape[1]
    slot = torch.arange(L, device=significance.device) - torch.as_tensor(prompt_len, device=significance.device).view(
        -1, 1
    )
    symbol = (significance < 0) & (slot < 0)  # the prompt's -1 are its symbols; pads follow the answer
    return torch.where(significance >= 0, 2 + significance, torch.where(symbol, 1, 0))[:, :-1]


def randomized_ids(
    significance: torch.Tensor, prompt_len: torch.Tensor | int, max_position: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Randomized positions: per sequence a sorted random subset of 0..max_position-1, one id
    per input, drawn from ``generator`` (see :func:`random_ids`)."""
    if generator is None:
        raise ValueError("randomized position ids are drawn: pass position_ids a generator")
    N, L = significance.shape
    return random_ids(N, L - 1, max_position, generator)


IdRule = Callable[[torch.Tensor, "torch.Tensor | int", int, "torch.Generator | None"], torch.Tensor]

# id rule (a position scheme's ``ids``) -> the function that numbers the tokens
ID_RULES: dict[str, IdRule] = {"coupled": coupled_ids, "abacus": abacus_ids, "randomized": randomized_ids}


def position_ids(
    significance: torch.Tensor,
    prompt_len: torch.Tensor | int,
    scheme: str,
    max_position: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ids of the model inputs ``tokens[:, :-1]`` under ``scheme``'s id rule: Long [N, L-1] from
    the significance of the full sequence [N, L] (see :class:`study.tasks.arithmetic_format.Encoded`),
    without a training offset.  ``max_position`` and ``generator``: read by the rules that draw
    ids (randomized).  ``coupled_alibi`` and ``coupled_rope`` number their tokens as ``coupled``."""
    rule = position_scheme(scheme).ids
    if rule not in ID_RULES:
        raise ValueError(
            f"position_ids: scheme {scheme!r} numbers the tokens by index in the model; "
            f"the task computes ids for {', '.join(ID_RULES)} and the schemes built on them"
        )
    return ID_RULES[rule](significance, prompt_len, max_position, generator)


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
