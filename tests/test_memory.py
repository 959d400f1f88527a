"""The memory estimate refuses trials that cannot fit, naming the field that drives
them, and accepts every shipped spec on a laptop-sized budget."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest

from study.config import ConfigError, TrialConfig, load_sweep_spec, trial_config
from study.memory import check_fits, driving_field, estimate_trial_memory, pack_size

GIB = 2**30
LAPTOP = 8 * GIB  # every shipped CPU spec must fit a trial in this
GPU = 80 * GIB  # an H100: a GPU spec's trial must fit its resources.gpus share of one
SPECS = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["task.eval_examples=10000000000"], "task.eval_examples"),
        (["model.d_model=1000000", "model.n_head=4"], "model.d_model"),
        (["task.family=icl", "task.n_dims=10000000"], "task.n_dims"),
        (["train.batch_size=1000000000"], "train.batch_size"),
        (["task.family=icl", "train.batch_size=100000"], "train.batch_size"),
        (["task.eval_examples=10000000", "task.eval_batch_size=100000000"], "task.eval_examples"),
        (["model.n_layer=100000"], "model.n_layer"),
    ],
)
def test_trials_that_cannot_fit_are_refused_naming_the_field_that_drives_them(overrides, field):
    cfg = trial_config({}, overrides)
    with pytest.raises(ConfigError, match=rf"{field}=\d+ drives it") as err:
        check_fits(cfg, 64 * GIB, "the available RAM")
    assert "the available RAM is 64.0 GiB" in str(err.value) and f"lower {field}" in str(err.value)


def test_every_shipped_spec_fits_a_laptop():
    """A CPU spec fits a laptop; a GPU spec (resources.gpus > 0) its share of an 80 GiB GPU."""
    checked = 0
    for path in SPECS:
        spec = load_sweep_spec(path)  # every shipped spec validates
        budget = LAPTOP if spec.resources.gpus == 0 else spec.resources.gpus * GPU
        corners = [
            dict(zip(spec.tune.params, combo))
            for combo in itertools.product(*(d.corners() for d in spec.tune.params.values()))
        ] or [{}]
        for point in spec.grid_points():
            for params in corners:
                cfg = TrialConfig.model_validate(spec.trial_raw(point, params))
                assert check_fits(cfg, budget, "a laptop or GPU share").total < budget, (path.name, point, params)
                checked += 1
    assert checked > 100


def test_the_parameter_term_bounds_the_real_model_closely():
    from study.model import Transformer
    from study.tasks import build_task

    for overrides in (
        [],
        ["model.size=micro", "task.width=8", "task.eval_max_len=8"],
        ["task.family=icl", "task.n_dims=10", "task.n_points=21"],
    ):
        cfg = trial_config({}, overrides)
        real = Transformer(cfg.model, build_task(cfg.task, seed=0).io).n_params()
        estimated = estimate_trial_memory(cfg).parts["weights, gradients and AdamW state"] / 16
        assert real <= estimated <= 1.15 * real, (overrides, real, estimated)


def test_the_estimate_grows_with_each_size_field_and_a_pack_multiplies_the_model_terms():
    base = trial_config()
    for overrides in (
        ["train.batch_size=128"],
        ["task.eval_examples=1024"],
        ["model.size=micro"],
        ["task.eval_batch_size=8192"],
    ):
        assert estimate_trial_memory(trial_config({}, overrides)).total > estimate_trial_memory(base).total
    packed = base.model_copy(update={"pack": SimpleNamespace(size=4)})
    assert pack_size(base) == 1 and pack_size(packed) == 4
    one, four = estimate_trial_memory(base).parts, estimate_trial_memory(packed).parts
    assert four["weights, gradients and AdamW state"] == 4 * one["weights, gradients and AdamW state"]
    assert four["evaluation sets"] == one["evaluation sets"]  # one task, shared by the pack
    assert driving_field(base) is None  # nothing but defaults: no field to blame


def test_the_estimate_reads_the_tasks_own_vocabulary_sequence_and_conditions():
    """Index hints add a hint letter before every digit (sequences twice as long, up to 52
    more symbols): the parameter term still bounds the real model, and the activation term
    grows with the real sequence.  A diagonal evaluation grid holds L conditions, not L^2."""
    from study.model import Transformer
    from study.tasks import build_task

    hinted = trial_config(
        {}, ["task.index_hints=true", "task.pad=true", "task.width=20", "task.eval_max_len=20", "task.digits=5"]
    )
    # the real model's size: its io depends on neither the evaluation nor the training set, so build a light task
    light = hinted.task.model_copy(
        update={
            "eval_examples": 4,
            "train_set": "fresh",
            "probes": hinted.task.probes.model_copy(update={"enabled": False}),
        }
    )
    real = Transformer(hinted.model, build_task(light, seed=0).io).n_params()
    assert real <= estimate_trial_memory(hinted).parts["weights, gradients and AdamW state"] / 16 <= 1.15 * real
    plain = trial_config({}, ["task.pad=true", "task.width=20", "task.eval_max_len=20", "task.digits=5"])
    assert (
        estimate_trial_memory(hinted).parts["training activations"]
        > 1.5 * estimate_trial_memory(plain).parts["training activations"]
    )
    square = trial_config({}, ["task.width=20", "task.eval_max_len=20", "task.digits=5"])
    diagonal = trial_config({}, ["task.width=20", "task.eval_max_len=20", "task.digits=5", "task.eval_grid=diagonal"])
    ratio = (
        estimate_trial_memory(square).parts["evaluation sets"]
        / estimate_trial_memory(diagonal).parts["evaluation sets"]
    )
    assert ratio == pytest.approx(20, rel=0.01)  # 400 conditions against 20
    # a probed forward keeps every block's attention weights: 40-digit hinted sequences at the
    # default evaluation batch need tens of GiB (measured: killed at 23 GiB), probes off none of it
    wide = [
        "model.size=micro",
        "task.width=40",
        "task.index_hints=true",
        "task.pad=true",
        "task.digits=10",
        "task.train_set=fresh",
        "task.eval_lengths=[10,40]",
        "task.eval_grid=diagonal",
    ]
    assert estimate_trial_memory(trial_config({}, wide)).parts["probe activations"] > 16 * GIB
    assert estimate_trial_memory(trial_config({}, wide + ["task.probes.enabled=false"])).parts["probe activations"] == 0
