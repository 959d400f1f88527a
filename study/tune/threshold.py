"""Threshold search: per cell, where along one ordered training axis does success begin?

A *threshold search* replaces one grid axis (the *search axis*, e.g. ``task.mix_weight``)
by an adaptive search, once per cell of the remaining grid.  At each proposed axis value
it trains ``seeds_per_point`` seeds; each seed's outcome is a success or a failure of a
criterion (``ood_exact_match >= 0.9``).  Outcomes are random over seeds (often bimodal),
so the answer is a threshold with a credible interval: the axis value at which the
probability of success is ``target``.  (Not to be confused with the *boundary* of the
breakdown tables: the OOD length where one trial's score falls.)

The model: the psi method (Kontsevich & Tyler 1999, "Bayesian adaptive estimation of
psychometric slope and threshold", Vision Research 39:2729), on a grid over threshold x
log-slope, choosing the next point by the minimum expected entropy of the *threshold's
marginal* posterior, the slope being a nuisance parameter (the psi-marginal method, Prins
2013, "The psi-marginal adaptive method", Journal of Vision 13(7):3).  Why this one:

- it answers the question asked: the posterior over the threshold gives the credible
  interval directly, and the stop rule is on that interval;
- it is sequential and cheap (a grid of ~25 x ~600 numbers per cell, recomputed from the
  outcomes each time: no fitting, no state but the outcomes, so save/restore and resume
  from the store are exact);
- it has decades of use where each observation is one noisy yes/no (psychophysics), and
  the lapse rate absorbs the odd seed that fails deep inside the working phase;
- a probit/logistic psychometric curve is the shape the issue asks for; a GP classifier
  (AEPsych) is more flexible but heavier (torch/botorch/gpytorch) and its interval on a
  level set is not available in closed form.  The maintained PyPI implementations
  (``questplus`` 2023.1, ``psignifit`` 4.3, ``aepsych`` 0.8) were considered: the psi
  method is ~60 lines of numpy here, with the binomial update for k seeds per point and
  the marginal entropy that ``questplus`` does not expose, so no dependency is added.

Units: the model works in *normalized* axis units u in [0, 1] (``low`` -> 0, ``high`` -> 1;
for an ordered list of ``values``, index i -> i / (n - 1)).  The spec's ``tolerance`` and
every interval reported are in *axis units*: the axis's own for ``low``/``high``, the
index for ``values`` (a tolerance of 1 = "between two neighbouring values").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Protocol

import numpy as np

from study.naming import grid_point_id
from study.threshold_config import SECTION, SuccessCriterion, ThresholdSearch, position_key  # noqa: F401  (re-exported)

MARGIN = 0.1  # the threshold's prior reaches this share of the range beyond each end
LAPSE = 0.02  # chance of the "wrong" outcome far from the threshold (at most; see lapse_rate)
SLOPES = np.geomspace(2.0, 500.0, 25)  # (S,) slopes in 1/u: 10%-90% widths from ~1.1 down to ~0.009 of the range
MAX_THRESHOLDS = 1201  # points of the threshold grid at most


# ----------------------------------------------------------------------------------------------
# The model (pure functions; normalized units u)


@dataclass(frozen=True)
class Model:
    """The psychometric model's fixed parts: its grid and its shape."""

    theta: np.ndarray  # (T,) candidate thresholds in u, from -MARGIN to 1 + MARGIN
    slope: np.ndarray  # (S,) candidate slopes in 1/u (log-spaced: a flat prior on log-slope)
    target: float  # P(success) at the threshold
    lapse: float  # P(wrong outcome) far from the threshold, both sides
    sign: float  # +1: success likelier as u grows; -1: rarer


def lapse_rate(target: float) -> float:
    """The lapse: LAPSE, smaller where the target is near 0 or 1 (the curve must reach it)."""
    return min(LAPSE, target / 2, (1 - target) / 2)


def make_model(search: ThresholdSearch) -> Model:
    tolerance_u = search.tolerance / search.span
    step = min((1 + 2 * MARGIN) / 200, tolerance_u / 10)  # the grid resolves a tenth of the tolerance
    n = int(min(MAX_THRESHOLDS, math.ceil((1 + 2 * MARGIN) / step) + 1))
    return Model(
        theta=np.linspace(-MARGIN, 1 + MARGIN, n),
        slope=SLOPES,
        target=search.target,
        lapse=lapse_rate(search.target),
        sign=1.0 if search.direction == "increasing" else -1.0,
    )


def p_success(model: Model, u: np.ndarray) -> np.ndarray:
    """P(success | u, theta, slope) = lapse + (1 - 2 lapse) * sigmoid(logit(q) + sign * slope * (u - theta)),
    with q chosen so that P = target exactly at u = theta.  u: (...,) -> (..., S, T)."""
    q = (model.target - model.lapse) / (1 - 2 * model.lapse)
    z = math.log(q / (1 - q)) + model.sign * model.slope[:, None] * (u[..., None, None] - model.theta[None, :])
    return model.lapse + (1 - 2 * model.lapse) / (1 + np.exp(-z))  # (..., S, T)


