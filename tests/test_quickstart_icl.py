"""The in-context quickstart: a dense vs sparse linear mixture shows model selection and its limit.

A smaller version of ``search_spaces/quickstart_icl.yaml`` (one seed per mixture weight)
on an embedded local Ray, then the numbers the README promises, at k = 2d in-context
examples: a sparse-only model (w = 0) does not reach least squares on dense prompts,
a dense-only one (w = 1) does; the mixture (w = 0.5) is as good as the better specialist
on both dense and one-sparse prompts (Garg et al. 2022, arXiv 2208.01066; Yadlowsky et
al. 2023, arXiv 2311.00871).  The spec's sparse class has coefficients +1 or -1
(``task.sparse_values: sign``); a fast test beside it shows why the limit is hard to reach
with N(0, 1) values: a regressor blind to the input directions cannot tell a one-sparse
prompt from a dense one, so a specialist must tie itself to the coordinate axes to fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import icl
from analysis.load import final_evals
from analysis.report import build_report
from study.config import load_sweep_spec
from study.store import Store

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "search_spaces" / "quickstart_icl.yaml"
SMALLER = ["grid.train.seed=[0]", "pack.size=1"]  # one model per mixture weight


def test_a_direction_blind_regressor_cannot_tell_a_one_sparse_prompt_from_its_rotated_dense_copy():
    """Why the limit needs an algorithm tied to the coordinate axes (README, "In-context: the
    budget and the limit"): rotating a one-sparse prompt, x_i -> R x_i and w -> R w, keeps
    every y and gives a prompt with a dense w of the same norm and inputs still N(0, I).
    Least squares, ridge and averaging predict exactly the same on both, so their nmse is
    the same on one-sparse and dense prompts; Lasso, which uses the axes, does not."""
    import torch

    from study.tasks import baselines, functions

    g = torch.Generator().manual_seed(0)
    d, n, P = 3, 2 * 3 + 1, 512
    xs, ys, w = functions.linear_prompts(P, n, d, 1, 1.0, g)
    rotations, _ = torch.linalg.qr(torch.randn(P, d, d, generator=g, dtype=torch.float64))
    rotated = (xs.double() @ rotations.transpose(1, 2)).float()  # x_i -> R x_i
    dense_w = (rotations @ w.double()[:, :, None])[..., 0]
    assert torch.allclose(rotated.double() @ dense_w[:, :, None], ys.double()[:, :, None], atol=1e-4)
    assert (dense_w.abs() > 1e-3).all(dim=1).float().mean() > 0.95  # the copy is dense
    for name, predict in (
        ("lstsq", baselines.least_squares),
        ("ridge", lambda a, b: baselines.ridge(a, b, 0.1)),
        ("averaging", baselines.averaging),
    ):
        assert torch.allclose(predict(rotated, ys), predict(xs, ys), atol=1e-3), name
    assert torch.allclose(baselines.least_squares(rotated, ys)[:, d:], ys[:, d:], atol=1e-3)  # exact from k = d on
    sparse_error = ((baselines.lasso(xs, ys, 0.01) - ys) ** 2).mean(0)
    dense_error = ((baselines.lasso(rotated, ys, 0.01) - ys) ** 2).mean(0)
    assert (sparse_error[2:] < 0.6 * dense_error[2:]).all(), (sparse_error, dense_error)  # k = 2 .. 2d


def at(profile, w: float, nnz: int, k: int, metric: str = "nmse") -> float:
    rows = profile[
        (profile["task.mix_weight"] == w)
        & (profile["shift_value"] == nnz)
        & (profile["n_context"] == k)
        & (profile["metric"] == metric)
    ]
    assert len(rows) == 1, (w, nnz, k, metric)
    return float(rows["median"].iloc[0])


@pytest.mark.slow
def test_the_mixture_selects_least_squares_or_lasso_and_the_sparse_specialist_fails_on_dense(tmp_path, ray_local):
    from study.tune.runner import run_sweep

    spec = load_sweep_spec(SPEC, SMALLER + [f"store={tmp_path / 'store'}"])
    spec.check_trials()
    run_sweep(spec)
    store = Store(spec.store, create=False)
    trials = store.frame("trials", study=spec.name)
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    final = final_evals(store, spec.name)
    d = icl.dense_dim(final)
    assert d == spec.base["task"]["n_dims"]
    profile = icl.nnz_profile(final)
    k = 2 * d
    dense = {w: at(profile, w, d, k) for w in (0.0, 0.5, 1.0)}
    sparse = {w: at(profile, w, 1, k) for w in (0.0, 0.5, 1.0)}
    lstsq_dense, lasso_sparse = at(profile, 1.0, d, k, "nmse_lstsq"), at(profile, 0.0, 1, k, "nmse_lasso")
    report = f"k={k}: dense prompts {dense} (lstsq {lstsq_dense:.3f}); one-sparse {sparse} (lasso {lasso_sparse:.3f})"
    # the limit: the sparse specialist does not reach least squares on dense prompts
    assert dense[0.0] > 3 * dense[1.0] and dense[0.0] > lstsq_dense + 0.1, report
    # the dense specialist tracks least squares on its own class
    assert dense[1.0] < 0.1, report
    # the sparse specialist is selective: on its own class at most a third of its error on dense
    # prompts, and below what a regressor blind to its prior reaches at k = d (~0.5, the README's
    # table).  Not an absolute 0.1: seed 0 alone at 3,000 steps measured 0.042 on one machine and
    # 0.163 on another (CI, 1 thread; dense 0.78 there), the schedule's end is where this seed is
    # still converging; the README's table gives the 2-seed median.
    assert sparse[0.0] < dense[0.0] / 3 and sparse[0.0] < 0.25, report
    # selection: the mixture is within a small margin of the better specialist on both
    assert dense[0.5] < min(dense[0.0], dense[1.0]) + 0.05, report
    assert sparse[0.5] < min(sparse[0.0], sparse[1.0]) + 0.05, report
    # the spec's claims, checked as `oodstudy check` checks them: the dense specialist and the limit hold
    from analysis.claims import REPRODUCED, check_claims
    from analysis.load import study_frames

    claims = check_claims(spec.expect, *study_frames(store, spec.name), spec.tune.mode)
    assert list(claims["verdict"][:2]) == [REPRODUCED] * 2, claims.to_string()
    # the split labels follow the support: dense prompts are OOD for w = 0, one-sparse for w = 1
    splits = final[final["shift"] == "nnz"].groupby(["task.mix_weight", "shift_value"])["split"].first()
    assert splits[(0.0, float(d))] == "ood" and splits[(1.0, 1.0)] == "ood" and splits[(0.5, 1.0)] == "id"
    # the report draws it: error along nnz per w, and the w x nnz selection gap map
    out = Path(build_report(spec.store, spec.name, tmp_path / "report")).parent
    assert {"nnz_profile.png", "selection_phase.png", "nmse_curves_nnz1.png", f"nmse_curves_nnz{d}.png"} <= {
        p.name for p in out.glob("*.png")
    }
