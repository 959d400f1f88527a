"""Threshold search: the psychometric model, the stop rule, the budget, the spec section's
errors, save/restore and resume from records, packs, and one run through a real Tuner."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.config import load_threshold_search

from study.errors import ConfigError
from study.tune.threshold import (
    Record,
    ThresholdSearch,
    credible_interval,
    log_posterior,
    make_model,
    normalize,
    outcome,
    threshold_rows,
)
from study.tune.threshold_searcher import Searcher, ThresholdSearcher

CRITERION = {"metric": "id_exact_match", "op": ">=", "value": 0.9}
TRUE, SLOPE = 0.37, 60.0  # the synthetic curve: P(success | x) = sigmoid(SLOPE * (x - TRUE))


def section(**changes) -> ThresholdSearch:
    data = {
        "axis": "task.mix_weight",
        "low": 0.0,
        "high": 1.0,
        "success": CRITERION,
        "seeds_per_point": 4,
        "tolerance": 0.05,
        "budget": 80,
        **changes,
    }
    return ThresholdSearch.model_validate(data)


def build(point, value, seed):
    """The raw trial of one seed (module level: Tune pickles the searcher with the Tuner)."""
    return {"task": {"mix_weight": value, "digits": point.get("task.digits", 3)}, "train": {"seed": seed}}


def coin(x: float, seed: int, true: float = TRUE, slope: float = SLOPE) -> bool:
    """One seed's success at x: deterministic in (x, seed), P = the logistic."""
    p = 1 / (1 + math.exp(-slope * (x - true)))
    return bool(np.random.default_rng([seed, int(round(x * 1e9))]).random() < p)


def drive(searcher: ThresholdSearcher, coin=coin, limit: int = 1000, start: int = 0) -> list[tuple]:
    """Answer every suggestion at once, like a Tuner with one worker; (x, seed) of every seed trained."""
    trained = []
    for n in range(start, start + limit):
        config = searcher.suggest(f"t{n}")
        if config is Searcher.FINISHED:
            return trained
        assert config is not None
        members = {}
        for m in config["members"]:
            x, seed = m["trial"]["task"]["mix_weight"], m["trial"]["train"]["seed"]
            trained.append((m["grid"].get("task.digits"), x, seed))
            members[m["trial_id"]] = {"id_exact_match": float(coin(x, seed)), "status": "completed"}
        result = next(iter(members.values())) if len(members) == 1 else {"members": members}
        searcher.on_trial_complete(f"t{n}", result)
    raise AssertionError("the search did not finish")


# -- the model


def test_posterior_interval_contains_the_truth_and_narrows_with_data():
    search = section()
    model = make_model(search)
    rng = np.random.default_rng(0)
    widths = []
    for n in (8, 32, 256):
        xs = rng.uniform(0.2, 0.55, n)
        outcomes = [(x, bool(rng.random() < 1 / (1 + math.exp(-SLOPE * (x - TRUE))))) for x in xs]
        mid, lo, hi = credible_interval(model, normalize(log_posterior(model, outcomes)), 0.9)
        assert lo <= TRUE <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.03


def test_the_threshold_is_where_p_equals_the_target_in_either_direction():
    # failures up to 0.6, successes from 0.625 (10 seeds each): the threshold lies near 0.6,
    # a low target's below a high target's when success rises along the axis, above when it falls
    rising = [(x, x > 0.61) for x in np.linspace(0, 1, 41) for _ in range(10)]
    falling = [(x, x < 0.61) for x in np.linspace(0, 1, 41) for _ in range(10)]
    for outcomes, direction in ((rising, "increasing"), (falling, "decreasing")):
        mids = []
        for target in (0.2, 0.5, 0.8):
            model = make_model(section(target=target, direction=direction))
            mid, lo, hi = credible_interval(model, normalize(log_posterior(model, outcomes)), 0.9)
            assert 0.57 <= lo <= mid <= hi <= 0.65, (direction, target, lo, hi)
            mids.append(mid)
        assert mids == sorted(mids, reverse=direction == "decreasing")


