"""In-context regression: function classes, classical baselines, data contract, evaluation rows."""

import importlib
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from study.config import ICLTask
from study.tasks import baselines, build_task, functions, functions_config
from study.tasks.functions import (
    PromptDistribution,
    expected_y2,
    function_values,
    sample_prompts,
    split_of,
    to_sequence,
)
from study.tasks.functions_config import FUNCTION_CLASSES


def prompts(name: str, batch: int, n: int, d: int, seed: int = 0, **params) -> tuple[torch.Tensor, torch.Tensor]:
    dist = PromptDistribution(classes=(name,), weights=(1.0,), **params)
    xs, ys, _ = sample_prompts(dist, batch, n, d, torch.Generator().manual_seed(seed))
    return xs, ys


def within_sampling_error(per_prompt: torch.Tensor, expected: float, z: float = 4.0) -> bool:
    """Is the mean of per-prompt values within z standard errors of ``expected``?"""
    mean, sem = per_prompt.mean(), per_prompt.std() / math.sqrt(per_prompt.numel())
    return abs(float(mean) - expected) <= z * float(sem)


# --------------------------------------------------------------------------- baselines


def test_least_squares_error_is_one_minus_k_over_d_then_zero():
    d = 10
    xs, ys = prompts("linear", 1000, 2 * d + 1, d)
    errors = (baselines.least_squares(xs, ys) - ys) ** 2 / d  # [B, n], E[y^2] = d
    for k in range(d):
        assert within_sampling_error(errors[:, k], 1 - k / d), k
    assert errors[:, d:].mean(0).max() < 1e-3


def test_least_squares_is_the_minimum_norm_solution_of_the_earlier_pairs():
    xs, ys = prompts("linear", 8, 13, 6)
    preds = baselines.least_squares(xs, ys).double()
    for k in range(1, 13):
        w = torch.linalg.pinv(xs[:, :k].double()) @ ys[:, :k, None].double()
        torch.testing.assert_close(preds[:, k], (xs[:, k, None].double() @ w)[:, 0, 0], atol=1e-4, rtol=1e-4)
    assert (preds[:, 0] == 0).all()


def test_ridge_tends_to_least_squares_as_lambda_vanishes():
    xs, ys = prompts("linear", 16, 15, 6)
    torch.testing.assert_close(baselines.ridge(xs, ys, 1e-9), baselines.least_squares(xs, ys), atol=1e-3, rtol=1e-3)
    assert baselines.ridge(xs, ys, 1e6).abs().max() < 1e-2  # a huge penalty predicts ~0


def test_lasso_soft_thresholds_an_orthogonal_design():
    """With X^T X / k = I the lasso solution is w = S(X^T y / k, alpha), S the soft threshold."""
    d, alpha = 4, 0.3
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    query = torch.randn(1, d, dtype=torch.float64)
    xs = torch.cat((math.sqrt(d) * Q, query))[None]  # k = d orthogonal rows, then the query
    ys = torch.randn(1, d + 1, dtype=torch.float64)
    c = xs[0, :d].T @ ys[0, :d] / d
    w = c.sign() * (c.abs() - alpha).clamp(min=0)
    torch.testing.assert_close(baselines.lasso_weights(xs, ys, alpha)[0, d], w)
    torch.testing.assert_close(baselines.lasso(xs, ys, alpha)[0, d], query[0] @ w)


def test_lasso_satisfies_its_optimality_conditions_at_every_k():
    """KKT: g = X^T (y - X w) / k has g_j = alpha sign(w_j) where w_j != 0 and |g_j| <= alpha elsewhere."""
    d, n, alpha = 8, 14, 0.05
    xs, ys = prompts("sparse_linear", 32, n, d, nnz=3)
    xs, ys = xs.double(), ys.double()
    w = baselines.lasso_weights(xs, ys, alpha)
    for k in range(1, n):
        X, y, wk = xs[:, :k], ys[:, :k], w[:, k]
        g = (X.transpose(1, 2) @ (y - (X @ wk[..., None])[..., 0])[..., None])[..., 0] / k
        on = wk != 0
        violation = torch.where(on, (g - alpha * wk.sign()).abs(), (g.abs() - alpha).clamp(min=0))
        assert violation.max() < 1e-8, k
        assert (on.sum(-1) <= min(k, d)).all()


