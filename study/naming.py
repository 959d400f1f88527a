"""Names the service gives things, each rule in one place.

Vocabulary: a *grid point* is one combination of every grid axis, seed axes included;
its id (:func:`grid_point_id`) is what the store's ``cell`` column holds (the column
keeps its first name).  A *cell* is a grid point without its seed axes
(:func:`cell_id`): the unit the analysis reads as a distribution over seeds.

Pure functions of plain values: no torch, no pyarrow, nothing of the service imported.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Protocol


def grid_point_id(point: Mapping[str, Any]) -> str:
    """A short stable name for a grid point: ``model.size=nano|train.seed=0`` (``all`` for no grid)."""
    return "|".join(f"{k}={v}" for k, v in point.items()) or "all"


def summary_metric(split: str, metric: str) -> str:
    """The name of a metric's mean over the conditions of a split: ``id_exact_match``."""
    return f"{split}_{metric}"


def is_seed_axis(axis: str) -> bool:
    """Seed axes (``train.seed``, ``task.seed``, ``x.seeds``) make replicates, not cells."""
    return axis.rsplit(".", 1)[-1] in ("seed", "seeds")


def cell_id(point: Mapping[str, Any]) -> str:
    """The id of the cell a grid point belongs to: its id without the seed axes."""
    return grid_point_id({k: v for k, v in point.items() if not is_seed_axis(k)})


def cell_of_point_id(point_id: str, without: tuple[str, ...] = ()) -> str:
    """:func:`cell_id` read off a grid point id (``task.digits=2|train.seed=0`` ->
    ``task.digits=2``), dropping the axes in ``without`` as well."""
    parts = [(part, part.split("=", 1)[0]) for part in point_id.split("|")]
    kept = [part for part, axis in parts if not is_seed_axis(axis) and axis not in without]
    return "|".join(kept) or "all"


class HasCorners(Protocol):
    """A tuned axis' distribution (``study.config.Distribution``): the values at its edges."""

    def corners(self) -> list[Any]: ...


# A study's trial configs are validated at this many combinations of its tuned values.
MAX_CORNER_SETS = 16


def corner_sets(params: Mapping[str, HasCorners]) -> list[dict[str, Any]]:
    """Combinations of the tuned axes' corner values (tuned axis -> value), the first
    :data:`MAX_CORNER_SETS` of their product in order; ``[{}]`` with no tuned axis."""
    product = itertools.product(*(d.corners() for d in params.values()))
    return [dict(zip(params, combo)) for combo in itertools.islice(product, MAX_CORNER_SETS)]


# The columns of an ``evals`` row that say under which condition it was measured: the split,
# then each family's condition columns (arithmetic: len_a/len_b; in-context: n_context,
# shift, shift_value; a row leaves the others null).
EVAL_CONDITIONS = ("split", "len_a", "len_b", "n_context", "shift", "shift_value")


# The columns of a ``trials`` row its writer fills (``study.store.schema``'s trials table
# less the columns the store adds: study, attempt, cell, written_at).  ``grid`` and
# ``config`` hold JSON text.
TRIALS_FIELDS = (
    "trial_id",
    "grid",
    "config",
    "status",
    "start_time",
    "end_time",
    "node",
    "device",
    "n_params",
    "steps",
    "score",
    "error",
)


def trials_row(**fields: Any) -> dict[str, Any]:
    """A ``trials`` row: every field of :data:`TRIALS_FIELDS`, None where not given; a
    field the table does not have is a ``TypeError`` naming it."""
    unknown = sorted(set(fields) - set(TRIALS_FIELDS))
    if unknown:
        raise TypeError(f"trials_row: {unknown} are not columns of the trials table; use {list(TRIALS_FIELDS)}")
    return {name: fields.get(name) for name in TRIALS_FIELDS}