def test_outcome_rule():
    criterion = section().success
    assert outcome(criterion, "completed", 0.95) is True
    assert outcome(criterion, "converged", 0.5) is False
    assert outcome(criterion, "diverged", 0.99) is False  # does not train at that point: a failure
    assert outcome(criterion, "completed", float("nan")) is False
    assert outcome(criterion, "pruned", 0.99) is None  # stopped early: says nothing
    assert outcome(criterion, "failed", None) is None
    assert outcome(criterion, "completed", None) is None
    assert outcome(section(success={"metric": "id_nmse", "op": "<=", "value": 0.1}).success, "completed", 0.05) is True


# -- the searcher, driven directly


def test_search_converges_on_the_true_threshold_with_a_fraction_of_a_grid():
    searcher = ThresholdSearcher(section(), [{}], build)
    trained = drive(searcher)
    [row] = searcher.rows()
    assert row["stopped"] == "converged" and row["width"] < 0.05
    assert row["low"] <= TRUE <= row["high"]
    assert row["trials"] == len(trained) <= 84 / 2  # a grid every 0.05 with 4 seeds: 84 (the bench: ~1/4 on average)
    assert row["trials"] % 4 == 0 and row["points"] == len({x for _, x, _ in trained}) <= row["trials"] // 4
    assert len(set(trained)) == len(trained)  # no (point, seed) trained twice


def test_budget_stops_a_cell_that_cannot_converge():
    flat = lambda x, seed: bool(np.random.default_rng([seed, int(x * 1e9)]).random() < 0.5)  # noqa: E731
    searcher = ThresholdSearcher(section(budget=30), [{}], build)
    trained = drive(searcher, coin=flat)
    [row] = searcher.rows()
    assert row["stopped"] == "budget"
    assert row["trials"] == len(trained) == 28  # 7 points of 4; an 8th would exceed 30


def test_cells_are_searched_round_robin_each_with_its_own_threshold():
    truths = {1: 0.25, 2: 0.7}
    searcher = ThresholdSearcher(section(), [{"task.digits": 1}, {"task.digits": 2}], build)

    def by_cell(searcher):
        while (config := searcher.suggest("x")) is not Searcher.FINISHED:
            m = config["members"][0]
            digits, x, seed = m["grid"]["task.digits"], m["trial"]["task"]["mix_weight"], m["grid"]["train.seed"]
            assert m["cell"] == f"task.digits={digits}|task.mix_weight={x}|train.seed={seed}"
            assert config["threshold"]["cell"] == f"task.digits={digits}"
            searcher.on_trial_complete("x", {"id_exact_match": float(coin(x, seed, true=truths[digits]))})

    first = [searcher.suggest(f"s{i}") for i in range(8)]
    assert [c["threshold"]["cell"] for c in first] == ["task.digits=1", "task.digits=2"] * 4  # 4 seeds each
    assert searcher.suggest("s8") is None  # both cells wait for their first point's outcomes
    for i, config in enumerate(first):
        m = config["members"][0]
        x, seed, digits = m["trial"]["task"]["mix_weight"], m["grid"]["train.seed"], m["grid"]["task.digits"]
        searcher.on_trial_complete(f"s{i}", {"id_exact_match": float(coin(x, seed, true=truths[digits]))})
    by_cell(searcher)
    rows = {r["cell"]: r for r in searcher.rows()}
    assert set(rows) == {"task.digits=1", "task.digits=2"}
    for digits, true in truths.items():
        row = rows[f"task.digits={digits}"]
        assert row["low"] <= true <= row["high"] and row["stopped"] == "converged"


