"""The arithmetic family's token sequences: ``operand a, [op], operand b, [=], answer``.

The vocabulary holds the ten digits (token id d for digit d) plus only the symbols the
format needs (:func:`study.tasks.arithmetic_config.vocabulary`):

- ``pad=True``: operands zero-padded to ``width`` digits, the answer zero-padded to a
  fixed width (the operation's answer digits of ``width``, or the digit count of ``p-1``
  with a modulus p).  Every sequence has the same length, so symbols are optional.  The
  2308.08268 format (width 5, reversed, no symbols) renders 349+705 as the 16 tokens
  ``00349 00705 450100``.
- ``pad=False``: operands and answer without leading zeros, then an end token ``$``;
  the fields must be separated, so ``symbols=True`` is required (``349+705=4501$``).
  Training batches mixing lengths are right-padded with a pad token ``_``.

``reverse=True`` writes the answer least significant digit first; ``index_hints=True``
puts a hint letter before every digit naming its significance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from study.tasks.arithmetic_config import (
    END,
    HINTS,
    PAD,
    ArithmeticTask,
    answer_width,
    hint_factor,
    prompt_length,
    vocabulary,
)
from study.tasks.arithmetic_numbers import answer_of, as_digits, digit_count
from study.tasks.operations import operation


def with_hints(digits: torch.Tensor, significance: torch.Tensor, cfg: ArithmeticTask) -> torch.Tensor:
    """digits Long [N, w] -> [N, 2w]: each digit preceded by the hint token of its
    significance (Long [w] or [N, w]), e.g. 349 -> c3 b4 a9 (Zhou et al., arXiv 2402.09371)."""
    first_hint = vocabulary(cfg).index(HINTS[0])
    hints = (first_hint + significance).expand_as(digits)
    return torch.stack([hints, digits], dim=-1).flatten(-2)


def compact(tokens: torch.Tensor, keep: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move the kept tokens of each row to the front (in order), fill the tail with pad_id.

    tokens Long [N, L], keep Bool [N, L] -> (tokens Long [N, L], kept Bool [N, L], order Long
    [N, L]), where new column j holds old column order[:, j].
    """
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    kept = keep.gather(1, order)
    return torch.where(kept, tokens.gather(1, order), pad_id), kept, order


