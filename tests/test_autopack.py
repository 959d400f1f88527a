"""pack: {size: auto}: the pack size measured before the run, chosen, bounded, stored."""

from __future__ import annotations

import json

import pytest

from study.config import ConfigError, SweepSpec, TrialConfig
from study.store import Store
from study.tune import autopack
from study.tune.plan import Calibration
from study.tune.runner import read_spec_copy, run_sweep
from test_pack_sweep import LR, pack_spec


def auto_spec(tmp_path, **fields) -> SweepSpec:
    """Four seeds of one cell, one trial each, pack size auto (the pack tests' tiny trial)."""
    tune = {"metric": "id_exact_match", "mode": "max", "trials_per_grid_point": 1, "params": LR}
    defaults = {"grid": {"train.seed": [0, 1, 2, 3]}, "tune": tune, "pack": {"size": "auto"}}
    return pack_spec(tmp_path, "auto", **{**defaults, **fields})


def test_candidate_sizes_double_up_to_the_bound_and_end_at_it():
    assert autopack.candidate_sizes(1) == [1]
    assert autopack.candidate_sizes(2) == [1, 2]
    assert autopack.candidate_sizes(6) == [1, 2, 4, 6]
    assert autopack.candidate_sizes(8) == [1, 2, 4, 8]


def test_the_walk_takes_a_pack_only_while_it_raises_the_rate_per_model():
    assert autopack.choose_size({1: 10.0, 2: 15.0, 4: 20.0, 8: 21.0}) == 4  # 8 gains 5%: not taken
    assert autopack.choose_size({1: 10.0, 2: 10.5}) == 1
    assert autopack.choose_size({1: 10.0, 2: 8.0, 4: 30.0}) == 1  # the walk ends at the first shortfall
    assert autopack.choose_size({1: 10.0, 2: 11.5, 4: 12.0}) == 2  # 4 is compared with the best taken, 2
    assert autopack.choose_size({1: 10.0}) == 1
    with pytest.raises(ValueError):
        autopack.choose_size({})


def test_auto_is_a_pack_size_until_measured_and_bounded_by_the_cell(tmp_path):
    spec = auto_spec(tmp_path)
    assert spec.pack.size == "auto" and spec.pack_bound() == 4
    with pytest.raises(ValueError, match="auto and not yet measured"):
        spec.pack_size
    chosen = spec.with_pack_size(2)
    assert chosen.pack_size == 2 and chosen.pack.automatic
    trial = TrialConfig.model_validate(chosen.trial_raw(chosen.grid_points()[0], {}))
    assert (trial.pack.size, trial.pack.automatic) == (2, True)  # stored with each trial
    single = TrialConfig.model_validate(spec.with_pack_size(1).trial_raw(spec.grid_points()[0], {}))
    assert (single.pack.size, single.pack.automatic) == (1, True)
    assert SweepSpec.model_validate_json(chosen.model_dump_json()).pack_size == 2  # the spec copy keeps K

    tuned_arch = {"model.dropout": {"type": "uniform", "low": 0.0, "high": 0.2}}
    assert auto_spec(tmp_path, tune={"trials_per_grid_point": 2, "params": tuned_arch}).pack_bound() == 1
    assert auto_spec(tmp_path, grid={"train.seed": [0, 1]}).pack_bound() == 2
    with pytest.raises(ConfigError, match=r"pack.size=5 is larger than the 4 members a cell holds.*or auto"):
        auto_spec(tmp_path, pack={"size": 5})
    for bad in (0, -1, 2.5, "big", None):
        with pytest.raises(ValueError, match="give a whole number of members, at least 1"):
            SweepSpec.model_validate({"name": "x", "pack": {"size": bad}})


def fake_calibration(step_s: dict[int, float], measured: list[int]):
    """Seconds per pack step by K, as a device would give them (the timing, not the choice)."""

    def calibrate(cfg: TrialConfig, **_) -> Calibration:
        measured.append(cfg.pack.size)
        return Calibration(step_s[cfg.pack.size], 0.0, 0.0, 1, "cpu", 1)

    return calibrate


