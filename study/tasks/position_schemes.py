"""The position schemes (``model.pos_encoding``): one record per scheme, registered once in
:data:`POSITION_SCHEMES`.

Torch-free: the config validates a scheme from its record before torch is imported; the
model builds its position table and its attention from the record
(:class:`study.model.Transformer`); a task that computes ids numbers its tokens by the
record's id rule (:mod:`study.tasks.arithmetic_positions`).

To add a scheme: one :class:`PositionScheme` entry below.  It may reuse an id rule (as
``coupled_alibi`` reuses ``coupled``); a new id rule is also a function in
``study.tasks.arithmetic_positions.ID_RULES`` and an entry in
``study.tasks.arithmetic_config.ID_RULE_FORMATS``.  ``tests/test_conformance_arithmetic.py``
runs every contract on every entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

INDEX = "index"  # the id rule of the model's own schemes: token t has id t


@dataclass(frozen=True)
class PositionScheme:
    """One way of telling the model where a token is.

    ids:       how ids are assigned: ``index`` (the model numbers the tokens 0..T-1 itself),
               else the name of the task's id rule (``coupled``, ``abacus``, ``randomized``), whose
               ids the task hands over with every batch (``positions [K, B, T]``)
    table:     the table whose row per id is added to the input: ``learned`` (trained; a row per
               token index, or per task id up to ``model.max_position``), ``sinusoidal`` (fixed,
               per index), or None
    attention: what attention does with the ids: ``alibi`` (a per-head penalty on the id
               distance), ``rope`` (queries and keys rotated by their id), or None
    offset:    training ids are shifted by one random offset per sequence, so that every row of
               the id table is trained (evaluation ids are not shifted)
    """

    ids: str
    table: Literal["learned", "sinusoidal"] | None
    attention: Literal["alibi", "rope"] | None
    offset: bool = False

    @property
    def task_ids(self) -> bool:
        """Whether the task computes the ids (else the model uses token indices)."""
        return self.ids != INDEX


# The order is the order ``model.pos_encoding`` lists them in.
POSITION_SCHEMES: dict[str, PositionScheme] = {
    "learned": PositionScheme(ids=INDEX, table="learned", attention=None),
    "sinusoidal": PositionScheme(ids=INDEX, table="sinusoidal", attention=None),  # Vaswani et al., 2017
    "rope": PositionScheme(ids=INDEX, table=None, attention="rope"),  # Su et al., arXiv 2104.09864
    "alibi": PositionScheme(ids=INDEX, table=None, attention="alibi"),  # Press et al., arXiv 2108.12409
    "none": PositionScheme(ids=INDEX, table=None, attention=None),  # NoPE: the causal mask alone
    "coupled": PositionScheme(ids="coupled", table="learned", attention=None, offset=True),  # arXiv 2405.20671
    "abacus": PositionScheme(ids="abacus", table="learned", attention=None, offset=True),  # arXiv 2405.17399
    "randomized": PositionScheme(ids="randomized", table="learned", attention=None),  # Ruoss et al., ACL 2023
    "coupled_alibi": PositionScheme(ids="coupled", table="learned", attention="alibi", offset=True),
    "coupled_rope": PositionScheme(ids="coupled", table="learned", attention="rope", offset=True),
}

# The schemes whose ids the task computes.
TASK_POSITION_SCHEMES: tuple[str, ...] = tuple(name for name, s in POSITION_SCHEMES.items() if s.task_ids)


def position_scheme(name: str) -> PositionScheme:
    """The record of ``name``; an unknown name is a ValueError naming the known ones."""
    try:
        return POSITION_SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown position scheme {name!r}; known: {', '.join(POSITION_SCHEMES)}") from None