def test_lasso_beats_least_squares_on_sparse_prompts_below_d():
    """Once k is about twice nnz; with one or two points the lasso's single pick is worse."""
    d = 10
    xs, ys = prompts("sparse_linear", 300, d + 1, d, nnz=2)
    lasso_err = ((baselines.lasso(xs, ys, 0.01) - ys) ** 2).mean(0)
    ls_err = ((baselines.least_squares(xs, ys) - ys) ** 2).mean(0)
    assert (lasso_err[4:d] < ls_err[4:d]).all()
    assert lasso_err[d - 2] < ls_err[d - 2] / 4


def test_averaging_error_is_d_plus_one_over_k_and_above_least_squares():
    """w_k = mean of y_j x_j has E|w_k - w|^2 = (d + 1) |w|^2 / k, so nmse = (d + 1) / k."""
    d = 10
    xs, ys = prompts("linear", 2000, 41, d)
    errors = (baselines.averaging(xs, ys) - ys) ** 2 / d
    for k in (1, 5, 10, 20, 40):
        assert within_sampling_error(errors[:, k], (d + 1) / k), k
    ls = (baselines.least_squares(xs, ys) - ys) ** 2 / d
    assert (errors.mean(0)[d:] > ls.mean(0)[d:] + 0.1).all()


def test_nearest_neighbours_average_the_three_closest_earlier_points():
    xs = torch.tensor([[[0.0], [10.0], [1.0], [2.0], [11.0], [0.5]]])
    ys = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    preds = baselines.nearest_neighbours(xs, ys)[0]
    # k=0: nothing seen; k < 3: all earlier points; x=11 is nearest to 10, 2, 1; x=0.5 to 0, 1, 2
    expected = [0.0, 1.0, 1.5, 2.0, (2.0 + 3.0 + 4.0) / 3, (1.0 + 3.0 + 4.0) / 3]
    torch.testing.assert_close(preds, torch.tensor(expected))


# --------------------------------------------------------------------------- function classes


@pytest.mark.parametrize("name", list(FUNCTION_CLASSES))
def test_each_class_has_the_documented_mean_square(name):
    d = 8
    xs, ys = prompts(name, 3000, 8, d, seed=1, nnz=3, relu_width=50)
    dist = PromptDistribution(classes=(name,), weights=(1.0,), nnz=3, relu_width=50)
    assert xs.shape == (3000, 8, d) and ys.shape == (3000, 8)
    assert within_sampling_error((ys**2).mean(1), expected_y2(dist, d)), (float((ys**2).mean()), expected_y2(dist, d))


@pytest.mark.parametrize("name", list(FUNCTION_CLASSES))
def test_every_registered_class_names_a_sampler_and_a_mean_square_of_this_module(name):
    """The record's "module:function" names resolve; the sampler draws [B, n] finite values from
    the generator alone, and E[y^2] is a positive number."""
    record = FUNCTION_CLASSES[name]
    for target, function in (
        (record.sampler, functions.sampler(name)),
        (record.mean_square, functions.mean_square(name)),
    ):
        module, attribute = target.split(":")
        assert callable(function) and function is getattr(importlib.import_module(module), attribute)
    dist = PromptDistribution(classes=(name,), weights=(1.0,), relu_width=5)
    xs = torch.randn(7, 4, 3, generator=torch.Generator().manual_seed(0))
    ys = function_values(name, xs, dist, torch.Generator().manual_seed(1))
    assert ys.shape == (7, 4) and torch.isfinite(ys).all()
    assert torch.equal(ys, function_values(name, xs, dist, torch.Generator().manual_seed(1)))
    assert 0 < expected_y2(dist, 3) < math.inf


