"""The threshold search in the analysis (issue 25): the outcomes rebuilt from the trials rows,
the searcher's posterior along the axis, the cells' axes, the loader, the figures and the
report's "Threshold search" section, on hand-made frames and a study written through the
real store by the searcher's own pure functions (no Ray, no training)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load, plots
from analysis import thresholds as th
from study.config import grid_point_id, load_sweep_spec
from study.store import Store
from study.tune.threshold import (
    CellState,
    Record,
    ThresholdSearch,
    make_model,
    outcome,
    propose,
    rebuild_cells,
    stop_reason,
    threshold_rows,
)

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "threshold_quickstart.yaml"
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
TRUE = {48: 40.0, 96: 70.0}  # the synthetic threshold of train.steps per model.d_model
SLOPE = 0.25  # per step


def coin(steps: int, seed: int, true: float) -> float:
    """One seed's final loss at ``steps``: below 1.0 (a success) with the logistic's probability."""
    p = 1 / (1 + math.exp(-SLOPE * (steps - true)))
    return 0.5 if np.random.default_rng([seed, int(steps)]).random() < p else 1.5


def trial_row(trial_id: str, grid: dict, status: str, score: float | None, n: int) -> dict:
    return {
        "trial_id": trial_id,
        "grid": json.dumps(grid),
        "config": json.dumps(
            {
                "task": {"family": "arithmetic", "op": "add", "digits": 1},
                "model": {"size": "nano", "d_model": grid.get("model.d_model", 64)},
                "train": {"steps": grid["train.steps"], "seed": grid["train.seed"]},
            }
        ),
        "status": status,
        "score": score,
        "start_time": T0 + dt.timedelta(seconds=10 * n),
        "end_time": T0 + dt.timedelta(seconds=10 * n + 8),
        "node": "n0",
        "device": "cpu",
        "n_params": 1000,
        "steps": grid["train.steps"],
        "error": "boom" if status == "failed" else None,
    }


def build_threshold(
    store: Store, study: str = "th", d_models: tuple[int, ...] = (48, 96), evals: bool = False, spec_copy: bool = True
) -> dict[str, CellState]:
    """A threshold study as `oodstudy run search_spaces/threshold_quickstart.yaml` writes it,
    with a grid over model.d_model: the searcher's pure functions propose the points, a
    logistic coin with threshold TRUE[d_model] decides each seed's loss; the first cell's
    second seed failed (no outcome, counted) and its third seed of the first point diverged
    (a failure).  Writes the trials rows, the thresholds rows (an early one per cell, then
    the final one) and the spec copy; ``evals``: each trial's final exact match too (the
    arithmetic sections).  Returns the cells' states as the searcher left them."""
    from study.tune.runner import write_spec_copy

    overrides = [f"store={store.uri}", f"name={study}"] + ([f"grid.model.d_model={list(d_models)}"] if d_models else [])
    spec = load_sweep_spec(QUICKSTART, overrides)
    search = spec.threshold
    model = make_model(search)
    states = rebuild_cells(search, spec.grid_points())
    n = 0
    for state in states.values():
        true = TRUE.get(state.point.get("model.d_model"), 55.0)
        while (stopped := stop_reason(search, model, state)) is None:
            t = propose(search, model, state)
            first = state.seeds_at.get(t, 0)
            state.seeds_at[t] = first + search.seeds_per_point
            state.points.append(t) if t not in state.points else None
            for seed in range(first, first + search.seeds_per_point):
                value = search.value_at(t)
                grid = {**state.point, search.axis: value, "train.seed": seed}
                status, score = "completed", coin(value, seed, true)
                if n == 1:
                    status, score = "failed", None
                elif n == 2:
                    status, score = "diverged", float("nan")
                ok = outcome(search.success, status, score)
                state.trials += 1
                if ok is None:
                    state.errors += 1
                else:
                    state.outcomes.append((t, ok))
                store.append(
                    "trials", [trial_row(f"t{n:03d}", grid, status, score, n)], study=study, cell=grid_point_id(grid)
                )
                if evals and status == "completed":
                    from test_analysis import arith_rows

                    em = 1.0 if ok else 0.2
                    store.append(
                        "evals",
                        arith_rows(f"t{n:03d}", int(value), 1, {x: em / 4 for x in range(2, 8)}, em, metrics=False),
                        study=study,
                        cell=grid_point_id(grid),
                    )
                n += 1
            if len(state.points) == 1:  # an early row, replaced by the final one
                [row] = threshold_rows(search, [state])
                store.append(
                    "thresholds", [row], study=study, attempt=row["outcomes"] + row["errors"], cell=row["cell"]
                )
        state.stopped = stopped
    for row in threshold_rows(search, states.values()):
        store.append("thresholds", [row], study=study, attempt=row["outcomes"] + row["errors"], cell=row["cell"])
    if spec_copy:
        write_spec_copy(spec)
    return states