def test_packs_carry_a_points_seeds_and_errors_count_toward_the_budget():
    searcher = ThresholdSearcher(section(), [{}], build, pack_size=3)
    first = searcher.suggest("p0")
    second = searcher.suggest("p1")
    assert [m["trial_id"] for m in first["members"]] == ["p0_0", "p0_1", "p0_2"]
    assert [m["grid"]["train.seed"] for m in first["members"] + second["members"]] == [0, 1, 2, 3]
    assert {m["trial"]["task"]["mix_weight"] for m in first["members"] + second["members"]} == {0.5}
    assert first["cell"] == "task.mix_weight=0.5"  # a pack's cell: its point without the seed
    assert searcher.suggest("p2") is None  # the point is out; wait
    searcher.on_trial_complete(
        "p0",
        {
            "members": {
                "p0_0": {"id_exact_match": 1.0, "status": "completed"},
                "p0_1": {"id_exact_match": 0.2, "status": "completed"},
                "p0_2": {"id_exact_match": 0.95, "status": "diverged"},
            }
        },
    )
    searcher.on_trial_complete("p1", None, error=True)
    [row] = searcher.rows()
    assert (row["trials"], row["outcomes"], row["successes"], row["errors"]) == (4, 3, 1, 1)
    nxt = searcher.suggest("p3")["members"]  # the point is back: the next one is out
    seeds = [m["grid"]["train.seed"] for m in nxt]
    assert seeds == ([4, 5, 6] if nxt[0]["trial"]["task"]["mix_weight"] == 0.5 else [0, 1, 2])


def test_an_ordered_list_axis_proposes_its_values_and_reports_the_bracketing_values():
    sizes = ["nano", "micro", "mini", "small", "standard"]
    search = section(axis="model.size", low=None, high=None, values=sizes, tolerance=1, budget=60)
    works = {"nano": 0.0, "micro": 0.0, "mini": 0.1, "small": 0.95, "standard": 1.0}

    def builder(point, value, seed):
        return {"model": {"size": value}, "train": {"seed": seed}}

    searcher = ThresholdSearcher(search, [{}], builder)
    n = 0
    while (config := searcher.suggest(f"t{n}")) is not Searcher.FINISHED:
        size, seed = config["trial"]["model"]["size"], config["trial"]["train"]["seed"]
        assert size in sizes
        success = np.random.default_rng([seed, sizes.index(size)]).random() < works[size]
        searcher.on_trial_complete(f"t{n}", {"id_exact_match": float(success)})
        n += 1
    [row] = searcher.rows()
    assert row["stopped"] == "converged"
    assert 2 <= row["low"] <= row["high"] <= 3 and (row["low_value"], row["high_value"]) == ("mini", "small")


# -- state: save/restore, resume from records


def test_save_restore_continues_exactly_where_it_stopped(tmp_path):
    whole = ThresholdSearcher(section(), [{}], build)
    expected = drive(whole)

    first = ThresholdSearcher(section(), [{}], build)
    trained = []
    for n in range(9):  # 2 points and a seed of the third, answered; the rest of it out
        config = first.suggest(f"t{n}")
        m = config["members"][0]
        trained.append((None, m["trial"]["task"]["mix_weight"], m["trial"]["train"]["seed"]))
        if n < 8:
            first.on_trial_complete(f"t{n}", {"id_exact_match": float(coin(trained[-1][1], trained[-1][2]))})
    first.save(str(tmp_path / "searcher.pkl"))

    second = ThresholdSearcher(section(), [{}], build)
    second.restore(str(tmp_path / "searcher.pkl"))
    second.on_trial_complete("t8", {"id_exact_match": float(coin(trained[-1][1], trained[-1][2]))})  # the one in flight
    trained += drive(second, start=9)
    assert trained == expected
    assert second.rows() == whole.rows()


def test_resume_from_records_proposes_no_finished_point_again():
    whole = ThresholdSearcher(section(), [{}], build)
    expected = drive(whole)
    # the store holds the first three points (12 seeds) and one seed of the fourth, whose others were lost
    done = expected[:13]
    records = [Record("all", x, seed, coin(x, seed)) for _, x, seed in done]
    resumed = ThresholdSearcher(section(), [{}], build, records=records)
    assert resumed.rows()[0]["trials"] == 13
    more = drive(resumed)
    assert not set(more) & set(done)  # nothing retrained
    fourth = expected[12][1]
    assert [(x, s) for _, x, s in more[:4]] != [(fourth, s) for s in range(4)]  # seeds at a revisited point go on
    assert resumed.rows()[0]["stopped"] == "converged"
    assert resumed.rows()[0]["low"] <= TRUE <= resumed.rows()[0]["high"]

    finished = ThresholdSearcher(
        section(), [{}], build, records=[Record("all", x, seed, coin(x, seed)) for _, x, seed in expected]
    )
    assert finished.suggest("z") is Searcher.FINISHED
    assert finished.rows() == whole.rows()


