"""In-context regression: learning a function from the prompt alone.

Following Garg, Tsipras, Liang, Valiant (2022, arXiv 2208.01066) and Yadlowsky, Doshi,
Tripuraneni (2023, arXiv 2311.00871).  A prompt holds n points (x_i, y_i) with
x_i ~ N(0, I_d) (times an input scale, 1 in training) and y_i = f(x_i) (+ optional
noise), f drawn fresh for every prompt from a function class.

Sequence layout.  The model reads 2n vectors of size d, pairs interleaved,

    position:  0    1                  2    3                  ...  2n-2     2n-1
    token:     x_0  (y_0, 0, ..., 0)   x_1  (y_1, 0, ..., 0)   ...  x_{n-1}  (y_{n-1}, 0, ..., 0)

and the first output coordinate at position 2i (the token x_i) is its prediction of y_i
from the i earlier pairs: k = i in-context examples.  The training loss is the mean
squared error over all x positions.

Function classes (each scaled so that E[y^2] is of order d, as in Garg et al.); each is
one record of ``functions_config.FUNCTION_CLASSES``, which names its sampler and its E[y^2]
below (same name, and ``<name>_mean_square``):

    linear         y = x . w,  w ~ N(0, I_d)                               E[y^2] = d
    sparse_linear  as linear, but only nnz coordinates of w (at random
                   positions) are non-zero; with sparse_values "sign" the
                   non-zero ones are +1 or -1 instead of N(0, 1)           E[y^2] = nnz
    sine           y = sqrt(d) sin(freq * x . w / sqrt(d)),  w ~ N(0, I_d),
                   freq ~ U(freq_range).  x . w / sqrt(d) is about N(0, 1), so freq
                   is radians per standard deviation of the projection; for small
                   freq, sine ~ freq * linear.  E[y^2] = d (1 - E_freq[(1 + 4 freq^2/d)^(-d/2)]) / 2,
                   about d (1 - exp(-2 freq^2)) / 2, i.e. 0.2 d .. 0.5 d for freq in [0.5, 2]
    relu2nn        y = sum_j a_j relu(w_j . x), j = 1..width, w_j ~ N(0, I_d),
                   a_j ~ N(0, 2 / width)                                   E[y^2] = d
    combo          y = alpha f_A(x) + (1 - alpha) f_B(x), (A, B) = cfg.combo drawn
                   independently, alpha ~ U(combo_alpha) per prompt
                   E[y^2] = E[alpha^2] E[f_A^2] + E[(1 - alpha)^2] E[f_B^2]

An input scale s multiplies x (so E[y^2] scales by s^2 for the linear classes and relu2nn);
noise adds noise_std^2.  With the curriculum the effective dimension d_eff < d replaces d
above (the other coordinates of x are zero, sparse supports lie among the first d_eff).

Metric.  nmse at k = mean over prompts of (prediction at x_k - y_k)^2, divided by E[y^2]
of that prompt distribution (computed in closed form, :func:`expected_y2`): 1.0 is as bad
as predicting 0, and for dense noiseless prompts least squares scores 1 - k/d for k < d.
"""

from __future__ import annotations

import functools
import importlib
import math
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from study.tasks import baselines
from study.tasks.base import Batch, ModelIO, as_pack
from study.tasks.functions_config import (  # noqa: F401  (split_of: part of this module's API)
    SHIFT_AXES,
    ICLTask,
    condition_values,
    function_class,
    probe_conditions,
    sequence_length,
    split_of,
)

# --------------------------------------------------------------------------- prompt distributions