def section(**changes) -> ThresholdSearch:
    data = {
        "axis": "train.steps",
        "low": 0,
        "high": 100,
        "integer": True,
        "success": {"metric": "loss", "op": "<=", "value": 1.0},
        "seeds_per_point": 2,
        "tolerance": 10,
        "budget": 20,
        **changes,
    }
    return ThresholdSearch.model_validate(data)


def raw_trials(rows: list[tuple]) -> pd.DataFrame:
    """Raw trials rows (grid JSON, status, score, start_time) from (grid, status, score)."""
    return pd.DataFrame(
        [
            {"grid": json.dumps(g), "status": s, "score": v, "start_time": T0 + dt.timedelta(seconds=i)}
            for i, (g, s, v) in enumerate(rows)
        ]
    )


# -- pure functions on hand-made frames


def test_records_rebuild_each_ended_seed_as_a_resume_does():
    search = section()
    trials = raw_trials(
        [
            ({"model.d_model": 48, "train.steps": 61, "train.seed": 0}, "completed", 0.8),
            ({"model.d_model": 48, "train.steps": 61, "train.seed": 1}, "completed", 1.3),
            ({"model.d_model": 96, "train.steps": 61, "train.seed": 0}, "failed", None),
            ({"model.d_model": 96, "train.steps": 61, "train.seed": 1}, "running", 0.5),  # not ended: left out
            ({"model.d_model": 96, "train.steps": 30, "train.seed": 0}, "diverged", float("nan")),
            ({"model.d_model": 96, "train.seed": 0}, "completed", 0.5),  # no axis in its grid: left out
        ]
    )
    assert th.records(trials, search) == [
        Record("model.d_model=48", 61, 0, True),
        Record("model.d_model=48", 61, 1, False),
        Record("model.d_model=96", 61, 0, None),
        Record("model.d_model=96", 30, 0, False),
    ]
    assert th.records(trials.iloc[:0], search) == []
    # one cell (no other grid axis): "all"
    alone = raw_trials([({"train.steps": 10, "train.seed": 0}, "completed", 0.1)])
    assert th.records(alone, search) == [Record("all", 10, 0, True)]


def test_the_records_rule_is_the_resumes():
    """The same trials rows through the runner's resume (store read) and through the frame."""
    from study.tune.runner import threshold_records

    spec = load_sweep_spec(QUICKSTART, ["grid.model.d_model=[48, 96]"])
    trials = raw_trials(
        [
            ({"model.d_model": 48, "train.steps": 61, "train.seed": 0}, "completed", 0.8),
            ({"model.d_model": 96, "train.steps": 61, "train.seed": 0}, "failed", None),
            ({"model.d_model": 96, "train.steps": 20, "train.seed": 1}, "pruned", 0.5),
        ]
    )

    class FakeStore:
        def __init__(self, *args, **kwargs):
            pass

        def frame(self, table, study=None):
            return trials

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("study.store.Store", FakeStore)
        assert threshold_records(spec) == th.records(trials, spec.threshold)