def test_records_with_failures_and_unknown_cells():
    records = [Record("all", 0.5, 0, None), Record("all", 0.5, 1, True), Record("gone", 0.2, 0, True)]
    searcher = ThresholdSearcher(section(), [{}], build, records=records)
    [row] = searcher.rows()
    assert (row["trials"], row["outcomes"], row["errors"]) == (2, 1, 1)
    config = searcher.suggest("a")
    if config["members"][0]["trial"]["task"]["mix_weight"] == 0.5:
        assert config["members"][0]["grid"]["train.seed"] == 2  # seeds 0 and 1 were used there


def test_threshold_rows_have_the_table_columns():
    searcher = ThresholdSearcher(section(), [{}], build)
    [row] = threshold_rows(searcher.search, searcher.cells.values())
    assert set(row) >= {
        "cell",
        "axis",
        "criterion",
        "target",
        "estimate",
        "low",
        "high",
        "level",
        "trials",
        "seeds_per_point",
        "stopped",
    }
    assert row["stopped"] == "searching" and row["trials"] == 0 and row["criterion"] == "id_exact_match >= 0.9"


# -- the spec section's errors


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"budget": 3}, ["threshold.budget=3", "seeds_per_point=4", "at least 4"]),
        ({"values": [1, 2, 3]}, ["either low and high", "or values"]),
        ({"low": None, "high": None, "values": [3]}, ["threshold.values", "at least two"]),
        ({"low": None, "high": None, "values": [4, 2, 3], "tolerance": 1}, ["out of order", "ascending"]),
        ({"low": None, "high": None, "values": [1, 2, 3], "tolerance": 0.5}, ["threshold.tolerance=0.5", "at least 1"]),
        ({"low": 1.0, "high": 0.0}, ["threshold.low=1.0", "below"]),
        ({"high": None}, ["needs both low and high"]),
        ({"low": 0.5, "high": 10.0, "integer": True}, ["whole numbers"]),
        ({"tolerance": 2.0}, ["threshold.tolerance=2", "not narrower than the axis"]),
        ({"target": 1.0}, ["threshold.target=1.0", "between 0 and 1"]),
        ({"interval": 0}, ["threshold.interval", "between 0 and 1"]),
        ({"axis": "train.seed"}, ["threshold.axis=train.seed", "seeds_per_point"]),
        ({"axis": "steps"}, ["not a dotted config key"]),
        ({"seed_per_point": 4}, ["threshold.seed_per_point", "unknown key", "did you mean threshold.seeds_per_point"]),
        ({"success": {"metric": "id_exact_match", "op": ">", "value": 0.9}}, ["threshold.success.op"]),
        ({"budget": True}, ["threshold.budget", "YAML boolean"]),
    ],
)
def test_validation_errors_name_the_field_and_the_fix(changes, words):
    data = {
        "axis": "task.mix_weight",
        "low": 0.0,
        "high": 1.0,
        "success": CRITERION,
        "seeds_per_point": 4,
        "tolerance": 0.05,
        "budget": 80,
        **changes,
    }
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        load_threshold_search(data)
    message = str(err.value)
    assert message.startswith("invalid threshold section: ") and "\n" not in message
    for word in words:
        assert word in message, (word, message)


# -- through a real Tuner


def tune_trainable(config):
    """The synthetic trainable: one report with the seed's outcome as id_exact_match."""
    from ray import tune

    member = config["members"][0]
    x, seed = member["trial"]["task"]["mix_weight"], member["trial"]["train"]["seed"]
    tune.report({"id_exact_match": 1.0 if coin(x, seed) else 0.0, "status": "completed"})