def test_an_unknown_function_class_fails_loudly():
    xs = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="unknown function class 'cubic'; use one of linear"):
        function_values("cubic", xs, PromptDistribution(("linear",), (1.0,)), torch.Generator())
    with pytest.raises(ValueError, match="unknown function class 'cubic'"):
        expected_y2(PromptDistribution(("cubic",), (1.0,)), 4)
    with pytest.raises(ValueError, match="unknown function class 'cubic'"):  # combo reads its classes' records too
        function_values(
            "combo", xs, PromptDistribution(("combo",), (1.0,), combo=("linear", "cubic")), torch.Generator()
        )


def test_the_task_builds_the_conditions_and_the_sequence_length_its_config_declares():
    cfg = ICLTask(
        n_dims=3,
        n_points=5,
        eval_prompts=8,
        classes=["linear"],
        probes={"prompts": 16},
        shifts={"x_scale": [2.0, 2.0, 0.5], "nnz": [1, 3], "freq_scale": [2.0]},
    )
    task = build_task(cfg, seed=0, device="cpu")
    assert task.io.max_seq_len == functions_config.sequence_length(cfg) == task.conditions[0].inputs.shape[1]
    assert [(c.shift, c.value) for c in task.conditions] == functions_config.condition_values(cfg)
    assert [(p.shift, p.value, len(p.inputs)) for p in task.probe_conditions] == functions_config.probe_conditions(cfg)
    assert functions_config.probe_conditions(cfg.model_copy(update={"classes": ["sine"]})) == []


def test_sine_mean_square_follows_the_frequency_and_input_scale():
    d = 6
    for freq, x_scale in [(0.3, 1.0), (3.0, 1.0), (1.0, 2.0)]:
        dist = PromptDistribution(classes=("sine",), weights=(1.0,), freq_range=(freq, freq), x_scale=x_scale)
        _, ys, _ = sample_prompts(dist, 3000, 8, d, torch.Generator().manual_seed(2))
        assert within_sampling_error((ys**2).mean(1), expected_y2(dist, d)), freq
    # small frequencies: sine is freq * linear, E[y^2] ~ freq^2 d
    tiny = PromptDistribution(classes=("sine",), weights=(1.0,), freq_range=(0.01, 0.01))
    assert expected_y2(tiny, d) == pytest.approx(0.01**2 * d, rel=1e-3)


def test_sparse_functions_have_exactly_nnz_non_zero_coefficients():
    d, nnz = 12, 4
    xs = torch.eye(d).expand(500, d, d)  # x_i = e_i, so y_i = w_i
    dist = PromptDistribution(("sparse_linear",), (1.0,), nnz=nnz)
    ys = function_values("sparse_linear", xs, dist, torch.Generator())
    assert ((ys != 0).sum(1) == nnz).all()
    assert ((ys != 0).float().mean(0) - nnz / d).abs().max() < 0.1  # every coordinate used alike


def test_sign_valued_sparse_functions_have_coefficients_plus_or_minus_one_and_the_same_mean_square():
    d, nnz = 12, 4
    xs = torch.eye(d).expand(2000, d, d)  # x_i = e_i, so y_i = w_i
    dist = PromptDistribution(("sparse_linear",), (1.0,), nnz=nnz, sparse_values="sign")
    ys = function_values("sparse_linear", xs, dist, torch.Generator().manual_seed(3))
    assert ((ys != 0).sum(1) == nnz).all()
    assert set(ys[ys != 0].unique().tolist()) == {-1.0, 1.0}
    assert abs(float((ys > 0).sum()) / float((ys != 0).sum()) - 0.5) < 0.02  # both signs alike
    _, ys, _ = sample_prompts(dist, 3000, 8, d, torch.Generator().manual_seed(4))
    assert within_sampling_error((ys**2).mean(1), expected_y2(dist, d))  # E[y^2] = nnz, as with N(0, 1) values
    # the same draws as the normal law, signs kept: only the magnitudes change
    normal = function_values(
        "sparse_linear",
        torch.eye(d).expand(50, d, d),
        PromptDistribution(("sparse_linear",), (1.0,), nnz=nnz),
        torch.Generator().manual_seed(5),
    )
    sign = function_values("sparse_linear", torch.eye(d).expand(50, d, d), dist, torch.Generator().manual_seed(5))
    assert torch.equal(normal.sign(), sign)