def test_cell_point_round_trips_the_cell_id():
    for point in ({}, {"model.d_model": "48"}, {"model.size": "nano", "task.digits": "3", "lr": "1e-3"}):
        assert th.cell_point(grid_point_id(point)) == point
    assert th.cell_point("all") == {}


def test_cell_states_and_curves_follow_the_outcomes():
    """Failures below 40 and successes above: the fitted P(success) rises through the target
    near 40, is low at the bottom of the axis and high at the top; the rebuilt state counts
    the failed seed as a trial without an outcome."""
    search = section()
    rows = []
    for steps, wins in ((20, 0), (30, 0), (50, 2), (70, 2), (40, 1)):
        for seed in range(2):
            rows.append(({"train.steps": steps, "train.seed": seed}, "completed", 0.5 if seed < wins else 1.5))
    rows.append(({"train.steps": 90, "train.seed": 0}, "failed", None))
    trials = raw_trials(rows)
    table = pd.DataFrame({"cell": ["all"], "stopped": ["converged"]})
    states = th.cell_states(search, table, trials)
    state = states["all"]
    assert (state.trials, len(state.outcomes), state.errors, state.stopped) == (11, 10, 1, "converged")
    assert sorted(state.points) == [20, 30, 40, 50, 70, 90]
    curve = th.curves(search, states, n=101)
    assert list(curve.columns) == ["cell", "position", "p_success"] and len(curve) == 101
    assert curve["position"].iloc[0] == 0 and curve["position"].iloc[-1] == 100
    p = curve.set_index("position")["p_success"]
    assert p.loc[0] < 0.1 and p.loc[100] > 0.9 and p.is_monotonic_increasing
    crossing = float(np.interp(search.target, p.to_numpy(), p.index.to_numpy()))
    [row] = threshold_rows(search, [state])
    assert abs(crossing - row["estimate"]) < 5 and row["low"] < crossing < row["high"]
    seeds = th.outcomes(search, trials)
    assert len(seeds) == 10 and seeds["success"].sum() == 5 and set(seeds["cell"]) == {"all"}
    assert th.outcomes(search, trials, cells=["model.d_model=48"]).empty


def test_curves_of_a_decreasing_search_and_an_ordered_list():
    search = section(direction="decreasing")
    state = CellState(id="all", point={}, outcomes=[(10, True), (10, True), (90, False), (90, False)])
    p = th.curves(search, {"all": state}, n=11)["p_success"].to_numpy()
    assert p[0] > 0.5 > p[-1]
    ordered = section(low=None, high=None, integer=False, values=["nano", "micro", "mini", "small"], tolerance=1)
    state = CellState(id="all", point={}, outcomes=[(0, False), (0, False), (3, True), (3, True)])
    curve = th.curves(ordered, {"all": state}, n=7)
    assert curve["position"].tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3]
    assert th.axis_ticks(ordered) == ["nano", "micro", "mini", "small"] and th.axis_ticks(search) is None
    trials = raw_trials([({"train.steps": "mini", "train.seed": 0}, "completed", 0.1)])
    ordered_steps = section(low=None, high=None, integer=False, values=["nano", "micro", "mini"], tolerance=1)
    assert th.outcomes(ordered_steps, trials)["position"].tolist() == [2.0]


def test_cell_axes_parse_numbers_and_keep_names():
    table = pd.DataFrame(
        {
            "cell": [
                "model.d_model=48|model.size=nano",
                "model.d_model=96|model.size=micro",
                "model.d_model=128|model.size=nano",
            ],
            "estimate": [1.0, 2.0, 3.0],
        }
    )
    cells, axes = th.cell_axes(table)
    assert axes == ["model.d_model", "model.size"]
    assert cells["model.d_model"].tolist() == [48, 96, 128] and pd.api.types.is_integer_dtype(cells["model.d_model"])
    assert cells["model.size"].tolist() == ["nano", "micro", "nano"]
    mixed, _ = th.cell_axes(pd.DataFrame({"cell": ["task.mix_weight=0.5", "task.mix_weight=1e-3"]}))
    assert mixed["task.mix_weight"].tolist() == [0.5, 0.001]
    alone, axes = th.cell_axes(pd.DataFrame({"cell": ["all"]}))
    assert axes == [] and list(alone.columns) == ["cell"]