def log_posterior(model: Model, outcomes: list[tuple[float, bool]]) -> np.ndarray:
    """log P(theta, slope | outcomes) up to a constant, (S, T); flat prior on the grid.
    outcomes: (u, success) for every seed so far, grouped by point for speed."""
    logp = np.zeros((len(model.slope), len(model.theta)))  # (S, T)
    if not outcomes:
        return logp
    points: dict[float, list[int]] = {}
    for at, success in outcomes:
        points.setdefault(at, [0, 0])[0 if success else 1] += 1
    u = np.array(list(points))  # (P,)
    wins, losses = np.array(list(points.values()), dtype=float).T  # (P,), (P,)
    p = p_success(model, u)  # (P, S, T)
    logp += np.einsum("p,pst->st", wins, np.log(p)) + np.einsum("p,pst->st", losses, np.log1p(-p))
    return logp


def normalize(logp: np.ndarray) -> np.ndarray:
    w = np.exp(logp - logp.max())
    return w / w.sum()


def threshold_marginal(posterior: np.ndarray) -> np.ndarray:
    """(S, T) joint -> (T,) the threshold's marginal (the slope summed out)."""
    return posterior.sum(axis=0)


def quantile(theta: np.ndarray, marginal: np.ndarray, p: float) -> float:
    """The p-quantile of a distribution on the grid theta, linear between grid points."""
    cdf = np.cumsum(marginal)
    return float(np.interp(p, cdf, theta))


def credible_interval(model: Model, posterior: np.ndarray, level: float) -> tuple[float, float, float]:
    """(median, low, high) of the threshold in u: the equal-tailed interval at ``level``."""
    m = threshold_marginal(posterior)
    tail = (1 - level) / 2
    return quantile(model.theta, m, 0.5), quantile(model.theta, m, tail), quantile(model.theta, m, 1 - tail)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def expected_entropy(model: Model, posterior: np.ndarray, u: np.ndarray, n: int) -> np.ndarray:
    """E[H(threshold marginal after n seeds at u)] for every candidate u: (C,) -> (C,).

    The n seeds' outcomes are binomial given (theta, slope): for k = 0..n successes,
    P(k | u) = sum_st posterior * C(n,k) p^k (1-p)^(n-k) and the updated marginal is
    sum_s posterior * C(n,k) p^k (1-p)^(n-k) / P(k | u)."""
    p = p_success(model, u)  # (C, S, T)
    out = np.zeros(len(u))
    for k in range(n + 1):
        like = math.comb(n, k) * p**k * (1 - p) ** (n - k)  # (C, S, T)
        joint = (posterior[None] * like).sum(axis=1)  # (C, T): the threshold's marginal, unnormalized
        pk = joint.sum(axis=1)  # (C,) P(k successes | u)
        out += pk * entropy(joint / np.maximum(pk[:, None], 1e-300))
    return out


def next_point(model: Model, posterior: np.ndarray, candidates_u: np.ndarray, n: int) -> int:
    """Index into candidates_u of the point whose n seeds leave the threshold least uncertain
    (ties: the first, i.e. the lowest)."""
    return int(np.argmin(expected_entropy(model, posterior, candidates_u, n)))


# ----------------------------------------------------------------------------------------------
# One cell's state and the stop rule (plain data: pickles, and rebuilds from the store)


class Record(NamedTuple):
    """One finished seed of a threshold search, as the store can give it back for ``resume``:
    its cell id, its axis value (as the trial got it), its seed and its outcome
    (None: the trial failed and says nothing about the axis; see :func:`outcome`)."""

    cell: str
    value: Any
    seed: int | None
    success: bool | None


@dataclass
class CellState:
    """One cell's search: its outcomes so far, the point in flight, whether it stopped."""

    id: str
    point: dict[str, Any]  # the grid values of the other axes
    outcomes: list[tuple[float, bool]] = field(default_factory=list)  # (t in axis units, success), one per seed
    seeds_at: dict[float, int] = field(default_factory=dict)  # t -> seeds handed out there (the next seed's number)
    trials: int = 0  # seeds handed out (the budget counts these), failed ones included
    errors: int = 0  # seeds that failed without an outcome
    points: list[float] = field(default_factory=list)  # distinct positions trained, in order
    pending: dict[str, Any] | None = None  # {"t", "seeds" (to hand out), "open" (handed, not back)}
    stopped: str | None = None  # None (searching), "converged" or "budget"


def cell_summary(search: ThresholdSearch, model: Model, cell: CellState) -> dict[str, float]:
    """The threshold's estimate and interval in axis units."""
    post = normalize(log_posterior(model, [(search.to_u(t), s) for t, s in cell.outcomes]))
    mid, lo, hi = credible_interval(model, post, search.interval)
    return {
        "estimate": search.to_t(mid),
        "low": search.to_t(lo),
        "high": search.to_t(hi),
        "width": (hi - lo) * search.span,
    }