def test_sign_values_reach_the_nnz_shift_and_the_coefficient_probe():
    cfg = ICLTask(
        n_dims=4,
        n_points=9,
        eval_prompts=64,
        classes=["linear", "sparse_linear"],
        nnz=1,
        sparse_values="sign",
        shifts={"nnz": [1, 2, 4]},
        probes={"enabled": True, "prompts": 64},
    )
    task = build_task(cfg, seed=0, device="cpu")
    for condition in task.conditions:
        if condition.shift == "nnz":
            x, y = condition.inputs[:, 0::2][:, :4], condition.ys[:, :4]
            w = torch.linalg.solve(x, y[..., None])[..., 0]  # 4 generic points pin w down
            non_zero = w.abs() > 1e-3
            assert (non_zero.sum(1) == int(condition.value)).all()
            assert torch.allclose(w[non_zero].abs(), torch.ones(1), atol=1e-3)
    for probe in task.probe_conditions:
        if probe.shift == "nnz":
            assert set(probe.coefficients[probe.coefficients != 0].abs().unique().tolist()) == {1.0}


def test_sign_values_need_a_sparse_class_or_an_nnz_shift():
    with pytest.raises(ValidationError, match="task.sparse_values"):
        ICLTask(classes=["linear"], sparse_values="sign")
    ICLTask(classes=["linear"], sparse_values="sign", shifts={"nnz": [1]})  # the shift draws sparse prompts


def test_combo_at_alpha_one_is_class_a_on_the_same_draws():
    xs = torch.randn(32, 10, 5)
    dist = PromptDistribution(("combo",), (1.0,), combo=("linear", "sine"), alpha_range=(1.0, 1.0))
    combo = function_values("combo", xs, dist, torch.Generator().manual_seed(7))
    alone = function_values("linear", xs, dist, torch.Generator().manual_seed(7))
    assert torch.equal(combo, alone)
    half = function_values(
        "combo", xs, PromptDistribution(("combo",), (1.0,), alpha_range=(0.5, 0.5)), torch.Generator().manual_seed(7)
    )
    assert not torch.allclose(half, alone)


def test_mixture_picks_each_class_with_its_weight():
    dist = PromptDistribution(classes=("linear", "sparse_linear"), weights=(0.3, 0.7), nnz=1)
    xs, ys, cls = sample_prompts(dist, 4000, 4, 6, torch.Generator().manual_seed(3))
    assert within_sampling_error(cls.float(), 0.7)
    # the class shows in the data: nnz = 1 prompts have y proportional to one coordinate of x
    assert ys[cls == 1].pow(2).mean() < ys[cls == 0].pow(2).mean() / 3


def test_noise_adds_its_variance():
    xs, clean = prompts("linear", 2000, 8, 4, seed=5)
    _, noisy = prompts("linear", 2000, 8, 4, seed=5, noise_std=0.5)
    assert within_sampling_error(((noisy - clean) ** 2).mean(1), 0.25)


# --------------------------------------------------------------------------- the task's data contract


def small_task(**fields) -> object:
    cfg = ICLTask(**{"n_dims": 6, "n_points": 13, "eval_prompts": 64, **fields})
    return build_task(cfg, seed=0, device="cpu")