def test_the_walk_stops_at_the_first_pack_that_does_not_pay_and_measures_no_further(tmp_path):
    measured: list[int] = []
    # per model: K=1 10/s, K=2 16/s, K=4 17/s (+6%: not taken)
    steps = {1: 0.1, 2: 0.125, 4: 4 / 17, 8: 0.1}
    spec = auto_spec(tmp_path, grid={"train.seed": list(range(8))})
    choice = autopack.measure(
        spec, memory_budget=2**40, device="cpu", threads=1, calibrate=fake_calibration(steps, measured)
    )
    assert measured == [1, 2, 4] and choice.size == 2 and choice.bound == 8
    assert choice.shapes[0].rates == pytest.approx({1: 10.0, 2: 16.0, 4: 17.0})
    assert "K=4 raised the rate per model by less than 1.10x" in choice.lines()[0]
    assert choice.lines()[-1].startswith("pack.size auto -> 2 (at most 8")


def test_a_pack_that_does_not_fit_the_memory_share_is_not_measured(tmp_path):
    from study.memory import estimate_trial_memory

    measured: list[int] = []
    spec = auto_spec(tmp_path)
    first = TrialConfig.model_validate(spec.with_pack_size(2).trial_raw(spec.grid_points()[0], {}))
    two = estimate_trial_memory(first).total
    choice = autopack.measure(
        spec, memory_budget=two, device="cpu", threads=1, calibrate=fake_calibration({1: 0.2, 2: 0.1}, measured)
    )
    assert measured == [1, 2] and choice.size == 2  # 4 would not fit: never trained
    assert "K=4 would not fit" in choice.shapes[0].stopped


def test_several_shapes_take_the_smallest_choice(tmp_path):
    measured: list[int] = []
    spec = auto_spec(tmp_path, grid={"task.digits": [1, 2], "train.seed": [0, 1, 2, 3]})
    calls = {"n": 0}

    def calibrate(cfg: TrialConfig, **_) -> Calibration:
        calls["n"] += 1
        measured.append(cfg.pack.size)
        # digits 1 packs well (4 members at the time of 1); digits 2 gains nothing from packs
        step = 0.1 if cfg.task.digits == 1 else 0.1 * cfg.pack.size
        return Calibration(step, 0.0, 0.0, 1, "cpu", 1)

    choice = autopack.measure(spec, memory_budget=2**40, device="cpu", threads=1, calibrate=calibrate)
    assert [s.size for s in choice.shapes] == [4, 1] and choice.size == 1
    assert measured == [1, 2, 4, 1, 2]


@pytest.mark.slow
def test_a_run_with_auto_measures_the_pack_stores_it_with_each_trial_and_resumes_with_it(tmp_path, ray_local, capsys):
    spec = auto_spec(tmp_path)
    results = run_sweep(spec)
    printed = capsys.readouterr().out
    assert "pack.size auto: measuring packs of up to 4 members" in printed
    line = next(x for x in printed.splitlines() if x.startswith("pack.size auto -> "))
    chosen = int(line.split()[3])
    assert 1 <= chosen <= 4
    copy = read_spec_copy("auto", spec.store)
    assert copy.pack_size == chosen and copy.pack.automatic  # resume reads this copy
    trials = Store(spec.store, create=False).frame("trials", study="auto")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    packs = {(json.loads(c)["pack"]["size"], json.loads(c)["pack"]["automatic"]) for c in trials["config"]}
    assert packs == {(chosen, True)}
    assert sum(len(r.config["members"]) for r in results) == 4


@pytest.mark.slow
def test_plan_measures_auto_and_counts_the_packs_it_chose(tmp_path, capsys):
    import yaml

    from study.cli import main

    path = tmp_path / "auto.yaml"
    spec = auto_spec(tmp_path)
    path.write_text(yaml.safe_dump(json.loads(spec.model_dump_json(exclude_defaults=True))))
    assert main(["plan", str(path), "--calibrate-steps", "2"]) == 0
    out = capsys.readouterr().out
    chosen = int(next(x for x in out.splitlines() if x.startswith("pack.size auto -> ")).split()[3])
    assert 1 <= chosen <= 4
    assert f"Tune trials  {-(-4 // chosen)}" in out  # 4 members (seeds) in packs of the chosen size
    assert f"K={chosen} " in out
