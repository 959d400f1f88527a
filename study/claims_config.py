"""The spec's ``expect`` section: claims a study checks against published findings.

A claim names a finding and its source (paper, table or figure), a per-condition metric
read at a condition (split, operand lengths, a shift and its value, k in-context
examples), the cells it applies to, how the seeds of a cell are pooled (their median, or
the share of seeds that satisfy it) and what it is compared with: a published value
with a tolerance, or ``factor`` times the median of another cell::

    expect:
      - finding: the sparse specialist fails on dense prompts
        source: Yadlowsky et al. 2023 (arXiv 2311.00871), Fig. 2
        metric: nmse
        at: {shift: nnz, shift_value: 3, n_context: 6}
        cells: {task.mix_weight: 0.0}
        op: ">="
        than: {task.mix_weight: 1.0}
        factor: 3

Config only: :func:`check_claims_against` refuses a claim no grid point can measure
before Ray starts; the check itself is :mod:`analysis.claims`, a pure function of the
store's frames.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from study.naming import EVAL_CONDITIONS
from study.section import Section

SECTION = "expect"  # the spec's key of this section: messages name fields as expect[i].<field>
# The table a claim reads -> the columns its condition may name: final evaluations
# (``evals``) or the structure probes of the hidden states (``representations``).
CONDITION_COLUMNS = {
    "evals": EVAL_CONDITIONS,
    "representations": ("split", "position", "layer", "head", "length", "shift", "shift_value"),
}
Scalar = str | int | float


class Claim(Section):
    """One published finding as a check on the store's final evaluations."""

    finding: str = Field(..., min_length=1, description="what the finding says, in a few words")
    source: str = Field(..., min_length=1, description="where it is published: paper, table or figure")
    table: Literal["evals", "representations"] = Field(
        "evals",
        description="evals: the final evaluations (metric: exact_match, nmse, ...); representations: "
        "the final structure probes (metric: a probe kind, e.g. probe_digit)",
    )
    metric: str = Field(
        ...,
        description="a per-condition metric (evals) or a probe kind (representations), e.g. "
        "exact_match, equivalence_of_wrong, nmse, probe_digit",
    )
    at: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        description="the condition: eval columns -> a value or a list of values; "
        "a seed's value is the metric's mean over the matching rows",
    )
    cells: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        description="grid axes (no seed) -> value(s): the cells the claim applies to; empty: every cell",
    )
    pool: Literal["median", "share"] = Field(
        "median",
        description="median: the median over seeds is compared; share: the share of seeds that satisfy "
        "the comparison must reach `share`",
    )
    op: Literal[">=", "<="] = Field(..., description=">= or <=")
    value: float | None = Field(None, description="the published value (or bound) compared with")
    tolerance: float = Field(0.0, ge=0.0, description="slack on value: the paper's spread, or stated as ours")
    share: float = Field(1.0, description="pool: share: the share of seeds that must satisfy the comparison")
    than: dict[str, Scalar] | None = Field(
        None, description="another cell (grid axes -> value): compare with factor x its median instead of value"
    )
    than_metric: str | None = Field(
        None,
        description="another metric of the same cell and condition, e.g. chance: compare with factor x its "
        "value, seed by seed (the median with the median of the seeds' values)",
    )
    factor: float = Field(1.0, description="with than or than_metric: the multiple of the reference")

    @field_validator("value", "tolerance", "factor")
    @classmethod
    def _finite(cls, number: float | None, info) -> float | None:
        if number is not None and not math.isfinite(number):
            raise ValueError(f"{info.field_name} must be a finite number")
        return number

    @model_validator(mode="after")
    def _check(self) -> "Claim":
        columns = CONDITION_COLUMNS[self.table]
        for key, wanted in self.at.items():
            if key not in columns:
                raise ValueError(
                    f"at.{key}: not a condition of table {self.table}; a condition names its columns, "
                    f"one of {', '.join(columns)}"
                )
            if isinstance(wanted, list) and not wanted:
                raise ValueError(f"at.{key} is an empty list; give a value or remove it")
        if sum(x is not None for x in (self.value, self.than, self.than_metric)) != 1:
            raise ValueError(
                "give one of value (a published value), than (another cell, with factor) or than_metric (another "
                "metric of the same cell, e.g. chance)"
            )
        if self.than is not None and not self.than:
            raise ValueError("than is empty; name the other cell's grid values, e.g. than: {task.mix_weight: 1.0}")
        if self.value is None and not self.factor > 0:
            raise ValueError(f"factor={self.factor:g} must be positive, e.g. 3 (three times the reference)")
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"share={self.share:g} is not a share of seeds in (0, 1]; write e.g. 0.75")
        if self.pool == "median" and self.share != 1.0:
            raise ValueError("share applies to pool: share only; set pool: share or drop share")
        return self

    def bound(self, reference: float | None) -> float:
        """The number a seed's (or the median's) value is compared with: ``value``, or ``factor``
        times the ``reference`` (the other cell's median, or the reference metric's value),
        widened by the tolerance."""
        slack = self.tolerance if self.op == "<=" else -self.tolerance
        if self.value is not None:
            return self.value + slack
        return self.factor * (reference if reference is not None else math.nan) + slack

    def holds(self, measured: float, bound: float) -> bool:
        return measured >= bound if self.op == ">=" else measured <= bound

    def published(self) -> str:
        """The comparison as text: ``>= 0.9 (tolerance 0.05)`` or ``>= 3x task.mix_weight=1``."""
        slack = f" (tolerance {self.tolerance:g})" if self.tolerance else ""
        if self.than is not None:
            other = "|".join(f"{k}={v}" for k, v in self.than.items())
            return f"{self.op} {self.factor:g}x {other}{slack}"
        if self.than_metric is not None:
            return f"{self.op} {self.factor:g}x {self.than_metric}{slack}"
        return f"{self.op} {self.value:g}{slack}"

    def condition(self) -> str:
        """The condition as text: ``split=ood, len_a=6`` (``all conditions`` when empty)."""
        return ", ".join(f"{k}={v}" for k, v in self.at.items()) or "all conditions"


