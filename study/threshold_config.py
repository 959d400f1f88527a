"""The spec's ``threshold`` section: one ordered training axis searched for the value at
which a per-trial success criterion holds with a given probability (see
:mod:`study.tune.threshold` for the search itself).  Config only: read by
:mod:`study.config` without importing the search."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from study.section import Section

SECTION = "threshold"  # the spec's key of this section: messages name fields as threshold.<field>
MAX_CANDIDATES = 401  # axis values the next point is chosen from, at most


# ----------------------------------------------------------------------------------------------
# The spec section


class SuccessCriterion(Section):
    """One trial's success: a summary metric (as trials report it) compared to a value."""

    metric: str = Field(..., description="a summary metric, e.g. id_exact_match, ood_exact_match, id_nmse")
    op: Literal[">=", "<="] = Field(..., description=">= for higher-is-better metrics, <= for errors")
    value: float

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"{SECTION}.success.value must be a finite number; write e.g. 0.9")
        return value

    def met(self, value: float) -> bool:
        return value >= self.value if self.op == ">=" else value <= self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class ThresholdSearch(Section):
    """The spec's ``threshold`` section: which axis, what success is, when to stop."""

    axis: str = Field(..., description="a dotted trial config key, e.g. task.mix_weight, train.steps, model.size")
    low: float | None = Field(None, description="lower end of a continuous axis")
    high: float | None = Field(None, description="upper end of a continuous axis")
    integer: bool = Field(False, description="propose whole numbers only (train.steps, model.d_model)")
    values: list[Any] | None = Field(None, description="an ordered axis: its values in order (task.digits, model.size)")
    direction: Literal["increasing", "decreasing"] = Field(
        "increasing", description="increasing: success becomes likelier along the axis; decreasing: rarer"
    )
    success: SuccessCriterion
    target: float = Field(0.5, description="probability of success at the threshold")
    seeds_per_point: int = Field(
        4, ge=1, description="seeds trained at every proposed point (one pack where packs apply)"
    )
    tolerance: float = Field(
        ..., description="stop a cell once the threshold's interval is narrower (axis units; index units for values)"
    )
    budget: int = Field(..., ge=1, description="most trials (seeds) per cell")
    interval: float = Field(0.9, description="credible level of the threshold's interval")

    @field_validator("axis")
    @classmethod
    def _axis(cls, axis: str) -> str:
        parts = axis.split(".")
        if len(parts) < 2 or not all(parts):
            raise ValueError(
                f"{SECTION}.axis={axis!r} is not a dotted config key; write e.g. task.mix_weight or model.d_model"
            )
        if axis == "train.seed":
            raise ValueError(
                f"{SECTION}.axis=train.seed: seeds are the replicates of every point, not an ordered "
                "axis; search another axis and set seeds_per_point"
            )
        return axis

    @field_validator("target", "interval")
    @classmethod
    def _probability(cls, p: float, info) -> float:
        if not 0.0 < p < 1.0:
            hint = "e.g. 0.5" if info.field_name == "target" else "e.g. 0.9"
            raise ValueError(
                f"{SECTION}.{info.field_name}={p} is not a probability strictly between 0 and 1; write {hint}"
            )
        return p

    @model_validator(mode="after")
    def _check(self) -> "ThresholdSearch":
        t = SECTION
        bounds = self.low is not None or self.high is not None
        if bounds == (self.values is not None):
            raise ValueError(
                f"{t}: give either low and high (a continuous axis) or values (an ordered list), "
                "not both and not neither"
            )
        if self.values is not None:
            if len(self.values) < 2:
                raise ValueError(f"{t}.values has {len(self.values)} value; give at least two, in order")
            if any(isinstance(v, (dict, list)) for v in self.values):
                raise ValueError(f"{t}.values must be plain values (numbers or names); write e.g. [nano, micro, mini]")
            if len({repr(v) for v in self.values}) < len(self.values):
                raise ValueError(f"{t}.values repeats a value; list each value once, in order")
            numbers = [v for v in self.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(numbers) == len(self.values) and numbers != sorted(numbers):
                raise ValueError(f"{t}.values {self.values} are numbers out of order; list them ascending")
            if self.integer:
                raise ValueError(f"{t}.integer applies to low/high only; remove it (values are proposed as given)")
            if self.tolerance < 1:
                raise ValueError(
                    f"{t}.tolerance={self.tolerance} is below one step of the values (tolerance is in "
                    "index units for values, and no interval is narrower than one step); use at least 1"
                )
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{t}: a continuous axis needs both low and high; add the missing one")
            if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
                raise ValueError(f"{t}.low={self.low} must be below {t}.high={self.high}; swap or fix them")
            if self.integer and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError(f"{t}.integer: low={self.low} and high={self.high} must be whole numbers; round them")
            if self.integer and self.high - self.low < 2:
                raise ValueError(
                    f"{t}: an integer axis from {self.low:g} to {self.high:g} has no point between its "
                    "ends; widen it or use values"
                )
        if not (math.isfinite(self.tolerance) and self.tolerance > 0):
            raise ValueError(
                f"{t}.tolerance={self.tolerance} must be a positive width; write e.g. a tenth of the range"
            )
        if self.tolerance >= self.span:
            raise ValueError(
                f"{t}.tolerance={self.tolerance:g} is not narrower than the axis ({self.span:g} "
                f"{'steps' if self.values is not None else 'wide'}), so nothing would be searched; "
                "lower it"
            )
        if self.budget < self.seeds_per_point:
            raise ValueError(
                f"{t}.budget={self.budget} is below {t}.seeds_per_point={self.seeds_per_point}: not "
                f"one point could be trained; raise budget to at least {self.seeds_per_point} "
                "(a few times it, to let the interval narrow)"
            )
        return self

    # -- the axis, in the three units: value (what a trial gets), t (axis units), u (normalized)

    def _ends(self) -> tuple[float, float]:
        """low and high of a continuous axis (the validator has made sure both are given)."""
        assert self.low is not None and self.high is not None, "a continuous axis without low or high"
        return float(self.low), float(self.high)

    @property
    def span(self) -> float:
        """The axis's width in axis units (index units for values)."""
        if self.values is not None:
            return float(len(self.values) - 1)
        low, high = self._ends()
        return high - low

    @property
    def start(self) -> float:
        return 0.0 if self.values is not None else self._ends()[0]

    def to_u(self, t: float) -> float:
        return (t - self.start) / self.span

    def to_t(self, u: float) -> float:
        return self.start + u * self.span

    def position(self, value: Any) -> float:
        """A trial's axis value -> axis units (its index for values)."""
        if self.values is not None:
            for i, v in enumerate(self.values):
                if v == value or repr(v) == repr(value):
                    return float(i)
            raise KeyError(f"{value!r} is not one of {SECTION}.values")
        return position_key(float(value))

    def value_at(self, t: float) -> Any:
        """Axis units -> the value a trial is given (a list entry, an int or a float)."""
        if self.values is not None:
            return self.values[int(round(t))]
        return int(round(t)) if self.integer else position_key(t)

    def axis_ends(self) -> list[Any]:
        """The values a trial may get at the axis's ends (every value of an ordered list)."""
        if self.values is not None:
            return list(self.values)
        return [self.value_at(self.start), self.value_at(self.start + self.span)]

    def candidates(self) -> np.ndarray:
        """(C,) the axis positions (axis units) the next point is chosen from."""
        if self.values is not None:
            return np.arange(len(self.values), dtype=float)
        n = int(min(MAX_CANDIDATES, max(101, math.ceil(4 * self.span / self.tolerance) + 1)))
        t = np.linspace(self.start, self.start + self.span, n)
        if self.integer:
            t = np.unique(np.round(t))
        return np.array([position_key(x) for x in t])


def position_key(t: float) -> float:
    """An axis position rounded to 12 significant digits: the same key whether it comes
    from a proposal or back from a stored trial config."""
    return float(f"{t:.12g}")
