"""Packs: K members trained at once, each exactly what it would be alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from study.config import ConfigError, ModelConfig, TrainConfig, TrialConfig, trial_config
from study.model import Transformer
from study.tasks.base import ModelIO
from study.train import PackReport, lr_schedule, pack_members, train, train_pack
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
NO_DROPOUT = TINY + ["model.dropout=0.0"]
TINY_ICL = [
    "task.family=icl",
    "task.n_dims=3",
    "task.n_points=6",
    "task.eval_prompts=16",
    "task.baselines=[lstsq]",
    "model.n_layer=2",
    "model.dropout=0.0",
    "train.steps=30",
    "train.eval_every=10",
    "train.batch_size=16",
    "train.log_every=5",
]
FORMATS = {
    "padded": NO_DROPOUT,
    "unpadded": NO_DROPOUT + ["task.pad=false", "task.symbols=true"],  # members' batches differ in length
    "icl": TINY_ICL,
    "dropout": TINY,  # model.dropout=0.1: each member draws its masks from its own generator
    "icl_dropout": TINY_ICL + ["model.dropout=0.1"],
}


def member(seed: int, *extra: str, base: list[str] = NO_DROPOUT) -> TrialConfig:
    return trial_config(overrides=base + [f"train.seed={seed}", *extra])


def with_lr(cfg: TrialConfig, lr: float) -> TrialConfig:
    """A copy with another learning rate, set as a sweep would pass it (0 is not a valid config value,
    so it is set without validation: the trainer takes each member's lr as given)."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": lr})})


def run_pack(members: list[TrialConfig], **kwargs) -> tuple[list, list[PackReport]]:
    reports: list[PackReport] = []
    results = train_pack(members, [f"m{k}" for k in range(len(members))], report=reports.append, **kwargs)
    return results, reports


def final_weights(reports: list[PackReport], k: int) -> dict[str, torch.Tensor]:
    state = next(r.state for r in reversed(reports) if r.state is not None)
    return {name: value[k] for name, value in state["model"].items()}


def assert_same_values(rows_a: list[dict], rows_b: list[dict], atol: float = 1e-4) -> None:
    assert [{k: v for k, v in r.items() if k != "value"} for r in rows_a] == [
        {k: v for k, v in r.items() if k != "value"} for r in rows_b
    ]
    for a, b in zip(rows_a, rows_b):
        assert a["value"] == pytest.approx(b["value"], abs=atol, nan_ok=True), (a, b)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_packed_member_trains_as_the_same_seed_alone(fmt):
    base = FORMATS[fmt]
    alone_reports = []
    alone = train(member(1, base=base), trial_id="m1", report=alone_reports.append)
    results, reports = run_pack([member(0, base=base), member(1, base=base), member(2, base=base)])

    packed = results[1]
    assert packed.status == alone.status == "completed" and packed.steps == alone.steps == 30
    assert_same_values(packed.eval_rows, alone.eval_rows)
    assert packed.metrics == pytest.approx(alone.metrics, abs=1e-4)
    solo_weights, packed_weights = alone_reports[-1].state["model"], final_weights(reports, 1)
    for name, value in solo_weights.items():
        torch.testing.assert_close(packed_weights[name], value[0], atol=1e-5, rtol=1e-4)
    # and the members are really different models
    assert not torch.allclose(final_weights(reports, 0)["read_out.weight"], packed_weights["read_out.weight"])
    if "dropout" in fmt:  # and dropout really dropped
        _, plain = run_pack([member(1, base=base + ["model.dropout=0.0"])])
        assert not torch.allclose(final_weights(plain, 0)["read_out.weight"], packed_weights["read_out.weight"])


@pytest.mark.slow
def test_every_member_reports_its_own_rows_under_its_own_trial_id():
    results, reports = run_pack([member(0), member(1)])
    assert [r.step for r in reports] == [10, 20, 30] and [r.state is not None for r in reports] == [True] * 3
    for pack_report in reports:
        assert [m.trial_id for m in pack_report.members] == ["m0", "m1"]
        for m in pack_report.members:
            for table in ("evals", "curves", "representations"):
                assert m.rows[table] and {row["trial_id"] for row in m.rows[table]} == {m.trial_id}
    assert [m.status for m in reports[-1].members] == ["completed", "completed"]
    assert [r.trial_id for r in results] == ["m0", "m1"]


@pytest.mark.slow
def test_a_member_with_learning_rate_zero_does_not_move_and_the_others_do():
    results, reports = run_pack([member(0), with_lr(member(1), 0.0), with_lr(member(2), 2e-3)])
    start = Transformer(ModelConfig(n_layer=2, dropout=0.0), ModelIO(10, 10, True, 9), seeds=[1])
    frozen, moving = final_weights(reports, 1), final_weights(reports, 2)
    for name, value in start.state_dict().items():
        assert torch.equal(frozen[name], value[0]), name
    assert not torch.equal(moving["read_out.weight"], final_weights(reports, 0)["read_out.weight"])
    curves = {m.trial_id: [r["value"] for r in m.rows["curves"] if r["metric"] == "lr"] for m in reports[-1].members}
    assert curves == {"m0": pytest.approx([5e-4] * 2), "m1": [0.0, 0.0], "m2": pytest.approx([2e-3] * 2)}


@pytest.mark.slow
def test_a_diverging_member_is_frozen_and_reported_while_the_others_go_on():
    unclipped = ["train.grad_clip=null"]
    alone = train(member(0, *unclipped), trial_id="m0")
    results, reports = run_pack([member(0, *unclipped), member(1, *unclipped, "train.lr=1e9")])

    assert results[1].status == "diverged" and results[1].steps < 30
    diverged_reports = [m for r in reports for m in r.members if m.trial_id == "m1" and m.done]
    assert len(diverged_reports) == 1 and diverged_reports[0].status == "diverged"
    assert all(m.trial_id == "m0" for r in reports if r.step > diverged_reports[0].step + 5 for m in r.members)
    assert results[0].status == "completed" and results[0].steps == 30
    assert_same_values(results[0].eval_rows, alone.eval_rows)


@pytest.mark.slow
def test_a_restored_pack_finishes_bit_identical_to_an_uninterrupted_one():
    members = [trial_config(overrides=TINY + [f"train.seed={s}"]) for s in (3, 4, 5)]  # with dropout
    members[2] = with_lr(members[2], 2e-3)
    uninterrupted, whole = run_pack(members)
    _, first_leg = run_pack(members)
    checkpoint = next(r.state for r in first_leg if r.step == 20)
    resumed, second_leg = run_pack(members, restore=checkpoint)

    assert [r.step for r in second_leg] == [30]
    for name, value in whole[-1].state["model"].items():
        assert torch.equal(value, second_leg[-1].state["model"][name]), name
    for a, b in zip(whole[-1].members, second_leg[-1].members):
        assert a.rows["evals"] == b.rows["evals"] and a.metrics == b.metrics
        assert [r for r in a.rows["curves"] if r["metric"] != "examples_per_s"] == [
            r for r in b.rows["curves"] if r["metric"] != "examples_per_s"
        ]
    assert [r.status for r in resumed] == [r.status for r in uninterrupted] == ["completed"] * 3


@pytest.mark.slow
def test_stop_when_ends_members_as_converged_after_enough_evaluations():
    stop = ["train.stop_when={metric: loss, at_most: 1000.0, for_evals: 2}"]
    results, reports = run_pack([member(0, *stop), member(1, *stop)])
    assert [r.step for r in reports] == [10, 20]  # nothing after both converged
    assert [m.status for m in reports[0].members] == ["running", "running"]
    assert [m.status for m in reports[1].members] == ["converged", "converged"]
    assert [(r.status, r.steps) for r in results] == [("converged", 20), ("converged", 20)]
    assert results[0].eval_rows and {row["step"] for row in results[0].eval_rows} == {20}


def test_stop_when_refuses_a_metric_the_task_does_not_report():
    with pytest.raises(ConfigError, match="train.stop_when.metric='id_nmse' is not a summary metric"):
        trial_config(overrides=TINY + ["train.stop_when={metric: id_nmse, at_most: 0.1}"])
    with pytest.raises(ConfigError, match="exactly one of at_least"):
        trial_config(overrides=TINY + ["train.stop_when={metric: loss}"])


def test_a_pack_refuses_members_that_differ_in_anything_but_seed_and_tuned_training_values():
    with pytest.raises(ConfigError, match=r"pack members differ in model.size \('nano' vs 'micro'\)"):
        train_pack([member(0), member(1, "model.size=micro")])
    with pytest.raises(ConfigError, match="pack members differ in train.steps"):
        train_pack([member(0), member(1, "train.steps=40")])
    with pytest.raises(ConfigError, match="pack.size"):
        trial_config(overrides=["pack.size=0"])


def test_pack_members_of_a_trial_config_are_consecutive_seeds():
    members = pack_members(trial_config(overrides=["pack.size=3", "train.seed=7"]))
    assert [m.train.seed for m in members] == [7, 8, 9]


def test_per_member_schedule_matches_the_single_member_schedule():
    cfg = TrainConfig(lr=1.0, steps=110, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    peaks, warmups = torch.tensor([1.0, 0.5, 2.0]), torch.tensor([10, 0, 30])
    for step in (0, 5, 9, 10, 29, 30, 60, 109, 110):
        expected = [
            lr_at(step, cfg.model_copy(update={"lr": float(p), "warmup_steps": int(w)})) for p, w in zip(peaks, warmups)
        ]
        assert lr_schedule(step, peaks, warmups, cfg).tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_trial_cli_trains_a_pack_of_seeds_and_prints_every_member():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            "trial",
            "--json",
            "--set",
            "pack.size=2",
            *sum((["--set", o] for o in TINY), []),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [m["config"]["train"]["seed"] for m in result["members"]] == [0, 1]
    assert [m["status"] for m in result["members"]] == ["completed", "completed"]
    assert result["members"][0]["metrics"] != result["members"][1]["metrics"]


EVAL_FORMATS = {
    "padded": NO_DROPOUT,
    "unpadded": NO_DROPOUT + ["task.pad=false", "task.symbols=true"],
    "coupled": NO_DROPOUT + ["model.pos_encoding=coupled", "model.max_position=12", "task.symbols=true"],
    "icl": TINY_ICL,
}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(EVAL_FORMATS))
def test_pack_evaluation_equals_member_by_member_evaluation(fmt):
    from study.tasks import build_task
    from study.config import TASK_POSITION_SCHEMES

    members = [member(seed, base=EVAL_FORMATS[fmt]) for seed in (0, 1, 2)]
    mc = members[0].model
    scheme = mc.pos_encoding if mc.pos_encoding in TASK_POSITION_SCHEMES else None
    tasks = [
        build_task(m.task, seed=m.train.seed, position_scheme=scheme, max_position=mc.max_position) for m in members
    ]
    model = Transformer(mc, tasks[0].io, n_members=3, seeds=[0, 1, 2]).eval()
    with torch.no_grad():  # decisive logits: an untrained model's near-ties would make argmax a coin toss
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 3:
                p.mul_(20.0)
    alone = [task.evaluate(model.member(k)) for k, task in enumerate(tasks)]
    packed = type(tasks[0]).evaluate_pack(tasks, model)
    assert len(packed) == 3
    for k in range(3):
        assert_same_values(packed[k], alone[k], atol=1e-6)
    assert [r["value"] for r in packed[0]] != [r["value"] for r in packed[1]]  # members differ
    some = type(tasks[0]).evaluate_pack([tasks[0], tasks[2]], model.members([0, 2]))  # a sub-pack: the running ones
    assert_same_values(some[1], alone[2], atol=1e-6)


@pytest.mark.parametrize("pos_encoding", ["learned", "alibi", "rope"])
def test_the_explicit_attention_of_dropout_training_equals_the_fused_kernel(pos_encoding):
    from study.model import CausalSelfAttention

    torch.manual_seed(0)
    attention = CausalSelfAttention(2, 48, 3, 1e-9, pos_encoding, 16, [])  # dropout > 0: the explicit path
    for p in attention.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 5, 11, 48)
    explicit = attention.train()(x)
    fused = attention.eval()(x)  # scaled_dot_product_attention
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