@pytest.mark.slow
def test_a_real_tuner_runs_the_threshold_search(ray_local, tmp_path):
    import sys

    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module

    search = section(budget=48, seeds_per_point=4, tolerance=0.08)
    searcher = ThresholdSearcher(search, [{}], build, study="t")
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True),
        run_config=tune.RunConfig(name="threshold", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    [row] = searcher.rows()
    assert row["low"] <= TRUE <= row["high"]
    assert len(results) == row["trials"] == row["outcomes"] <= search.budget
    assert row["stopped"] in ("converged", "budget")


# -- through `oodstudy run`: spec, searcher, store table, summary, status and resume


QUICKSTART = __import__("pathlib").Path(__file__).resolve().parents[1] / "search_spaces" / "threshold_quickstart.yaml"


@pytest.mark.slow
def test_oodstudy_run_finds_a_threshold_and_stores_it(ray_local, tmp_path, capsys):
    """The shipped threshold quickstart, cut to 9 trials: a real threshold along train.steps
    (the loss of a 1-layer model on 1-digit addition falls below 1.0 at ~50 steps)."""
    from study.cli import main
    from study.store import Store

    store = str(tmp_path / "store")
    argv = [
        "run",
        str(QUICKSTART),
        "--store",
        store,
        "--name",
        "th",
        "--set",
        "threshold.budget=9",
        "--set",
        "threshold.tolerance=40",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = Store(store, create=False).sql("SELECT * FROM thresholds WHERE study = 'th'")
    assert len(rows) == 1  # one row per cell: rewritten rows replaced
    [row] = rows.to_dict("records")
    assert row["cell"] == "all" and row["axis"] == "train.steps" and row["criterion"] == "loss <= 1"
    assert row["low"] <= row["estimate"] <= row["high"]
    assert row["trials"] <= 9 and row["trials"] % 3 == 0 and row["stopped"] in ("converged", "budget")
    assert 2 <= row["estimate"] <= 120
    trials = Store(store, create=False).frame("trials", study="th")
    assert len(trials) == row["trials"] and set(trials["status"]) <= {"completed", "converged"}
    assert "threshold of train.steps where P(loss <= 1) = 0.5: " in out and "(90% interval)" in out
    assert f"{row['trials']} trials, 3 seeds per point, {row['stopped']}" in out

    assert main(["status", "th", "--store", store]) == 0
    status = capsys.readouterr().out
    assert f"threshold search: {row['trials']} trials so far, budget 9 per cell; 1/1 cells stopped" in status
    assert main(["resume", "th", "--store", store]) == 0  # finished: nothing retrained
    assert "every cell's threshold search stopped" in capsys.readouterr().out
    assert len(Store(store, create=False).frame("trials", study="th")) == row["trials"]


def test_resume_records_come_from_the_trials_rows(tmp_path):
    """Without Tune state, a resume rebuilds the search from the store's trials rows: each
    ended trial's grid (cell, axis value, seed) and its outcome from status and score."""
    import json

    from study.config import load_sweep_spec
    from study.store import Store
    from study.tune.runner import threshold_records, threshold_searcher

    spec = load_sweep_spec(QUICKSTART, [f"store={tmp_path / 's'}", "grid.model.d_model=[48, 96]"])
    rows = [
        ("a", {"model.d_model": 48, "train.steps": 61, "train.seed": 0}, "completed", 0.8),
        ("b", {"model.d_model": 48, "train.steps": 61, "train.seed": 1}, "completed", 1.3),
        ("c", {"model.d_model": 96, "train.steps": 61, "train.seed": 0}, "failed", None),
        ("d", {"model.d_model": 96, "train.steps": 61, "train.seed": 1}, "running", 0.5),
    ]
    store = Store(spec.store)
    for trial_id, grid, status, score in rows:
        store.append(
            "trials",
            [{"trial_id": trial_id, "grid": json.dumps(grid), "config": "{}", "status": status, "score": score}],
            study=spec.name,
            cell="x",
        )
    records = sorted(threshold_records(spec))
    assert records == [
        Record("model.d_model=48", 61, 0, True),
        Record("model.d_model=48", 61, 1, False),
        Record("model.d_model=96", 61, 0, None),
    ]
    searcher = threshold_searcher(spec, records)
    by_cell = {r["cell"]: r for r in searcher.rows()}
    assert (by_cell["model.d_model=48"]["outcomes"], by_cell["model.d_model=96"]["errors"]) == (2, 1)
    member = searcher.suggest("t0")["members"][0]
    assert member["trial"]["model"]["d_model"] in (48, 96) and "train" in member["trial"]
