"""The driver callbacks on the results Tune hands them, without a Tuner: a pack's trial as
CellSearcher suggests it, held by a real Tune ``Trial``, with results shaped as the trainable
reports them (``members`` and ``rows`` by member id)."""

from __future__ import annotations

import copy

from ray.tune.experiment import Trial

from study.config import SweepSpec
from study.store import Store
from study.tune.callbacks import ForgetRows, StoreCallback, StudyGauges, best_scores, grid_point_progress
from study.tune.search import CellSearcher

POINTS = [f"task.digits=1|train.seed={seed}" for seed in (0, 1)]


def pack_spec(store: str) -> SweepSpec:
    """One cell (task.digits=1) of two seeds, one trial per grid point, trained as one pack of 2."""
    return SweepSpec.model_validate(
        {
            "name": "packed",
            "base": {
                "task": {"digits": 1, "width": 3, "eval_max_len": 3},
                "model": {"size": "nano", "n_layer": 1},
                "train": {"steps": 20, "eval_every": 10},
            },
            "grid": {"task.digits": [1], "train.seed": [0, 1]},
            "tune": {"metric": "id_exact_match", "mode": "max"},
            "pack": {"size": 2},
            "store": store,
        }
    )


def pack_trial(spec: SweepSpec, journal: str) -> Trial:
    config = CellSearcher(spec, journal).suggest("p1")
    return Trial("fake", config=config, trial_id="p1", stub=True)


def pack_result(step: int, scores: dict[str, float], speeds: dict[str, float], status: str = "running") -> dict:
    """A pack's report: its best member's metrics on top, each member's summary and new rows."""
    members = {
        mid: {"id_exact_match": score, "step": step, "status": status, "n_params": 100, "device": "cpu", "node": "n1"}
        for mid, score in scores.items()
    }
    rows = {
        mid: {
            "curves": [
                {"trial_id": mid, "step": step, "metric": "loss", "value": 1.0},
                {"trial_id": mid, "step": step, "metric": "examples_per_s", "value": speeds[mid]},
            ]
        }
        for mid in scores
    }
    best = max(members.values(), key=lambda m: m["id_exact_match"])
    return {**best, "status": status, "step": step, "members": members, "rows": rows, "training_iteration": step // 10}


class Recorded:
    """Stands in for a ray.util.metrics Gauge: the last value set per tag set."""

    def __init__(self) -> None:
        self.values: dict[tuple, float] = {}

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.values[tuple(sorted(tags.items()))] = value


def recorded_gauges(spec: SweepSpec) -> StudyGauges:
    gauges = StudyGauges(spec)
    gauges._gauges = {
        name: Recorded()
        for name in ("oodstudy_cells", "oodstudy_trials", "oodstudy_best_score", "oodstudy_examples_per_second")
    }
    return gauges


def run_pack(tmp_path, name: str, order: str) -> tuple[dict, dict]:
    """Drive the gauges and the store writer through a pack's life, handing each callback the
    same result dict as Tune does, in the given order; return the gauges and the stored rows."""
    (tmp_path / name).mkdir()
    spec = pack_spec(str(tmp_path / name / "store"))
    trial = pack_trial(spec, str(tmp_path / name / "journal"))
    gauges, store = recorded_gauges(spec), StoreCallback(spec.store, spec.name, spec.tune.metric)
    callbacks = [gauges, store] if order == "gauges first" else [store, gauges]
    ids = [m["trial_id"] for m in trial.config["members"]]
    speeds = {ids[0]: 100.0, ids[1]: 50.0}
    trial.set_status(Trial.RUNNING)
    for c in callbacks:
        c.on_trial_start(iteration=0, trials=[trial], trial=trial)
    results = [
        pack_result(10, {ids[0]: 0.5, ids[1]: 0.25}, speeds),
        pack_result(20, {ids[0]: 0.75, ids[1]: 0.5}, speeds, status="completed"),
    ]
    speed_seen = []
    for result in results:
        for c in callbacks:
            c.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)
        trial.update_last_result(result)  # what Tune does once every callback has had the result
        speed_seen.append(dict(gauges.gauges["oodstudy_examples_per_second"].values))
    trial.set_status(Trial.TERMINATED)
    for c in callbacks:
        c.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    gauges.publish([trial])
    frames = {table: Store(spec.store, create=False).frame(table, study=spec.name) for table in ("trials", "curves")}
    stored = {
        table: frame.drop(columns=["written_at", "start_time", "end_time"], errors="ignore")
        .sort_values(list(frame.columns[:3]))
        .reset_index(drop=True)
        .to_dict("records")
        for table, frame in frames.items()
    }
    seen = {name: dict(g.values) for name, g in gauges.gauges.items() if name != "oodstudy_examples_per_second"}
    return {"gauges": seen, "speeds": speed_seen}, stored