def stop_reason(search: ThresholdSearch, model: Model, cell: CellState) -> str | None:
    """Stop rule, checked when no point is in flight: "converged" once the threshold's interval
    is narrower than the tolerance, "budget" once another point would exceed the budget."""
    if cell.pending is not None:
        return None
    if cell.outcomes and cell_summary(search, model, cell)["width"] < search.tolerance:
        return "converged"
    if cell.trials + search.seeds_per_point > search.budget:
        return "budget"
    return None


def propose(search: ThresholdSearch, model: Model, cell: CellState) -> float:
    """The next axis position (axis units) of a cell: minimum expected threshold entropy."""
    candidates = search.candidates()  # (C,) axis units
    post = normalize(log_posterior(model, [(search.to_u(t), s) for t, s in cell.outcomes]))
    best = next_point(model, post, np.array([search.to_u(t) for t in candidates]), search.seeds_per_point)
    return float(candidates[best])


def outcome(criterion: SuccessCriterion, status: str | None, value: Any) -> bool | None:
    """One seed's outcome from its final report (the searcher and a resume from the store
    both use this rule):

    - a member that *diverged*, or ended with a NaN metric, is a failure: the config does
      not train at that axis value, which is what the search measures;
    - a trial that errored (an exception, a lost node, after Tune's retries), a member the
      scheduler *pruned* or one still *running* has no outcome (None): it says nothing about
      the axis.  It still counts toward the cell's budget; the point may be proposed again.
    - otherwise the criterion decides.
    """
    if status == "diverged":
        return False
    if status in ("failed", "pruned", "running"):
        return None
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return False if math.isnan(number) else criterion.met(number)


def rebuild_cells(
    search: ThresholdSearch, cells: list[dict[str, Any]], records: Iterable[Record] = ()
) -> dict[str, CellState]:
    """Every cell's state from the finished seeds the store holds (nothing retrained)."""
    states = {grid_point_id(point): CellState(id=grid_point_id(point), point=dict(point)) for point in cells}
    for record in records:
        cell = states.get(record.cell)
        if cell is None:
            continue  # a cell no longer in the spec
        t = search.position(record.value)
        seed = record.seed if record.seed is not None else cell.seeds_at.get(t, 0)
        cell.seeds_at[t] = max(cell.seeds_at.get(t, 0), seed + 1)
        if t not in cell.points:
            cell.points.append(t)
        cell.trials += 1
        if record.success is None:
            cell.errors += 1
        else:
            cell.outcomes.append((t, bool(record.success)))
    return states


def bracketing_values(search: ThresholdSearch, low: float, high: float) -> tuple[str, str]:
    """An interval's ends as the store writes them: for an ordered list, the values at or
    just outside the interval (clipped to the list); for a continuous axis, the ends."""
    if search.values is None:
        return f"{low:g}", f"{high:g}"
    last = len(search.values) - 1
    low_i = min(max(math.floor(low + 1e-9), 0), last)
    high_i = min(max(math.ceil(high - 1e-9), 0), last)
    return str(search.values[low_i]), str(search.values[high_i])


def threshold_rows(search: ThresholdSearch, cells: Iterable[CellState]) -> list[dict[str, Any]]:
    """One row per cell for the store's threshold table: the threshold's estimate (posterior
    median) and credible interval in axis units (index units for values, with the values
    that bracket the interval), the target, and what it cost."""
    model = make_model(search)
    rows = []
    for cell in cells:
        s = cell_summary(search, model, cell)
        low_value, high_value = bracketing_values(search, s["low"], s["high"])
        rows.append(
            {
                "cell": cell.id,
                "axis": search.axis,
                "criterion": str(search.success),
                "target": search.target,
                "estimate": s["estimate"],
                "low": s["low"],
                "high": s["high"],
                "level": search.interval,
                "width": s["width"],
                "tolerance": search.tolerance,
                "low_value": low_value,
                "high_value": high_value,
                "in_range": bool(s["high"] >= search.start and s["low"] <= search.start + search.span),
                "trials": cell.trials,
                "outcomes": len(cell.outcomes),
                "successes": sum(1 for _, ok in cell.outcomes if ok),
                "errors": cell.errors,
                "points": len(cell.points),
                "seeds_per_point": search.seeds_per_point,
                "budget": search.budget,
                "stopped": cell.stopped or "searching",  # converged | budget | searching
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------
# The Tune searcher


class TrialBuilder(Protocol):
    """The raw trial config of one seed: ``build(cell_point, axis_value, seed) -> dict``
    (e.g. ``spec.trial_raw({**cell_point, axis: value, "train.seed": seed}, {})``).
    Module-level (picklable): Tune pickles the searcher with the Tuner."""

    def __call__(self, point: dict[str, Any], value: Any, seed: int) -> dict[str, Any]: ...
