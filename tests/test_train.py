"""One trial end to end: exact resume, divergence, schedules, and the published findings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from study.config import TrainConfig, trial_config
from study.train import Report, summarize, train
from references import lr_at

TINY = [
    "task.digits=2",
    "task.width=3",
    "task.eval_max_len=3",
    "task.eval_examples=32",
    "task.train_fraction=0.2",
    "model.n_layer=2",
    "train.steps=30",
    "train.eval_every=10",
    "train.batch_size=16",
    "train.log_every=5",
]


@pytest.mark.slow
def test_a_run_stopped_and_restored_ends_with_the_same_weights_and_metrics():
    cfg = trial_config(overrides=TINY)
    uninterrupted: list[Report] = []
    train(cfg, report=uninterrupted.append)

    first_leg: list[Report] = []
    train(trial_config(overrides=TINY + ["train.steps=30"]), report=first_leg.append)
    checkpoint = next(r.state for r in first_leg if r.step == 20)
    resumed: list[Report] = []
    result = train(cfg, restore=checkpoint, report=resumed.append)

    assert [r.step for r in resumed] == [30] and result.status == "completed"
    final_a, final_b = uninterrupted[-1].state["model"], resumed[-1].state["model"]
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    assert uninterrupted[-1].rows["evals"] == resumed[-1].rows["evals"]
    assert uninterrupted[-1].metrics == resumed[-1].metrics


@pytest.mark.slow
def test_reports_carry_rows_for_every_table_and_checkpoints_on_schedule():
    cfg = trial_config(overrides=TINY + ["train.checkpoint_every=20"])
    reports: list[Report] = []
    train(cfg, trial_id="t1", report=reports.append)
    assert [r.step for r in reports] == [10, 20, 30]
    assert [r.state is not None for r in reports] == [False, True, True]  # every 20 steps and at the end
    assert [r.status for r in reports] == ["running", "running", "completed"] and reports[-1].done
    evals = reports[0].rows["evals"]
    assert {row["trial_id"] for row in evals} == {"t1"} and {row["step"] for row in evals} == {10}
    assert {(row["len_a"], row["len_b"]) for row in evals} == {(a, b) for a in range(1, 4) for b in range(1, 4)}
    assert {row["split"] for row in evals if max(row["len_a"], row["len_b"]) == 3} == {"ood"}
    curves = reports[0].rows["curves"]
    assert sorted({row["step"] for row in curves}) == [5, 10]
    assert {row["metric"] for row in curves} == {"loss", "lr", "grad_norm", "examples_per_s"}
    assert reports[0].rows["representations"] and reports[-1].n_params > 0


@pytest.mark.slow
@pytest.mark.parametrize("family", ["arithmetic", "icl"])
def test_the_trainer_tells_the_probes_the_step_of_each_evaluation(family):
    """Probes due every 20 steps, evaluations every 10: scored rows at 20 and the end only."""
    extra = (
        ["task.family=icl", "task.n_dims=3", "task.n_points=5", "task.eval_prompts=16", "task.probes.prompts=32"]
        if family == "icl"
        else ["task.probes.points=32"]
    )
    overrides = (TINY if family == "arithmetic" else [o for o in TINY if o.startswith(("model.", "train."))]) + extra
    reports: list[Report] = []
    train(trial_config(overrides=overrides + ["task.probes.every=20", "train.steps=40"]), report=reports.append)
    scored = [r.step for r in reports if any("value" in row for row in r.rows["representations"])]
    assert [r.step for r in reports] == [10, 20, 30, 40] and scored == [20, 40]


def test_a_diverging_run_stops_with_status_diverged():
    cfg = trial_config(overrides=TINY + ["train.lr=1e9", "train.grad_clip=null"])
    reports: list[Report] = []
    result = train(cfg, report=reports.append)
    assert result.status == "diverged" and result.steps < 30
    assert reports[-1].status == "diverged" and reports[-1].done


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(lr=1.0, steps=110, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(50, TrainConfig(lr=0.3, steps=100)) == 0.3


def test_summary_averages_each_metric_per_split_and_skips_nan():
    rows = [
        {"split": "id", "metric": "exact_match", "value": 1.0},
        {"split": "id", "metric": "exact_match", "value": 0.5},
        {"split": "ood", "metric": "exact_match", "value": 0.0},
        {"split": "ood", "metric": "equivalence_of_wrong", "value": float("nan")},
    ]
    assert summarize(rows) == {"id_exact_match": 0.75, "ood_exact_match": 0.0}


def test_trial_cli_json_prints_config_metrics_and_rows():
    out = subprocess.run(
        [sys.executable, "-m", "study.cli", "trial", "--json", *sum((["--set", o] for o in TINY), [])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "completed" and result["config"]["task"]["digits"] == 2
    assert "id_exact_match" in result["metrics"]
    assert {"trial_id", "step", "split", "metric", "value", "len_a", "len_b"} <= set(result["eval_rows"][0])


def test_trial_cli_refuses_a_bad_key_before_training():
    out = subprocess.run(
        [sys.executable, "-m", "study.cli", "trial", "--set", "model.n_heads=4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "model.n_heads: unknown key; did you mean model.n_head?" in out.stderr
    assert "step" not in out.stderr  # nothing trained


@pytest.mark.slow
def test_nano_addition_is_perfect_in_distribution_and_equivalent_out_of_distribution():
    """Trained on 3-digit addition: ~100% ID, ~0% on 4 digits, and the answers are
    f(a mod 1000, b mod 1000) (Xu, Pan, Zhang, Yang, 2023, arXiv 2308.08268)."""
    torch.set_num_threads(2)
    cfg = trial_config(
        overrides=[
            "train.steps=5000",
            "train.eval_every=5000",
            "train.lr=1e-3",
            "task.eval_max_len=4",
            "task.eval_examples=256",
        ]
    )
    result = train(cfg)
    rows = {(r["len_a"], r["len_b"], r["metric"]): r["value"] for r in result.eval_rows}
    id_exact = [rows[(a, b, "exact_match")] for a in range(1, 4) for b in range(1, 4)]
    assert sum(id_exact) / len(id_exact) >= 0.95
    four_digit = [(4, b) for b in range(1, 5)] + [(a, 4) for a in range(1, 4)]
    assert max(rows[(a, b, "exact_match")] for a, b in four_digit) <= 0.05
    assert sum(rows[(a, b, "equivalence")] for a, b in four_digit) / len(four_digit) > 0.6


@pytest.mark.slow
def test_small_model_learns_dense_linear_regression_in_context():
    """In context, the model beats averaging and approaches least squares once k >= 2d
    (Garg, Tsipras, Liang, Valiant, 2022, arXiv 2208.01066)."""
    torch.set_num_threads(2)
    d, n_points = 3, 10
    cfg = trial_config(
        overrides=[
            "task.family=icl",
            f"task.n_dims={d}",
            f"task.n_points={n_points}",
            "task.eval_prompts=512",
            "task.baselines=[lstsq, averaging]",
            "model.size=micro",
            "model.n_layer=3",
            "model.dropout=0.0",
            "train.steps=2000",
            "train.eval_every=2000",
            "train.lr=5e-4",
            "train.warmup_steps=200",
            "train.weight_decay=0.0",
        ]
    )
    result = train(cfg)
    curve = {(r["metric"], r["n_context"]): r["value"] for r in result.eval_rows}
    assert curve[("nmse_lstsq", d)] < 1e-3  # the baseline itself: exact once k >= d
    for k in range(2 * d, n_points):
        assert curve[("nmse", k)] < 0.5 * curve[("nmse_averaging", k)], k
        assert curve[("nmse", k)] < 0.15, k
    assert curve[("nmse", 1)] < curve[("nmse_averaging", 1)]


def test_the_trial_command_imports_no_ray_optuna_or_duckdb():
    """`oodstudy trial` runs where only torch, pydantic, pyyaml, pandas and pyarrow are installed (a GPU box)."""
    code = (
        "import sys\n"
        "from study.cli import build_parser\n"
        "build_parser().parse_args(['trial', '--set', 'pack.size=2'])\n"
        "from study.config import load_trial_config\n"
        "load_trial_config(None, ['pack.size=2'])\n"
        "import study.memory, study.train, study.cli.trial\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', 'duckdb'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