def as_list(wanted: Any) -> list[Any]:
    return list(wanted) if isinstance(wanted, list) else [wanted]


def same_value(a: Any, b: Any) -> bool:
    """A spec value and a grid/eval value name the same thing: 3 == 3.0 == "3", "nano" == "nano"."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def matches(values: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Does a row (``values``: key -> value) satisfy every ``key: value(s)`` of ``wanted``?"""
    return all(key in values and any(same_value(values[key], w) for w in as_list(v)) for key, v in wanted.items())


def check_claims_against(
    claims: list[Claim], grid: dict[str, list[Any]], seed_axes: set[str], points: list[tuple[dict[str, Any], Any]]
) -> None:
    """Refuse a claim this study cannot measure, before anything runs: a cell (or ``than``
    cell) the grid does not hold, a metric the study's family does not report, a
    condition no grid point of its cells evaluates.  ``points``: (grid point, its task
    config) for every grid point; a task config lists its evaluation conditions
    (``evaluated_conditions()``: dicts of the ``evals`` columns of :data:`CONDITION_COLUMNS`)
    and the structure probes it scores (``structure_kinds()``).  Raises ValueError
    naming ``expect[i].<field>`` and the fix."""
    from study.tasks import family

    cell_axes = [axis for axis in grid if axis not in seed_axes]
    for i, claim in enumerate(claims):
        where = f"{SECTION}[{i}]"
        for field, named in (("cells", claim.cells), ("than", claim.than or {})):
            for axis, values in named.items():
                if axis not in cell_axes:
                    known = ", ".join(cell_axes) or "none: this study's grid has no axis but seeds"
                    raise ValueError(
                        f"{where}.{field}.{axis}: not a grid axis of this study (cell axes: {known}); "
                        "name cells by their grid values"
                    )
                missing = [v for v in as_list(values) if not any(same_value(v, g) for g in grid[axis])]
                if missing:
                    raise ValueError(
                        f"{where}.{field}.{axis}={missing[0]!r} is not a value of grid.{axis} "
                        f"{grid[axis]}; use one of them"
                    )
        mine = [(point, task) for point, task in points if matches(point, claim.cells)]
        families = {task.family for _, task in mine}
        metrics = {"metric": claim.metric, "than_metric": claim.than_metric}
        metric_names = {key: name for key, name in metrics.items() if name is not None}
        if claim.table == "representations":
            kinds = set().union(*(task.structure_kinds() for _, task in mine))
            for key, name in metric_names.items():
                if name not in kinds:
                    raise ValueError(
                        f"{where}.{key}={name!r} is not a structure probe of the trials of its "
                        f"cells; use one of {sorted(kinds) or 'none: their probes are off'}"
                    )
            continue  # probe conditions (layer, position, length) are read as stored
        reported = set().union(*(family(f).metrics for f in families)) if families else set()
        for key, name in metric_names.items():
            if name in reported:
                continue
            split, _, base = name.partition("_")
            hint = (
                f"a claim reads per-condition metrics: write {key}: {base} with at: {{split: {split}}}"
                if split in ("id", "ood") and base in reported
                else f"use one of {sorted(reported)}"
            )
            raise ValueError(
                f"{where}.{key}={name!r} is not reported by the {'/'.join(sorted(families))} "
                f"trials of its cells; {hint}"
            )
        if not any(any(matches(row, claim.at) for row in task.evaluated_conditions()) for _, task in mine):
            point, task = mine[0]
            rows = task.evaluated_conditions()
            for key, wanted in claim.at.items():
                seen = sorted({row[key] for row in rows if key in row}, key=str)
                if not any(matches(row, {key: wanted}) for row in rows):
                    shown = ", ".join(str(v) for v in seen[:12]) + (" ..." if len(seen) > 12 else "")
                    raise ValueError(
                        f"{where}.at.{key}={wanted!r}: no grid point of its cells evaluates it "
                        f"({'|'.join(f'{k}={v}' for k, v in point.items()) or 'the base config'} "
                        f"evaluates {key} in {shown or 'none'}); change at, or the task's evaluation"
                    )
            raise ValueError(
                f"{where}.at={claim.at}: no grid point of its cells evaluates this combination; "
                "change at, or the task's evaluation"
            )