# -- the figures


def threshold_table(cells=("all",), **changes) -> pd.DataFrame:
    rows = [
        {
            "cell": c,
            "axis": "train.steps",
            "criterion": "loss <= 1",
            "target": 0.5,
            "estimate": 40.0 + 10 * i,
            "low": 32.0 + 10 * i,
            "high": 47.0 + 10 * i,
            "level": 0.9,
            "stopped": "converged" if i else "budget",
            **changes,
        }
        for i, c in enumerate(cells)
    ]
    return pd.DataFrame(rows)


def test_threshold_curves_draw_the_fit_the_seeds_and_the_band():
    table = threshold_table(["model.d_model=48", "model.d_model=96"])
    curves = pd.DataFrame(
        {
            "cell": ["model.d_model=48"] * 3 + ["model.d_model=96"] * 3,
            "position": [0, 50, 100] * 2,
            "p_success": [0.02, 0.6, 0.98, 0.01, 0.4, 0.97],
        }
    )
    seeds = pd.DataFrame(
        {"cell": ["model.d_model=48"] * 4, "position": [30, 30, 60, 60], "success": [False, False, True, True]}
    )
    fig = plots.threshold_curves(curves, seeds, table)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["model.d_model=48", "model.d_model=96"]
    dots = panels[0].collections[0].get_offsets()
    assert len(dots) == 4 and all(0 <= y <= 0.06 or 0.94 <= y <= 1 for _, y in dots)
    assert sorted(round(y) for _, y in dots) == [0, 0, 1, 1]
    band = panels[0].patches[0]
    assert (band.get_x(), band.get_x() + band.get_width()) == (32.0, 47.0)
    assert panels[0].get_ylabel() == "P(loss <= 1)" and panels[0].get_xlabel() == "train.steps"
    assert plots.clipped_texts(fig) == []
    # an interval reaching past the axis is drawn whole
    wide = plots.threshold_curves(curves, seeds, threshold_table(["all"], low=-8.0, high=104.0))
    lo, hi = wide.axes[0].get_xlim()
    assert lo < -8 and hi > 104
    # an ordered list: its values as ticks
    listed = plots.threshold_curves(
        curves.assign(position=[0, 1, 2] * 2),
        seeds.assign(position=[0, 0, 2, 2]),
        threshold_table(["all"], estimate=1.2, low=0.6, high=1.8),
        values=["nano", "micro", "mini"],
    )
    assert [t.get_text() for t in listed.axes[0].get_xticklabels()] == ["nano", "micro", "mini"]
    assert plots.clipped_texts(listed) == []


def test_threshold_phase_lines_against_the_other_axes():
    table = threshold_table([f"model.d_model={d}|model.size={s}" for s in ("nano", "micro") for d in (48, 96, 128)])
    cells, axes = th.cell_axes(table)
    fig = plots.threshold_phase(cells, "model.d_model", hue="model.size")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model size = nano", "model size = micro"]
    assert "by model.d_model and model size" in " ".join(fig._suptitle.get_text().split())
    assert plots.clipped_texts(fig) == []
    categorical = plots.threshold_phase(cells, "model.size", values=["a", "b", "c"])
    assert [t.get_text() for t in categorical.axes[0].get_xticklabels()] == ["nano", "micro"]
    assert [t.get_text() for t in categorical.axes[0].get_yticklabels()] == ["a", "b", "c"]


# -- the loader and the report, through the real store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(str(tmp_path_factory.mktemp("store")), create=True)
    build_threshold(s, "th")
    build_threshold(s, "lone", d_models=(), spec_copy=False)
    return s


