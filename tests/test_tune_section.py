"""The tune section's key for trials per grid point: ``tune.trials_per_grid_point``, with
``tune.trials_per_cell`` (its first name, from when "cell" meant a grid point) still read."""

from __future__ import annotations

import pytest

from study.config import SweepSpec, load_sweep_spec


def spec(tune: dict) -> SweepSpec:
    return SweepSpec.model_validate({"name": "s", "grid": {"task.digits": [1, 2], "train.seed": [0, 1]}, "tune": tune})


def test_trials_per_grid_point_is_the_quota_of_every_grid_point():
    assert spec({"trials_per_grid_point": 3}).tune.trials_per_grid_point == 3
    assert spec({}).tune.trials_per_grid_point == 1


def test_the_old_key_is_read_as_the_new_one_with_one_line_naming_it(capfd):
    import study.config

    study.config.say_renamed.cache_clear()
    assert spec({"trials_per_cell": 2}).tune.trials_per_grid_point == 2
    assert spec({"trials_per_cell": 4}).tune.trials_per_grid_point == 4  # said once per process, not per spec
    out, err = capfd.readouterr()
    assert out == "" and err.splitlines() == [
        "oodstudy: tune.trials_per_cell is now called tune.trials_per_grid_point (the trials of each grid point, "
        "seeds included); the old name still works: rename it in the spec"
    ]


def test_the_old_key_on_the_command_line_and_in_a_spec_file(tmp_path, capfd):
    import study.config

    study.config.say_renamed.cache_clear()
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ngrid: {task.digits: [1]}\ntune: {trials_per_cell: 2}\n")
    assert load_sweep_spec(path).tune.trials_per_grid_point == 2
    assert load_sweep_spec(path, ["tune.trials_per_cell=5"]).tune.trials_per_grid_point == 5
    assert "tune.trials_per_grid_point" in capfd.readouterr().err


def test_the_old_and_the_new_key_together_are_refused():
    with pytest.raises(ValueError, match="tune.trials_per_cell and tune.trials_per_grid_point are one key"):
        spec({"trials_per_cell": 2, "trials_per_grid_point": 2})


def test_a_study_copy_holds_the_new_key_only():
    dumped = spec({"trials_per_cell": 2}).model_dump()
    assert dumped["tune"]["trials_per_grid_point"] == 2 and "trials_per_cell" not in dumped["tune"]


def test_a_study_copy_written_under_the_old_key_is_still_read():
    """``resume`` and ``status`` read the spec copy a run wrote, perhaps by an older version."""
    old_copy = '{"name": "s", "grid": {"task.digits": [1]}, "tune": {"trials_per_cell": 3}}'
    assert SweepSpec.model_validate_json(old_copy).tune.trials_per_grid_point == 3