def test_the_callbacks_read_the_result_in_either_order_to_the_same_store_and_gauges(tmp_path):
    gauges_first, stored_first = run_pack(tmp_path, "a", "gauges first")
    store_first, stored_second = run_pack(tmp_path, "b", "store first")
    assert stored_first == stored_second
    assert len(stored_first["curves"]) == 8 and {r["status"] for r in stored_first["trials"]} == {"completed"}
    assert gauges_first == store_first
    assert all(v == 150.0 for v in store_first["speeds"][0].values())  # both members' examples/s, summed


def test_only_forget_rows_changes_a_result_and_it_takes_out_only_the_rows(tmp_path):
    spec = pack_spec(str(tmp_path / "store"))
    trial = pack_trial(spec, str(tmp_path / "journal"))
    ids = [m["trial_id"] for m in trial.config["members"]]
    result = pack_result(10, {ids[0]: 0.5, ids[1]: 0.25}, {ids[0]: 1.0, ids[1]: 1.0})
    before = copy.deepcopy(result)
    trial.set_status(Trial.RUNNING)
    for c in (recorded_gauges(spec), StoreCallback(spec.store, spec.name, spec.tune.metric)):
        c.on_trial_start(iteration=0, trials=[trial], trial=trial)
        c.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)
    assert result == before
    ForgetRows().on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)
    assert result == {k: v for k, v in before.items() if k != "rows"}


def test_the_gauges_of_a_pack_give_each_grid_point_its_own_best_score_and_progress(tmp_path):
    """A pack trains the seeds of one cell; Tune records each member's metric under
    ``members/<id>/<metric>``.  The best score gauge is per grid point (as its description and
    cluster/README.md say), not the pack's best member under the pack's seedless cell."""
    spec = pack_spec(str(tmp_path / "store"))
    trial = pack_trial(spec, str(tmp_path / "journal"))
    ids = [m["trial_id"] for m in trial.config["members"]]
    assert [m["cell"] for m in trial.config["members"]] == POINTS and trial.config["cell"] == "task.digits=1"
    trial.set_status(Trial.RUNNING)
    trial.update_last_result(pack_result(10, {ids[0]: 0.5, ids[1]: 0.25}, {ids[0]: 1.0, ids[1]: 1.0}))
    trial.update_last_result(pack_result(20, {ids[0]: 0.75, ids[1]: 0.5}, {ids[0]: 1.0, ids[1]: 1.0}))
    assert best_scores([trial], "id_exact_match", "max") == {POINTS[0]: 0.75, POINTS[1]: 0.5}
    assert best_scores([trial], "id_exact_match", "min") == {POINTS[0]: 0.5, POINTS[1]: 0.25}
    assert grid_point_progress([trial], n_points=2, quota=1) == {"total": 2, "done": 0, "running": 2, "pending": 0}
    trial.set_status(Trial.TERMINATED)
    assert grid_point_progress([trial], n_points=2, quota=1) == {"total": 2, "done": 2, "running": 0, "pending": 0}