def test_the_loader_reads_the_table_the_spec_copy_and_the_trials(store):
    found = load.thresholds(store, "th")
    assert list(found.table["cell"]) == ["model.d_model=48", "model.d_model=96"]  # the newest row per cell
    assert "study" not in found.table and "written_at" not in found.table
    assert found.search.axis == "train.steps" and found.search.low == 2 and found.search.high == 120
    assert set(found.trials.columns) == {"grid", "status", "score", "start_time"}
    assert load.thresholds(store, "lone").search is None  # no spec copy


def test_the_rebuilt_posterior_is_the_stored_one(store):
    """The outcomes rebuilt from the trials rows give back the table's estimate and interval
    exactly: the report draws the searcher's own fit."""
    found = load.thresholds(store, "th")
    states = th.cell_states(found.search, found.table, found.trials)
    rebuilt = pd.DataFrame(threshold_rows(found.search, states.values()))
    columns = ["cell", "estimate", "low", "high", "trials", "outcomes", "successes", "errors", "points", "stopped"]
    pd.testing.assert_frame_equal(rebuilt[columns], found.table[columns], check_dtype=False)
    first = states["model.d_model=48"]
    assert first.errors == 1 and first.trials == found.table["trials"].iloc[0]
    # the true thresholds lie inside the intervals
    for row in found.table.to_dict("records"):
        assert row["low"] <= TRUE[int(row["cell"].split("=")[1])] <= row["high"], row


def test_the_report_section(store, tmp_path):
    from analysis.report import build_report

    index = build_report(store, "th", tmp_path / "th")
    text = index.read_text()
    headings = re.findall(r'<h2 id="([^"]+)"', text)
    assert headings[:2] == ["threshold-search", "overview"]
    part = text[text.index('id="threshold-search"') : text.index('id="overview"')]
    found = load.thresholds(store, "th")
    for row in found.table.to_dict("records"):
        assert (
            f"{row['cell']}: threshold of train.steps where P(loss &lt;= 1) = 0.5: " in part
            and f"(90% interval), {row['trials']} trials, 3 seeds per point, {row['stopped']}" in part
        )
    assert 'alt="threshold_curves"' in part and 'alt="threshold_phase"' in part
    assert 'href="thresholds.csv"' in part and 'href="threshold_outcomes.csv"' in part
    csv = pd.read_csv(tmp_path / "th" / "thresholds.csv")
    assert list(csv["cell"]) == list(found.table["cell"]) and np.allclose(csv["estimate"], found.table["estimate"])
    seeds = pd.read_csv(tmp_path / "th" / "threshold_outcomes.csv")
    assert len(seeds) == found.table["outcomes"].sum()
    # one cell, no spec copy: the lines and the table, no curve, no phase diagram, a note why
    lone = build_report(store, "lone", tmp_path / "lone").read_text()
    part = lone[lone.index('id="threshold-search"') : lone.index('id="overview"')]
    assert "threshold of train.steps where P(loss &lt;= 1) = 0.5: " in part and "spec copy" in part
    assert "<img" not in part and 'href="thresholds.csv"' in part


def test_a_study_without_thresholds_renders_as_before(store, tmp_path):
    """No thresholds rows: no section, no figure, no CSV of it (the rest is the report's own)."""
    from analysis.report import build_report
    from test_analysis import add_trial

    for seed in (0, 1):
        add_trial(
            store,
            "plain_grid",
            f"g{seed}",
            {"model.size": "nano", "train.seed": seed},
            {"task": {"family": "arithmetic"}, "model": {"size": "nano"}, "train": {"seed": seed}},
        )
    assert load.thresholds(store, "plain_grid") is None
    text = build_report(store, "plain_grid", tmp_path / "grid").read_text()
    assert 'id="threshold-search"' not in text and "threshold_" not in text
    assert not list((tmp_path / "grid").glob("threshold*"))
