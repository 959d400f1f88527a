"""Greedy decoding of answers and their comparison with the true and equivalence answers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from study.tasks.base import as_pack


def first_index(tokens: torch.Tensor, token_id: int | None) -> torch.Tensor:
    """Long [...]: position of the first `token_id` along the last dimension of tokens [..., K]
    (K when absent)."""
    K = tokens.shape[-1]
    if token_id is None:
        return torch.full_like(tokens[..., 0], K)
    hit = tokens == token_id
    return torch.where(hit.any(-1), hit.to(torch.int8).argmax(-1), K)


@torch.no_grad()
def greedy_decode(
    model: Callable[..., torch.Tensor],
    prompts: torch.Tensor,
    guess: torch.Tensor,
    end_id: int | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
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
        return greedy_decode(
            as_pack(model), prompts[None], guess[None], end_id, positions[None] if positions is not None else None
        )[0]
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


def significance_digits(
    tokens: torch.Tensor, reverse: bool, end_id: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
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


def digit_matches(
    out: torch.Tensor, target: torch.Tensor, reverse: bool, end_id: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-digit agreement of two answers aligned by significance: (correct [N], counted [N]).

    counted = the longer of the two lengths; correct = positions among them where both
    write the same digit.  Padded answers count every one of their K positions.
    """
    pred, pred_len = significance_digits(out, reverse, end_id)
    true, true_len = significance_digits(target, reverse, end_id)
    counted = torch.maximum(pred_len, true_len)
    correct = ((pred == true) & (true >= 0)).sum(1)
    return correct, counted