def operand_field(
    x: torch.Tensor, w: int, pad: bool, written: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The w-digit field of operands x (Long [N], or digit rows [N, m]), most significant
    first, and which digits are written.

    Returns (tokens Long [N, w], keep Bool [N, w]); unpadded keeps no leading zeros, or,
    given ``written`` (Long [N], each >= the operand's digit count), its low written[i] digits.
    """
    field = as_digits(x, w).flip(-1)
    significance = torch.arange(w - 1, -1, -1, device=x.device)
    if pad:
        return field, torch.ones_like(field, dtype=torch.bool)
    return field, significance < (digit_count(x) if written is None else written)[:, None]


def operand_tokens(
    x: torch.Tensor, cfg: ArithmeticTask, n: int, written: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An operand's field tokens, which are written, and each token's significance (the
    power of 10 of its digit; a hint token carries its digit's), all [N, field_width]."""
    w = cfg.width if cfg.pad else n
    field, keep = operand_field(x, w, cfg.pad, written)
    significance = torch.arange(w - 1, -1, -1, device=x.device).expand_as(field)
    if cfg.index_hints:
        return with_hints(field, significance, cfg), keep.repeat_interleave(2, 1), significance.repeat_interleave(2, 1)
    return field, keep, significance


def answer_significance(cfg: ArithmeticTask, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Long [k]: the significance of each of the k answer slots (reversed: slot j // tokens
    per digit; the end token's slot is one past the last digit).  Depends on the format
    only, never on the answer's value, so a decoded answer of any length gets the same ids."""
    digit_slot = torch.arange(k, device=device) // hint_factor(cfg)
    return digit_slot if cfg.reverse else (k // hint_factor(cfg) - 1 - digit_slot).clamp(min=-1)


def encode_answer(c: torch.Tensor, cfg: ArithmeticTask, k: int) -> torch.Tensor:
    """The k answer tokens for answers c (Long [N], or digit rows [N, m]): Long [N, k].

    Padded: the k-digit zero-padded answer.  Unpadded: its digits, the end token, then pad
    tokens up to k.  Reversed formats write the least significant digit first.
    """
    if cfg.pad:
        digits = as_digits(c, k // hint_factor(cfg))
        digits = digits if cfg.reverse else digits.flip(-1)
        if cfg.index_hints:
            significance = answer_significance(cfg, k, c.device)[1::2]
            return with_hints(digits, significance, cfg)
        return digits
    vocab = vocabulary(cfg)
    digits = as_digits(c, k - 1)
    keep = torch.arange(k - 1, device=c.device) < digit_count(c)[:, None]
    if not cfg.reverse:
        digits, keep = digits.flip(-1), keep.flip(-1)
    end = torch.full_like(digits[:, :1], vocab.index(END))
    tokens, _, _ = compact(
        torch.cat([digits, end], 1), torch.cat([keep, torch.ones_like(keep[:, :1])], 1), vocab.index(PAD)
    )
    return tokens


@dataclass
class Encoded:
    """Full sequences of a batch of pairs.

    tokens:       Long [N, T]  prompt then answer (then pad tokens when unpadded)
    answer:       Bool [N, T]  True at answer tokens (digits, and the end token when unpadded)
    prompt_len:   Long [N]     tokens before the first answer token
    significance: Long [N, T]  the power of 10 of each token's digit (hints: their digit's);
                               every answer slot by :func:`answer_significance`; -1 at
                               symbols (in the prompt) and at pads after the answer
    """

    tokens: torch.Tensor
    answer: torch.Tensor
    prompt_len: torch.Tensor
    significance: torch.Tensor


def encode(
    a: torch.Tensor,
    b: torch.Tensor,
    cfg: ArithmeticTask,
    n: int,
    written: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Encoded:
    """Token sequences for the pairs (a[i], b[i]); T = sequence_length(cfg, n).

    a, b: Long [N] operands, or digit rows Long [N, m], with at most n digits (padded
    formats always use cfg.width).  written: unpadded only, the digits to write of each
    operand (Long [N] each, between its digit count and n; leading zeros fill the rest).
    """
    vocab = vocabulary(cfg)
    N = a.shape[0]
    ones = torch.ones(N, 1, dtype=torch.bool, device=a.device)
    a_tok, a_keep, a_sig = operand_tokens(a, cfg, n, written[0] if written else None)
    b_tok, b_keep, b_sig = operand_tokens(b, cfg, n, written[1] if written else None)
    ans = encode_answer(answer_of(a, b, cfg.op, cfg.modulus), cfg, answer_width(cfg, n))
    ans_keep = ans != vocab.index(PAD) if not cfg.pad else torch.ones_like(ans, dtype=torch.bool)
    ans_sig = torch.full_like(ans, -1)  # set by slot below, after unpadded fields are compacted
    if cfg.symbols:
        op = torch.full((N, 1), vocab.index(operation(cfg.op).symbol), device=a.device)
        eq = torch.full((N, 1), vocab.index("="), device=a.device)
        tokens = torch.cat([a_tok, op, b_tok, eq, ans], 1)
        keep = torch.cat([a_keep, ones, b_keep, ones, ans_keep], 1)
        significance = torch.cat([a_sig, -ones.long(), b_sig, -ones.long(), ans_sig], 1)
    else:
        tokens, keep = torch.cat([a_tok, b_tok, ans], 1), torch.cat([a_keep, b_keep, ans_keep], 1)
        significance = torch.cat([a_sig, b_sig, ans_sig], 1)
    is_answer = torch.cat([torch.zeros_like(keep[:, : keep.shape[1] - ans.shape[1]]), ans_keep], 1)
    prompt_len = prompt_length(cfg, a_keep.sum(1), b_keep.sum(1))
    if not cfg.pad:
        tokens, kept, order = compact(tokens, keep, vocab.index(PAD))
        is_answer = is_answer.gather(1, order) & kept
        significance = torch.where(kept, significance.gather(1, order), -1)
    slot = torch.arange(tokens.shape[1], device=a.device) - prompt_len[:, None]  # index within the answer
    k = ans.shape[1]
    by_slot = answer_significance(cfg, k, a.device)[slot.clamp(min=0, max=k - 1)]
    significance = torch.where(slot >= k, -1, torch.where(slot >= 0, by_slot, significance))  # -1: pad after the answer
    return Encoded(tokens=tokens, answer=is_answer, prompt_len=prompt_len, significance=significance)