def test_sequence_interleaves_x_and_padded_y():
    xs, ys = torch.randn(2, 3, 4), torch.randn(2, 3)
    seq = to_sequence(xs, ys)
    assert seq.shape == (2, 6, 4)
    torch.testing.assert_close(seq[:, 0::2], xs)
    torch.testing.assert_close(seq[:, 1::2, 0], ys)
    assert (seq[:, 1::2, 1:] == 0).all()


def test_batch_layout_and_loss_count_only_x_positions():
    task = small_task()
    assert (task.io.n_in, task.io.n_out, task.io.tokens, task.io.max_seq_len) == (6, 1, False, 26)
    batch = task.train_batch(8, 0, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (8, 26, 6) and batch.targets.shape == batch.mask.shape == (8, 26)
    assert batch.mask[:, 0::2].all() and not batch.mask[:, 1::2].any()
    torch.testing.assert_close(batch.targets[:, 0::2], batch.inputs[:, 1::2, 0])
    perfect = torch.where(batch.mask, batch.targets, torch.full_like(batch.targets, 1e3))[..., None]
    assert task.loss(perfect, batch) == 0
    assert task.loss(perfect + 1.0, batch) == pytest.approx(1.0)


def test_same_generator_state_gives_the_same_batch():
    task = small_task(classes=["linear", "relu2nn"], noise_std=0.1)
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    first = task.train_batch(4, 0, g)
    g.set_state(state)
    torch.manual_seed(123)  # the global RNG is never used
    again = task.train_batch(4, 0, g)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.inputs, task.train_batch(4, 0, g).inputs)


def test_curriculum_starts_small_and_grows_to_the_full_task():
    task = small_task(
        n_dims=10,
        n_points=21,
        curriculum=True,
        curriculum_dims_start=3,
        curriculum_points_start=5,
        curriculum_every=100,
    )
    g = torch.Generator().manual_seed(0)
    assert task.schedule(0) == (3, 5) and task.schedule(199) == (4, 7) and task.schedule(10_000) == (10, 21)
    early = task.train_batch(4, 0, g)
    assert early.inputs.shape == (4, 10, 10)
    assert (early.inputs[:, 0::2, 3:] == 0).all() and (early.inputs[:, 0::2, :3] != 0).all()
    assert task.train_batch(4, 10_000, g).inputs.shape == (4, 42, 10)
    assert small_task().schedule(0) == (6, 13)  # off by default


# --------------------------------------------------------------------------- evaluation