@dataclass(frozen=True)
class PromptDistribution:
    """Everything that decides how a prompt is drawn (except its length and dimension)."""

    classes: tuple[str, ...]  # one or two function classes
    weights: tuple[float, ...]  # probability that a prompt uses each class
    nnz: int = 3  # sparse_linear: non-zero coefficients
    sparse_values: str = "normal"  # sparse_linear: law of the non-zero coefficients (normal | sign)
    freq_range: tuple[float, float] = (0.5, 2.0)  # sine: frequency ~ U(freq_range)
    relu_width: int = 100  # relu2nn: hidden units
    combo: tuple[str, str] = ("linear", "sine")  # combo: classes A and B
    alpha_range: tuple[float, float] = (0.0, 1.0)  # combo: alpha ~ U(alpha_range)
    noise_std: float = 0.0  # observation noise added to y
    x_scale: float = 1.0  # x ~ N(0, x_scale^2 I)

    @classmethod
    def pretraining(cls, cfg: ICLTask) -> "PromptDistribution":
        """The training mixture of a task config."""
        return cls(
            classes=tuple(cfg.classes),
            weights=tuple(cfg.weights),
            nnz=cfg.nnz,
            sparse_values=cfg.sparse_values,
            freq_range=cfg.freq_range,
            relu_width=cfg.relu_width,
            combo=cfg.combo,
            alpha_range=cfg.combo_alpha,
            noise_std=cfg.noise_std,
        )


def _normal(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g, device=g.device)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=g.device)


def linear(xs: torch.Tensor, dist: PromptDistribution, g: torch.Generator, d_eff: int | None = None) -> torch.Tensor:
    """xs [B, n, d] -> y [B, n]: y_i = x_i . w, one w ~ N(0, I_d) per prompt."""
    B, _, d = xs.shape
    w = _normal((B, d), g)
    return (xs @ w[:, :, None])[..., 0]


def sparse_coefficients(
    batch_size: int, d: int, nnz: int, g: torch.Generator, d_eff: int | None = None, values: str = "normal"
) -> torch.Tensor:
    """w [B, d]: zero except on nnz random coordinates among the first d_eff (min(nnz, d_eff)
    of them while a curriculum keeps d_eff small), N(0, 1) there, or +1 / -1 with
    ``values="sign"`` (the sign of the same normal draw)."""
    d_eff = d if d_eff is None else d_eff
    w = _normal((batch_size, d), g)
    if values == "sign":
        w = w.sign()
    scores = torch.rand((batch_size, d_eff), generator=g, device=g.device)
    support = scores.argsort(dim=1)[:, : min(nnz, d_eff)]  # a uniformly random subset per prompt
    return w * torch.zeros(batch_size, d, device=w.device).scatter_(1, support, 1.0)


def sparse_linear(
    xs: torch.Tensor, dist: PromptDistribution, g: torch.Generator, d_eff: int | None = None
) -> torch.Tensor:
    """As :func:`linear`, with w from :func:`sparse_coefficients` (dist.nnz, dist.sparse_values)."""
    B, _, d = xs.shape
    return (xs @ sparse_coefficients(B, d, dist.nnz, g, d_eff, dist.sparse_values)[:, :, None])[..., 0]


def sine(xs: torch.Tensor, dist: PromptDistribution, g: torch.Generator, d_eff: int | None = None) -> torch.Tensor:
    """y = sqrt(d) sin(freq * x . w / sqrt(d)), w ~ N(0, I_d), freq ~ U(dist.freq_range) per prompt."""
    B, _, d = xs.shape
    d_eff = d if d_eff is None else d_eff
    w = _normal((B, d), g)
    freq = _uniform(B, dist.freq_range[0], dist.freq_range[1], g)
    projection = (xs @ w[:, :, None])[..., 0] / math.sqrt(d_eff)  # [B, n], about N(0, 1)
    return math.sqrt(d_eff) * torch.sin(freq[:, None] * projection)


def relu2nn(xs: torch.Tensor, dist: PromptDistribution, g: torch.Generator, d_eff: int | None = None) -> torch.Tensor:
    """y = sum_j a_j relu(w_j . x): w_j ~ N(0, I_d), a_j ~ N(0, 2 / width), j = 1..width (dist.relu_width)."""
    B, _, d = xs.shape
    width = dist.relu_width
    W = _normal((B, width, d), g)
    a = _normal((B, width), g) * math.sqrt(2.0 / width)
    hidden = torch.relu(xs @ W.transpose(1, 2))  # [B, n, width]
    return (hidden @ a[:, :, None])[..., 0]


