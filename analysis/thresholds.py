"""A threshold search's results as frames (issue 25): per cell, the fitted P(success) along
the search axis and each seed's outcome, for the report's "Threshold search" section.

Pure functions of the frames :func:`analysis.load.thresholds` reads.  The model is the
searcher's own (:mod:`study.tune.threshold`: the psi method's posterior over threshold x
slope), fed with the outcomes rebuilt from the store's ``trials`` rows the way a resume
rebuilds the search (:func:`records`), so the curve drawn is the one the searcher fitted
and its threshold and interval are the ones the ``thresholds`` table holds.

Positions along the axis are in *axis units*, as in the table: the axis's own for a
continuous axis (``low``/``high``), the index into ``values`` for an ordered list.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from study.tune.runner import records_from_trials
from study.tune.threshold import (
    CellState,
    Record,
    ThresholdSearch,
    log_posterior,
    make_model,
    normalize,
    p_success,
    rebuild_cells,
)

SEED_AXIS = "train.seed"  # the search assigns the seeds: every trial's grid has it
CURVE_POINTS = 161  # positions the fitted curve is evaluated at, over the axis
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")  # a grid value written as a number
INTEGER = re.compile(r"^[+-]?\d+$")


def records(trials: pd.DataFrame, search: ThresholdSearch) -> list[Record]:
    """Every ended seed of a threshold study, as a resume rebuilds them
    (:func:`study.tune.runner.records_from_trials`)."""
    return records_from_trials(trials, search)


def cell_point(cell: str) -> dict[str, str]:
    """A cell id back into its grid values, as text: ``"model.size=nano|task.digits=3"`` ->
    ``{"model.size": "nano", "task.digits": "3"}``; ``"all"`` (no other grid axis) -> {}.
    ``grid_point_id`` of the result is ``cell`` again."""
    if cell in ("all", ""):
        return {}
    return dict(part.partition("=")[::2] for part in cell.split("|"))


def cell_states(search: ThresholdSearch, table: pd.DataFrame, trials: pd.DataFrame) -> dict[str, CellState]:
    """Cell id -> its search's state (outcomes, trials, errors, points) for every cell of the
    ``thresholds`` table, rebuilt from the raw ``trials`` rows as a resume rebuilds it
    (:func:`~study.tune.threshold.rebuild_cells`)."""
    points = [cell_point(c) for c in table["cell"]]
    states = rebuild_cells(search, points, records(trials, search))
    for cell, stopped in zip(table["cell"], table["stopped"]):
        if cell in states:
            states[cell].stopped = None if stopped == "searching" else stopped
    return states


def curves(search: ThresholdSearch, states: dict[str, CellState], n: int = CURVE_POINTS) -> pd.DataFrame:
    """The fitted P(success) along the axis per cell: the posterior mean over threshold x
    slope of the searcher's psychometric curve, given the cell's outcomes.  Columns: cell,
    position (axis units, ``n`` points from one end of the axis to the other), p_success."""
    model = make_model(search)
    t = np.linspace(search.start, search.start + search.span, n)
    p = p_success(model, np.array([search.to_u(x) for x in t]))  # (n, S, T)
    frames = []
    for cell, state in states.items():
        post = normalize(log_posterior(model, [(search.to_u(x), ok) for x, ok in state.outcomes]))
        frames.append(pd.DataFrame({"cell": cell, "position": t, "p_success": np.einsum("xst,st->x", p, post)}))
    if not frames:
        return pd.DataFrame(columns=["cell", "position", "p_success"])
    return pd.concat(frames, ignore_index=True)


def outcomes(search: ThresholdSearch, trials: pd.DataFrame, cells: list[str] | None = None) -> pd.DataFrame:
    """Each ended seed with an outcome, one row each: cell, value (the axis value it trained
    at), position (axis units), seed, success (bool).  ``cells``: keep these cells only (the
    table's; a cell no longer in the spec is left out, as the searcher leaves it out)."""
    rows = [
        {
            "cell": r.cell,
            "value": r.value,
            "position": search.position(r.value),
            "seed": r.seed,
            "success": bool(r.success),
        }
        for r in records(trials, search)
        if r.success is not None and (cells is None or r.cell in cells)
    ]
    frame = pd.DataFrame(rows, columns=["cell", "value", "position", "seed", "success"])
    return frame.astype({"seed": "Int64"}) if len(frame) else frame


def cell_axes(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The ``thresholds`` table with each cell's grid values as columns (the other axes of
    the grid; numbers where every value of an axis is one), and those axes in grid order:
    ``(frame, axes)``.  For a phase diagram of the threshold against the other axes."""
    points = [cell_point(c) for c in table["cell"]]
    axes = list(dict.fromkeys(k for p in points for k in p))
    frame = table.copy()
    for axis in axes:
        texts = pd.Series([p.get(axis) for p in points], index=frame.index, dtype=object)
        present = texts.dropna()
        if len(present) and present.map(lambda v: bool(INTEGER.match(v))).all():
            frame[axis] = pd.to_numeric(texts).astype("Int64")
        elif len(present) and present.map(lambda v: bool(NUMBER.match(v))).all():
            frame[axis] = pd.to_numeric(texts).astype(float)
        else:
            frame[axis] = texts
    return frame, axes


def axis_ticks(search: ThresholdSearch | None) -> list[str] | None:
    """Tick labels of an ordered list axis (its values, in order); None for a continuous one."""
    if search is None or search.values is None:
        return None
    return [str(v) for v in search.values]