class LeastSquaresInContext(nn.Module):
    """Reads the interleaved prompt and writes, at every x position, the minimum-norm
    least-squares prediction from the earlier pairs (a transformer that learned lstsq)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        xs, ys = inputs[:, 0::2].double(), inputs[:, 1::2, 0].double()
        out = torch.zeros(inputs.shape[0], inputs.shape[1], 1)
        for k in range(1, xs.shape[1]):
            w = torch.linalg.pinv(xs[:, :k]) @ ys[:, :k, None]
            out[:, 2 * k, 0] = (xs[:, k, None, :] @ w)[:, 0, 0].float()
        return out


class Zero(nn.Module):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*inputs.shape[:2], 1)


def rows_by(rows, **match):
    return [r for r in rows if all(r[key] == value for key, value in match.items())]


def test_a_least_squares_model_scores_exactly_the_least_squares_baseline():
    d = 6
    task = small_task(
        classes=["linear", "sparse_linear"], nnz=2, shifts={"nnz": [1, 3, d]}, baselines=["lstsq", "averaging", "knn"]
    )
    rows = task.evaluate(LeastSquaresInContext())
    assert {tuple(sorted(r)) for r in rows} == {("metric", "n_context", "shift", "shift_value", "split", "value")}
    assert {r["metric"] for r in rows} == {"nmse", "nmse_lstsq", "nmse_averaging", "nmse_knn"}
    assert len(rows) == 4 * 13 * 4  # conditions x k x metrics
    for shift, value in [("none", 0.0), ("nnz", 1.0), ("nnz", 3.0), ("nnz", float(d))]:
        model = [r["value"] for r in rows_by(rows, shift=shift, shift_value=value, metric="nmse")]
        lstsq = [r["value"] for r in rows_by(rows, shift=shift, shift_value=value, metric="nmse_lstsq")]
        assert [r["n_context"] for r in rows_by(rows, shift=shift, shift_value=value, metric="nmse")] == list(range(13))
        torch.testing.assert_close(torch.tensor(model), torch.tensor(lstsq), atol=1e-6, rtol=1e-4)
        assert max(model[d:]) < 1e-6  # noiseless and k >= d: exact


def test_predicting_zero_scores_about_one_everywhere():
    task = small_task(
        classes=["linear", "sine"],
        eval_prompts=256,
        shifts={"nnz": [2], "freq_scale": [0.5, 2.0], "alpha": [0.5], "x_scale": [3.0]},
    )
    rows = rows_by(task.evaluate(Zero()), metric="nmse")
    values = torch.tensor([r["value"] for r in rows])
    assert len(rows) == 6 * 13 and 0.85 < values.mean() < 1.15 and values.min() > 0.5


def test_splits_follow_the_support_of_the_pretraining_mixture():
    d = 8
    cfg = ICLTask(
        n_dims=d,
        n_points=11,
        eval_prompts=16,
        classes=["linear", "sparse_linear"],
        nnz=3,
        shifts={"nnz": [1, 3, 8], "x_scale": [1.0, 2.0]},
    )
    task = build_task(cfg, seed=0)
    labels = {(r["shift"], r["shift_value"]): r["split"] for r in task.evaluate(Zero())}
    assert labels == {
        ("none", 0.0): "id",
        ("nnz", 1.0): "ood",
        ("nnz", 3.0): "id",
        ("nnz", 8.0): "id",
        ("x_scale", 1.0): "id",
        ("x_scale", 2.0): "ood",
    }
    sparse_only = cfg.model_copy(update={"classes": ["sparse_linear"]})
    assert split_of(sparse_only, "nnz", 8) == "ood" and split_of(sparse_only, "nnz", 3) == "id"
    # convex combinations: only the pure ends are inside a linear + sine mixture
    mix = ICLTask(classes=["linear", "sine"], combo=("linear", "sine"))
    assert [split_of(mix, "alpha", a) for a in (1.0, 0.5, 0.0)] == ["id", "ood", "id"]
    assert split_of(mix, "freq_scale", 1.0) == "id" and split_of(mix, "freq_scale", 2.0) == "ood"
    assert split_of(ICLTask(classes=["combo"], combo_alpha=(0.2, 0.8)), "alpha", 0.5) == "id"


def test_a_listed_class_with_mixture_weight_zero_is_not_in_the_support():
    """A mixture sweep keeps both class names in every cell; at w = 0 (sparse only) dense
    prompts are OOD, at w = 1 (dense only) sparse prompts are."""
    d = 4
    cell = dict(n_dims=d, classes=["linear", "sparse_linear"], nnz=1)
    sparse_only, dense_only, mixed = (ICLTask(**cell, mix_weight=w) for w in (0.0, 1.0, 0.5))
    assert [split_of(sparse_only, "nnz", v) for v in (1, 2, d)] == ["id", "ood", "ood"]
    assert [split_of(dense_only, "nnz", v) for v in (1, 2, d)] == ["ood", "ood", "id"]
    assert [split_of(mixed, "nnz", v) for v in (1, 2, d)] == ["id", "ood", "id"]
    mix = ICLTask(classes=["linear", "sine"], mix_weight=1.0)
    assert [split_of(mix, "alpha", a) for a in (1.0, 0.0)] == ["id", "ood"]
    assert split_of(mix, "freq_scale", 1.0) == "ood"


def test_a_class_never_trained_is_evaluated_as_ood_and_a_scale_must_be_positive():
    """freq_scale on a linear-only model is allowed: sine prompts, all OOD (transfer to an unseen class)."""
    task = small_task(shifts={"freq_scale": [1.0]})
    rows = rows_by(task.evaluate(Zero()), shift="freq_scale")
    assert rows and {r["split"] for r in rows} == {"ood"}
    for axis in ("freq_scale", "x_scale"):
        with pytest.raises(ValidationError, match=f"shifts.{axis}"):
            ICLTask(shifts={axis: [0.0]})


def test_evaluation_prompts_are_fixed_by_the_seed():
    first, again = small_task(), small_task()
    other = build_task(ICLTask(n_dims=6, n_points=13, eval_prompts=64), seed=1)
    assert torch.equal(first.conditions[0].inputs, again.conditions[0].inputs)
    assert not torch.equal(first.conditions[0].inputs, other.conditions[0].inputs)
    assert torch.equal(first.probe_conditions[0].inputs, again.probe_conditions[0].inputs)
    assert not torch.equal(first.probe_conditions[0].inputs, other.probe_conditions[0].inputs)


# --------------------------------------------------------------------------- coefficient probe


class LeastSquaresState(nn.Module):
    """Predicts zero; its hidden state at x_k is the least-squares coefficients of the k earlier
    pairs (a model that holds w in context), or, with ``ignore_prompt``, noise."""

    def __init__(self, ignore_prompt: bool = False):
        super().__init__()
        self.ignore_prompt = ignore_prompt

    def forward(self, inputs: torch.Tensor, return_hidden: bool = False):
        B, T, d = inputs.shape
        out = torch.zeros(B, T, 1)
        hidden = torch.zeros(B, T, d)
        xs, ys = inputs[:, 0::2].double(), inputs[:, 1::2, 0].double()
        for k in range(1, xs.shape[1]):
            hidden[:, 2 * k] = (torch.linalg.pinv(xs[:, :k]) @ ys[:, :k, None])[..., 0].float()
        if self.ignore_prompt:
            hidden = torch.randn(B, T, d, generator=torch.Generator().manual_seed(0))
        return (out, hidden) if return_hidden else out


def test_coefficient_probe_reads_least_squares_states_once_k_reaches_d():
    d = 6
    task = small_task(shifts={"nnz": [2], "x_scale": [2.0], "freq_scale": [2.0]}, probes={"prompts": 256})
    rows = task.representations(LeastSquaresState())
    assert {r["kind"] for r in rows} == {"probe_coefficients"} and {r["layer"] for r in rows} == {-1}
    assert len(rows) == 3 * 13  # ID, nnz=2 and x_scale=2 (sine prompts have no coefficients) x k
    r2 = {(r["shift"], r["shift_value"], r["position"]): r["value"] for r in rows}
    assert {r["split"] for r in rows if r["shift"] != "none"} == {"ood"}
    assert r2[("none", 0.0, 0)] < 0.05  # nothing seen yet
    for condition in [("none", 0.0), ("nnz", 2.0), ("x_scale", 2.0)]:
        assert min(r2[(*condition, k)] for k in range(d, 13)) > 0.99
    assert r2[("none", 0.0, 2)] < r2[("none", 0.0, 4)] < 0.99  # partial information below d
    noise = task.representations(LeastSquaresState(ignore_prompt=True))
    assert max(r["value"] for r in noise) < 0.05


def test_coefficient_probe_follows_the_config():
    assert small_task(classes=["sine"]).representations(Zero()) == []  # no linear class: off
    assert small_task(probes={"enabled": False}).representations(Zero()) == []
    task = small_task(probes={"prompts": 32, "every": 1000})
    assert task.representations(Zero(), step=500) == []  # not due at step 500
    assert len(task.representations(LeastSquaresState(), step=1000)) == 13
    assert len(task.representations(LeastSquaresState())) == 13  # outside training: due


def test_every_baseline_the_config_accepts_has_a_predictor():
    from study.tasks import functions_config
    from study.tasks.functions import BASELINE_PREDICTORS

    assert tuple(BASELINE_PREDICTORS) == functions_config.BASELINES
