"""The naming rules of study.naming: each name the service gives is made by one function."""

from __future__ import annotations

import subprocess
import sys

import pytest

from study.naming import (
    MAX_CORNER_SETS,
    TRIALS_FIELDS,
    cell_id,
    cell_of_point_id,
    corner_sets,
    grid_point_id,
    is_seed_axis,
    summary_metric,
    trials_row,
)


def test_a_grid_point_id_names_every_axis_in_order_and_no_grid_is_all():
    assert grid_point_id({"model.size": "nano", "train.seed": 0}) == "model.size=nano|train.seed=0"
    assert grid_point_id({}) == "all"


def test_a_summary_metric_is_the_split_then_the_metric():
    assert summary_metric("id", "exact_match") == "id_exact_match"
    assert summary_metric("ood", "nmse") == "ood_nmse"


def test_seed_axes_are_the_axes_whose_last_part_is_seed_or_seeds():
    assert is_seed_axis("train.seed") and is_seed_axis("task.seed") and is_seed_axis("x.seeds")
    assert not is_seed_axis("tune.seed_offset") and not is_seed_axis("model.size") and not is_seed_axis("seeded")


def test_a_cell_is_its_grid_point_without_the_seed_axes():
    point = {"task.digits": 2, "train.seed": 1, "model.size": "nano"}
    assert cell_id(point) == "task.digits=2|model.size=nano"
    assert cell_id({"train.seed": 3}) == "all"
    assert cell_of_point_id(grid_point_id(point)) == cell_id(point)
    assert cell_of_point_id("all") == "all" and cell_of_point_id("train.seed=0") == "all"
    assert cell_of_point_id("task.digits=2|train.steps=60|train.seed=0", without=("train.steps",)) == "task.digits=2"


class Range:
    def __init__(self, *corners):
        self._corners = list(corners)

    def corners(self):
        return self._corners


def test_corner_sets_are_the_product_of_the_tuned_corners_in_order_at_most_sixteen():
    assert corner_sets({}) == [{}]
    assert corner_sets({"train.lr": Range(1e-4, 1e-2), "train.warmup_steps": Range(0, 10)}) == [
        {"train.lr": 1e-4, "train.warmup_steps": 0},
        {"train.lr": 1e-4, "train.warmup_steps": 10},
        {"train.lr": 1e-2, "train.warmup_steps": 0},
        {"train.lr": 1e-2, "train.warmup_steps": 10},
    ]
    many = corner_sets({f"axis{i}": Range(0, 1) for i in range(6)})  # 64 combinations
    assert len(many) == MAX_CORNER_SETS and many[0] == {f"axis{i}": 0 for i in range(6)}


def test_a_trials_row_has_every_column_its_writer_fills_and_refuses_others():
    row = trials_row(trial_id="t1", grid="{}", config="{}", status="running", steps=0)
    assert list(row) == list(TRIALS_FIELDS)
    assert row["status"] == "running" and row["steps"] == 0 and row["score"] is None and row["end_time"] is None
    with pytest.raises(TypeError, match="'cell'"):
        trials_row(trial_id="t1", cell="all")


def test_the_trials_fields_are_the_stores_trials_columns_less_those_the_store_adds():
    from study.store.schema import TABLES

    added = ("study", "attempt", "cell", "written_at")
    assert TRIALS_FIELDS == tuple(n for n in TABLES["trials"].names if n not in added)


def test_the_naming_module_imports_nothing_heavy():
    code = (
        "import sys, study.naming; heavy = {'torch', 'pyarrow', 'pandas', 'ray', 'optuna', 'pydantic'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
