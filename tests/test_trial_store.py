"""``oodstudy trial --store``: every run adds a trial of its own to its study, and never
writes into a study a sweep owns."""

from __future__ import annotations

from study.cli import main
from study.config import SweepSpec
from study.store import Store
from study.tune.runner import write_spec_copy

SHORT = [
    "--set",
    "train.steps=20",
    "--set",
    "train.eval_every=10",
    "--set",
    "task.eval_examples=16",
    "--set",
    "task.probes.enabled=false",
    "--set",
    "task.eval_max_len=4",
]


def test_two_trials_into_one_study_keep_both(tmp_path, capsys):
    store = str(tmp_path / "results")
    for _ in range(2):
        assert main(["trial", *SHORT, "--store", store, "--study", "one"]) == 0
    capsys.readouterr()
    trials = Store(store, create=False).frame("trials", study="one")
    assert len(trials) == 2 and trials["trial_id"].str.startswith("local-").all()
    evals = Store(store, create=False).frame("evals", study="one")
    assert set(evals["trial_id"]) == set(trials["trial_id"])  # each trial's rows under its own id


def test_a_trial_is_refused_in_a_sweeps_study(tmp_path, capsys):
    spec = SweepSpec.model_validate({"name": "sweep", "store": str(tmp_path / "results")})
    write_spec_copy(spec)
    assert main(["trial", *SHORT, "--store", spec.store, "--study", "sweep"]) == 2
    err = capsys.readouterr().err
    assert "--study sweep: that study in" in err and "is a sweep's" in err and "pass another --study" in err


def test_the_trial_progress_line_gives_the_step_rate_and_the_time_left():
    from study.cli.trial import ProgressLine

    line = ProgressLine(4000)
    assert line.text(100, 1.5, now=10.0) == "step 100/4000  loss 1.5000"
    assert line.text(1100, 0.25, now=30.0) == "step 1100/4000  loss 0.2500  50 steps/s  ETA 58 s"
    assert line.text(1300, 0.2, now=34.0).endswith("50 steps/s  ETA 54 s")


def test_trial_threads_are_checked_before_training(capsys):
    assert main(["trial", *SHORT, "--threads", "0"]) == 2
    assert "--threads 0: give 1 to" in capsys.readouterr().err