def combo(xs: torch.Tensor, dist: PromptDistribution, g: torch.Generator, d_eff: int | None = None) -> torch.Tensor:
    """y = alpha f_A(x) + (1 - alpha) f_B(x), (A, B) = dist.combo, alpha ~ U(dist.alpha_range) per prompt."""
    # A's draws come first, so alpha = 1 reproduces class A on the same generator state
    y_a = function_values(dist.combo[0], xs, dist, g, d_eff)
    y_b = function_values(dist.combo[1], xs, dist, g, d_eff)
    alpha = _uniform(xs.shape[0], dist.alpha_range[0], dist.alpha_range[1], g)[:, None]
    return alpha * y_a + (1.0 - alpha) * y_b


@functools.cache
def _imported(target: str) -> Callable[..., Any]:
    """The function a record names as ``"module:function"``, imported once."""
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler of function class ``name`` (its record's ``sampler``); ValueError for an unknown class."""
    return _imported(function_class(name).sampler)


def mean_square(name: str) -> Callable[[PromptDistribution, int], float]:
    """E[y^2] of function class ``name`` (its record's ``mean_square``); ValueError for an unknown class."""
    return _imported(function_class(name).mean_square)


def function_values(
    name: str, xs: torch.Tensor, dist: PromptDistribution, g: torch.Generator, d_eff: int | None = None
) -> torch.Tensor:
    """y [B, n] of one freshly drawn function of class ``name`` per prompt at xs [B, n, d]."""
    return sampler(name)(xs, dist, g, d_eff)


def sample_prompts(
    dist: PromptDistribution,
    batch_size: int,
    n_points: int,
    n_dims: int,
    g: torch.Generator,
    d_eff: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``batch_size`` prompts on the generator's device, using only ``g``.

    Returns xs [B, n, d] (coordinates >= d_eff zero), ys [B, n], and cls [B] (long): the
    index in ``dist.classes`` of the class each prompt was drawn from.  Every class is
    evaluated on every prompt and the prompt's own class is kept, so the generator use
    does not depend on the class choices.
    """
    d_eff = n_dims if d_eff is None else d_eff
    xs = _normal((batch_size, n_points, n_dims), g) * dist.x_scale
    xs[..., d_eff:] = 0.0
    cls = torch.zeros(batch_size, dtype=torch.long, device=g.device)
    if len(dist.classes) == 2:
        cls = (torch.rand(batch_size, generator=g, device=g.device) >= dist.weights[0]).long()
    values = torch.stack([function_values(name, xs, dist, g, d_eff) for name in dist.classes])  # [C, B, n]
    ys = values[cls, torch.arange(batch_size, device=g.device)]  # [B, n]: each prompt's own class
    if dist.noise_std > 0:
        ys = ys + dist.noise_std * _normal(ys.shape, g)
    return xs, ys, cls


def linear_prompts(
    batch_size: int,
    n_points: int,
    n_dims: int,
    nnz: int | None,
    x_scale: float,
    g: torch.Generator,
    sparse_values: str = "normal",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts of linear functions with their coefficients: xs [B, n, d] ~ N(0, x_scale^2 I),
    w [B, d] ~ N(0, I), or from :func:`sparse_coefficients` when nnz is given, ys = xs . w [B, n]."""
    xs = _normal((batch_size, n_points, n_dims), g) * x_scale
    if nnz is None:
        w = _normal((batch_size, n_dims), g)
    else:
        w = sparse_coefficients(batch_size, n_dims, nnz, g, values=sparse_values)
    return xs, (xs @ w[:, :, None])[..., 0], w


# E[f(x)^2] of each class with x ~ N(0, x_scale^2 I_d), over both x and the draw of f: (dist, d) -> float


def linear_mean_square(dist: PromptDistribution, d: int) -> float:
    return d * dist.x_scale**2


def sparse_linear_mean_square(dist: PromptDistribution, d: int) -> float:
    return min(dist.nnz, d) * dist.x_scale**2


def sine_mean_square(dist: PromptDistribution, d: int) -> float:
    # given w, u = x.w/sqrt(d) ~ N(0, s^2 |w|^2 / d) and E[sin^2(f u)] = (1 - exp(-2 f^2 s^2 |w|^2 / d)) / 2;
    # over |w|^2 ~ chi^2_d, E[exp(-t |w|^2)] = (1 + 2t)^(-d/2); then average over f ~ U(freq_range)
    s2 = dist.x_scale**2
    low, high = dist.freq_range
    f = low + (high - low) * (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000  # midpoint rule
    return float(d * (1.0 - (1.0 + 4.0 * f**2 * s2 / d) ** (-d / 2)).mean() / 2.0)


def relu2nn_mean_square(dist: PromptDistribution, d: int) -> float:
    # E[(sum_j a_j relu(z_j))^2] = width * (2/width) * E[relu(z)^2] = E|x|^2
    return d * dist.x_scale**2


def combo_mean_square(dist: PromptDistribution, d: int) -> float:
    # the cross term vanishes: E[f_A f_B] = E[f_A] E[f_B] = 0 (w -> -w leaves the law of f unchanged)
    low, high = dist.alpha_range
    a2 = (low * low + low * high + high * high) / 3.0  # E[alpha^2] for alpha ~ U(low, high)
    b2 = 1.0 - 2.0 * (low + high) / 2.0 + a2  # E[(1 - alpha)^2]
    return a2 * mean_square(dist.combo[0])(dist, d) + b2 * mean_square(dist.combo[1])(dist, d)


def expected_y2(dist: PromptDistribution, n_dims: int) -> float:
    """E[y^2] of a prompt distribution: the squared error of always predicting 0."""
    return sum(w * mean_square(name)(dist, n_dims) for name, w in zip(dist.classes, dist.weights)) + dist.noise_std**2


def to_sequence(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """xs [B, n, d], ys [B, n] -> [B, 2n, d]: x_0, (y_0, 0, ..., 0), x_1, (y_1, 0, ..., 0), ..."""
    y_tokens = torch.zeros_like(xs)
    y_tokens[..., 0] = ys
    return torch.stack((xs, y_tokens), dim=2).flatten(1, 2)


# --------------------------------------------------------------------------- shifts and splits

SHIFTS = ("none",) + SHIFT_AXES


def shifted(dist: PromptDistribution, shift: str, value: float) -> PromptDistribution:
    """The evaluation distribution of one shift condition.

    none:        the pretraining mixture itself (value 0)
    nnz:         sparse_linear prompts with ``value`` non-zero coefficients (value = d: dense linear)
    freq_scale:  sine prompts with the frequency range multiplied by ``value``
    alpha:       combo prompts of dist.combo with alpha fixed at ``value`` (1: pure A, 0: pure B)
    x_scale:     the pretraining mixture with x multiplied by ``value``
    """
    if shift == "none":
        return dist
    if shift == "nnz":
        return replace(dist, classes=("sparse_linear",), weights=(1.0,), nnz=int(value))
    if shift == "freq_scale":
        low, high = dist.freq_range
        return replace(dist, classes=("sine",), weights=(1.0,), freq_range=(low * value, high * value))
    if shift == "alpha":
        return replace(dist, classes=("combo",), weights=(1.0,), alpha_range=(value, value))
    if shift == "x_scale":
        return replace(dist, x_scale=value)
    raise ValueError(f"unknown shift {shift!r}; use one of {', '.join(SHIFTS)}")


# baseline name (study.tasks.functions_config.BASELINES) -> predictions [B, n] from (xs, ys, cfg)
BASELINE_PREDICTORS: dict[str, Callable[[torch.Tensor, torch.Tensor, ICLTask], torch.Tensor]] = {
    "lstsq": lambda xs, ys, cfg: baselines.least_squares(xs, ys),
    "ridge": lambda xs, ys, cfg: baselines.ridge(xs, ys, cfg.ridge_lambda),
    "lasso": lambda xs, ys, cfg: baselines.lasso(xs, ys, cfg.lasso_alpha),
    "averaging": lambda xs, ys, cfg: baselines.averaging(xs, ys),
    "knn": lambda xs, ys, cfg: baselines.nearest_neighbours(xs, ys, 3),
}


def baseline_predictions(name: str, xs: torch.Tensor, ys: torch.Tensor, cfg: ICLTask) -> torch.Tensor:
    """Predictions [B, n] of the named baseline (see :mod:`study.tasks.baselines`)."""
    if name not in BASELINE_PREDICTORS:
        raise ValueError(f"unknown baseline {name!r}")
    return BASELINE_PREDICTORS[name](xs, ys, cfg)


# --------------------------------------------------------------------------- the task


@dataclass
class ProbeCondition:
    """Prompts of linear functions for the coefficient probe: inputs [P, 2n, d] on the task's
    device, coefficients [P, d] on the CPU."""

    shift: str
    value: float
    split: str
    inputs: torch.Tensor
    coefficients: torch.Tensor


@dataclass
class Condition:
    """One evaluation condition: fixed prompts and the baselines' scores on them."""

    shift: str
    value: float
    split: str
    inputs: torch.Tensor  # [P, 2n, d] on the task's device
    ys: torch.Tensor  # [P, n] on the task's device
    y2: float  # E[y^2] of the condition's prompt distribution
    baseline_nmse: dict[str, list[float]]  # baseline name -> nmse at k = 0..n-1


EVAL_SEQUENCES = 4096  # prompts per evaluation forward, all members of a pack together


def nmse_curve(preds: torch.Tensor, ys: torch.Tensor, y2: float) -> torch.Tensor:
    """[n]: mean over prompts of (preds - ys)^2 at each k, divided by E[y^2]."""
    return ((preds.double() - ys.double()) ** 2).mean(dim=0) / y2


class InContextRegression:
    """In-context regression on a mixture of function classes (see the module docstring).

    ``evaluate`` returns one row per condition x k x metric:
    ``{"split", "metric", "value", "n_context", "shift", "shift_value"}`` with metric
    ``nmse`` (the model) and ``nmse_<baseline>`` for each of cfg.baselines, on the same
    prompts.  Conditions: shift "none" (value 0.0, the pretraining mixture) and every value
    of every axis in cfg.shifts (see :func:`shifted`, :func:`split_of`).
    """

    def __init__(self, cfg: ICLTask, seed: int, device: torch.device):
        self.cfg, self.device = cfg, torch.device(device)
        self.io = ModelIO(n_in=cfg.n_dims, n_out=1, tokens=False, max_seq_len=sequence_length(cfg))
        self.pretraining = PromptDistribution.pretraining(cfg)
        self.conditions = [self._condition(shift, value, seed) for shift, value in condition_values(cfg)]
        self.probe_conditions = self._probe_conditions(seed)

    def _condition(self, shift: str, value: float, seed: int) -> Condition:
        """Draw a condition's prompts on the CPU from (seed, shift, value) and score the baselines."""
        cfg = self.cfg
        dist = shifted(self.pretraining, shift, value)
        g = torch.Generator().manual_seed(zlib.crc32(f"icl-eval|{seed}|{shift}|{value!r}".encode()))
        xs, ys, _ = sample_prompts(dist, cfg.eval_prompts, cfg.n_points, cfg.n_dims, g)
        y2 = expected_y2(dist, cfg.n_dims)
        scores: dict[str, list[float]] = {
            name: nmse_curve(baseline_predictions(name, xs, ys, cfg), ys, y2).tolist() for name in cfg.baselines
        }
        return Condition(
            shift=shift,
            value=value,
            split=split_of(cfg, shift, value),
            inputs=to_sequence(xs, ys).to(self.device),
            ys=ys.to(self.device),
            y2=y2,
            baseline_nmse=scores,
        )

    def _probe_conditions(self, seed: int) -> list[ProbeCondition]:
        """Linear prompts for the coefficient probe (none when it is off), drawn on the CPU from the
        seed, one set per condition of ``functions_config.probe_conditions``: the ID ones of the
        trained linear class (dense, or sparse with cfg.nnz), then each shift value that keeps the
        function linear (nnz: sparse with that nnz; x_scale: inputs scaled by it)."""
        cfg = self.cfg
        sparse = cfg.nnz if cfg.linear_class == "sparse_linear" else None
        out = []
        for shift, value, size in probe_conditions(cfg):
            nnz = int(value) if shift == "nnz" else sparse
            x_scale = value if shift == "x_scale" else 1.0
            g = torch.Generator().manual_seed(zlib.crc32(f"icl-probe|{seed}|{shift}|{value!r}".encode()))
            xs, ys, w = linear_prompts(size, cfg.n_points, cfg.n_dims, nnz, x_scale, g, cfg.sparse_values)
            out.append(
                ProbeCondition(shift, value, split_of(cfg, shift, value), to_sequence(xs, ys).to(self.device), w)
            )
        return out

    def schedule(self, step: int) -> tuple[int, int]:
        """(effective dimension, points per prompt) at a training step.

        Without the curriculum: (n_dims, n_points).  With it: dims start at
        curriculum_dims_start and grow by 1, points start at curriculum_points_start and
        grow by 2, every curriculum_every steps, up to n_dims and n_points.  Shorter
        prompts are generated shorter (the sequence has 2 * points positions).
        """
        cfg = self.cfg
        if not cfg.curriculum:
            return cfg.n_dims, cfg.n_points
        stage = step // cfg.curriculum_every
        return (
            min(cfg.n_dims, cfg.curriculum_dims_start + stage),
            min(cfg.n_points, cfg.curriculum_points_start + 2 * stage),
        )

    def train_batch(self, batch_size: int, step: int, generator: torch.Generator) -> Batch:
        """Prompts of the pretraining mixture, drawn with ``generator`` only.

        inputs [B, 2n, d]; targets [B, 2n] (y_i at position 2i, 0 at y positions);
        mask [B, 2n] True at the x positions 0, 2, 4, ...
        """
        d_eff, n_points = self.schedule(step)
        xs, ys, _ = sample_prompts(self.pretraining, batch_size, n_points, self.cfg.n_dims, generator, d_eff)
        xs, ys = xs.to(self.device), ys.to(self.device)
        targets = torch.stack((ys, torch.zeros_like(ys)), dim=2).flatten(1, 2)
        mask = torch.zeros(targets.shape, dtype=torch.bool, device=self.device)
        mask[:, 0::2] = True
        return Batch(inputs=to_sequence(xs, ys), targets=targets, mask=mask)

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean squared error of output[..., 0] over the x positions; output [B, 2n, 1]."""
        error = (output[..., 0].float() - batch.targets) ** 2
        mask = batch.mask.float()
        return (error * mask).sum() / mask.sum().clamp(min=1.0)  # a masked mean: no host sync, unlike error[mask]

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> list[dict[str, Any]]:
        """One forward pass per condition predicts every k at once; baselines were scored at construction."""
        return InContextRegression.evaluate_pack([self], as_pack(model))[0]

    @staticmethod
    @torch.no_grad()
    def evaluate_pack(
        tasks: list["InContextRegression"], model: Callable[..., torch.Tensor]
    ) -> list[list[dict[str, Any]]]:
        """:meth:`evaluate` of K tasks of one config (the members' own seeds, so their own
        prompts) on a pack of K members, ``model`` [K, P, 2n, d] -> [K, P, 2n, 1]: each
        condition's prompts of all members go through one batched forward (in chunks of at
        most EVAL_SEQUENCES sequences in all).  One row list per member."""
        K = len(tasks)
        per_member = max(1, EVAL_SEQUENCES // K)
        out_rows: list[list[dict[str, Any]]] = [[] for _ in range(K)]
        for c, first in enumerate(tasks[0].conditions):
            inputs = torch.stack([task.conditions[c].inputs for task in tasks])  # [K, P, 2n, d]
            preds = torch.cat(
                [
                    model(inputs[:, start : start + per_member])[..., 0::2, 0].float()
                    for start in range(0, inputs.shape[1], per_member)
                ],
                1,
            )  # [K, P, n]: at x_k after k pairs
            for k, task in enumerate(tasks):
                cond = task.conditions[c]
                curves = {"nmse": nmse_curve(preds[k], cond.ys, cond.y2).tolist()}
                curves.update({f"nmse_{name}": curve for name, curve in cond.baseline_nmse.items()})
                for metric, curve in curves.items():
                    for n_context, value in enumerate(curve):
                        out_rows[k].append(
                            {
                                "split": cond.split,
                                "metric": metric,
                                "value": float(value),
                                "n_context": n_context,
                                "shift": cond.shift,
                                "shift_value": cond.value,
                            }
                        )
        return out_rows

    @torch.no_grad()
    def representations(self, model: nn.Module, step: int | None = None) -> list[dict[str, Any]]:
        """The coefficient probe's rows (see :meth:`probe_scores`) when it is on and due at the
        evaluation of training step ``step``: at every evaluation, or at steps that are multiples
        of cfg.probes.every (None: an evaluation outside training, always due)."""
        every = self.cfg.probes.every
        if not self.probe_conditions or not (every is None or step is None or step % every == 0):
            return []
        return self.probe_scores(model)

    @torch.no_grad()
    def probe_scores(self, model: nn.Module) -> list[dict[str, Any]]:
        """R^2 of a linear probe from the final hidden state at x_k to the prompt's coefficients w.

        For each k (pairs seen before x_k), a ridge probe is fitted on 3/4 of the ID linear prompts
        and scored on the other quarter (split id, shift "none") and on the prompts of each linear
        shift condition (nnz, x_scale; split as in the evaluation).  One row per condition and k:
        kind "probe_coefficients", position k, layer -1, shift, shift_value, value.  Least squares
        recovers w exactly from k >= d noiseless pairs, so a model that learned it in context
        reaches R^2 near 1 there; a state that ignores the prompt scores about 0.
        """
        from study.tasks import probes

        states = []
        for cond in self.probe_conditions:
            _, hidden = model(cond.inputs, return_hidden=True)  # [P, 2n, d]
            states.append(hidden[:, 0::2].float().cpu().numpy())  # [P, n, d]: the state at each x_k
        ident, others = states[0], states[1:]
        ident_w = self.probe_conditions[0].coefficients.numpy()
        fit, held = probes.held_out_split(len(ident_w), 0.25, seed=0)
        rows = []
        for k in range(ident.shape[1]):
            tests = [(ident[held, k], ident_w[held])] + [
                (h[:, k], cond.coefficients.numpy()) for h, cond in zip(others, self.probe_conditions[1:])
            ]
            for cond, value in zip(self.probe_conditions, probes.coefficient_r2(ident[fit, k], ident_w[fit], tests)):
                rows.append(
                    {
                        "kind": "probe_coefficients",
                        "split": cond.split,
                        "position": k,
                        "layer": -1,
                        "shift": cond.shift,
                        "shift_value": cond.value,
                        "value": value,
                    }
                )
        return rows
