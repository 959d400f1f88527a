"""``oodstudy plan``: its counts are what ``run`` launches, it runs on every shipped spec
(with a tiny calibration), and it refuses a bad spec as ``run`` does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ray.tune.search import Searcher

from study.cli import main
from study.config import SweepSpec, load_sweep_spec
from study.tune import plan
from study.tune.runner import threshold_searcher
from study.tune.search import CellSearcher

SPECS = sorted(Path(__file__).resolve().parent.parent.glob("search_spaces/*.yaml"))
# A tiny calibration: 2 timed steps, and evaluations shrunk (counts do not depend on them).
SMALL_EVAL = {"arithmetic": ["--set", "task.eval_examples=8"], "icl": ["--set", "task.eval_prompts=8"]}


def launched(spec: SweepSpec, journal: str) -> list[tuple[str, int]]:
    """(cell, members) of every Tune trial CellSearcher hands out, until FINISHED."""
    searcher = CellSearcher(spec, journal)
    out = []
    while (config := searcher.suggest(f"t{len(out)}")) is not Searcher.FINISHED:
        out.append((config["cell"], len(config["members"])))
    return out


def threshold_launched(spec: SweepSpec) -> tuple[int, int]:
    """(Tune trials, members) of a threshold search whose every seed fails without an
    outcome, so that no cell converges and each spends its whole budget."""
    searcher = threshold_searcher(spec)
    trials = members = 0
    while True:
        config = searcher.suggest(f"t{trials}")
        if config is Searcher.FINISHED:
            return trials, members
        assert config is not None  # every trial is completed at once: a point never waits
        trials += 1
        members += len(config["members"])
        searcher.on_trial_complete(f"t{trials - 1}", None, error=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_counts_equal_what_run_launches(path, tmp_path):
    spec = load_sweep_spec(path)
    if spec.pack.size == "auto":  # counted at its largest pack (the measure chooses at most that)
        spec = spec.with_pack_size(spec.pack_bound())
    count = plan.counts(spec)
    assert count.grid_points == len(spec.grid_points())
    if spec.threshold is not None:
        assert count.bounded
        assert threshold_launched(spec) == (count.trials, count.members)
        return
    trials = launched(spec, str(tmp_path / "optuna.journal"))
    assert count.trials == len(trials)
    assert count.members == sum(n for _, n in trials)
    assert [(t.cell, t.members) for t in plan.planned_trials(spec)] == trials


def test_counts_of_packs_with_a_remainder(tmp_path):
    """5 seeds x 1 trial per grid point in packs of 2: per cell packs of 2, 2 and 1."""
    spec = load_sweep_spec(
        SPECS[0].parent / "quickstart_icl.yaml", ["grid.train.seed=[0,1,2,3,4]", "grid.task.mix_weight=[0.0,1.0]"]
    )
    trials = launched(spec, str(tmp_path / "optuna.journal"))
    assert sorted(n for _, n in trials) == [1, 1, 2, 2, 2, 2]
    assert [(t.cell, t.members) for t in plan.planned_trials(spec)] == trials
    assert plan.counts(spec).trials == 6 and plan.counts(spec).members == 10
    # the last pack of a cell is a shape of its own (a pack of 1 costs less per step)
    assert sorted(s.cfg.pack.size for s in plan.group_shapes(plan.planned_trials(spec)).values()) == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_plan_runs_on_every_shipped_spec(path, tmp_path, capsys):
    spec = load_sweep_spec(path)
    family = (spec.base.get("task") or {}).get("family", "arithmetic")
    code = main(
        ["plan", str(path), "--store", str(tmp_path / "results"), "--calibrate-steps", "2", *SMALL_EVAL[family]]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    if spec.pack.size == "auto":  # a GPU spec, on this machine without one: costed at K=1
        assert spec.resources.gpus > 0 and "pack.size auto is measured on the trials' GPU" in out
        spec = spec.with_pack_size(1)
    count = plan.counts(spec)
    trials_line = next(line for line in out.splitlines() if line.strip().startswith("Tune trials"))
    assert re.search(rf"\b{count.trials}\b", trials_line), trials_line
    assert not (tmp_path / "results").exists()  # planning writes no store
    if spec.resources.gpus > 0:  # this machine has no GPU: counts and memory, no time
        assert "no calibration: the trials take a GPU" in out
        assert "total: not estimated" in out
    else:
        total = next(line for line in out.splitlines() if line.startswith("total:"))
        assert re.match(r"total: (about|at most) \d", total), total
        assert "trials at a time" in total or "trial at a time" in total
        assert "s/step" in out and "est. per trial" in out
    if spec.threshold is not None:
        assert "at most" in trials_line and "no fixed count" in out


@pytest.mark.slow
def test_quickstart_plan_table(tmp_path, capsys):
    path = SPECS[0].parent / "quickstart.yaml"
    assert (
        main(
            [
                "plan",
                str(path),
                "--calibrate-steps",
                "3",
                "--store",
                str(tmp_path / "r"),
                "--set",
                "task.eval_examples=8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "grid points  4" in out and "members      4" in out and "Tune trials  4" in out
    assert "memory" in out and "the available RAM: fits" in out
    rows = [line for line in out.splitlines() if line.strip().startswith("arithmetic nano")]
    assert len(rows) == 2  # digits 2 and 3: two shapes, each of 2 trials (seeds and lr share a shape)
    assert all(re.search(r"\s2\s+4000 \(4 evals\)", row) for row in rows), rows
    assert "2 trials at a time" in out  # max_concurrent 2, 1 CPU per trial


def test_a_bad_spec_is_refused_as_run_refuses_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase: {model: {size: nano, n_head: 5}}\ngrid: {train.seed: [0, 1]}\n")
    lines = {}
    for command in ("run", "plan"):
        assert main([command, str(bad), "--store", str(tmp_path / "results")]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("oodstudy:") == 1 and "Traceback" not in err, err
        lines[command] = err.strip()
    assert lines["plan"] == lines["run"]
    assert "n_head" in lines["plan"]
    # an oversized pack and a store that is a file: the same words as run's
    too_big = ["--set", "pack.size=8"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for extra in (too_big, ["--store", str(a_file)]):
        args = [str(SPECS[0].parent / "quickstart_icl.yaml"), *extra]
        codes = [main([command, *args]) for command in ("run", "plan")]
        err_run, err_plan = [e for e in capsys.readouterr().err.strip().splitlines() if e.startswith("oodstudy:")]
        assert codes == [2, 2] and err_run == err_plan, (err_run, err_plan)
    assert main(["plan", str(SPECS[0].parent / "quickstart.yaml"), "--calibrate-steps", "0"]) == 2


def test_slots_and_asha():
    spec = load_sweep_spec(SPECS[0].parent / "quickstart.yaml")
    two = plan.Machine("m", 2, 0, [{"CPU": 2, "GPU": 0}])
    assert plan.slots(spec, two) == 2
    assert plan.slots(spec.model_copy(update={"max_concurrent": 1}), two) == 1
    wide = plan.Machine("c", 16, 2, [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}])
    gpu = spec.model_copy(
        update={"max_concurrent": 0, "resources": spec.resources.model_copy(update={"cpus": 2, "gpus": 0.25})}
    )
    assert plan.slots(gpu, wide) == 8  # 4 per node by GPU share, 4 by CPUs
    assert plan.schedule_seconds([10, 10, 10], 2) == 20
    asha = load_sweep_spec(SPECS[0].parent / "arithmetic_breakdown.yaml")  # grace 4, factor 3, 20 evals
    assert plan.asha_rungs(asha, 20) == [4, 12]
    assert plan.asha_kept_share(asha, 20) == pytest.approx((4 + 8 / 3 + 8 / 9) / 20)
