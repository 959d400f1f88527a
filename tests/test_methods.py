"""The method comparison on a synthetic study written through the real store: boundaries
per method with seeds, a curve that holds to the last length, a non-monotone one."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from analysis import breakdown as bd
from analysis import load, methods, summary
from study.store import Store

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
LENGTHS = [1, 2, 3, 5, 8, 10]  # a listed, diagonal evaluation grid; trained on 3 digits
CURVES = {  # exact match at the OOD lengths 5, 8, 10 (ID lengths score 1)
    "learned": [0.0, 0.0, 0.0],
    "coupled": [1.0, 0.95, 0.9],  # holds to 10
    "abacus": [1.0, 0.2, 0.8],  # breaks at 8, back at 10: not monotone
}


def write_trial(
    store: Store, trial_id: str, method: str, hints: bool, seed: int, curve: list[float], id_score: float = 1.0
) -> None:
    grid = {"model.pos_encoding": method, "task.index_hints": hints, "train.seed": seed}
    cell = "|".join(f"{k}={v}" for k, v in grid.items())
    config = {
        "task": {"family": "arithmetic", "op": "add", "digits": 3, "index_hints": hints},
        "model": {"pos_encoding": method},
        "train": {"seed": seed},
    }
    store.append(
        "trials",
        [
            {
                "trial_id": trial_id,
                "grid": json.dumps(grid),
                "config": json.dumps(config),
                "status": "completed",
                "start_time": T0,
                "end_time": T0 + dt.timedelta(seconds=1),
                "node": "n0",
                "device": "cpu",
                "n_params": 1,
                "steps": 100,
                "score": None,
                "error": None,
            }
        ],
        study="m",
        attempt=0,
        cell=cell,
    )
    rows = []
    for length in LENGTHS:
        em = id_score if length <= 3 else curve[[5, 8, 10].index(length)]
        for metric, value in (("exact_match", em), ("equivalence", 1.0 - em)):
            rows.append(
                {
                    "trial_id": trial_id,
                    "step": 100,
                    "split": "id" if length <= 3 else "ood",
                    "metric": metric,
                    "value": value,
                    "len_a": length,
                    "len_b": length,
                }
            )
    store.append("evals", rows, study="m", cell=cell)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("store")))
    for seed in (0, 1):
        write_trial(store, f"l{seed}", "learned", False, seed, CURVES["learned"])
        write_trial(store, f"c{seed}", "coupled", False, seed, CURVES["coupled"])
        write_trial(store, f"h{seed}", "learned", True, seed, [1.0, 0.1 * seed, 0.0])  # both seeds break at 8
    write_trial(store, "a0", "abacus", False, 0, CURVES["abacus"])
    write_trial(store, "n0", "none", False, 0, [0.0, 0.0, 0.0], id_score=0.0)  # never learned: no boundary
    trials = load.trials(store, "m")
    return trials, load.final_evals(store, "m", trials_frame=trials), store


def test_breakdown_says_holds_to_the_last_length_and_flags_the_non_monotone_curve(study):
    trials, final, _ = study
    table = bd.breakdown(final, trials).set_index("cell")
    coupled = table.loc["model.pos_encoding=coupled|task.index_hints=False"]
    assert coupled["verdict"] == "holds" and coupled["holds_to"] == 10 and math.isnan(coupled["boundary"])
    abacus = table.loc["model.pos_encoding=abacus|task.index_hints=False"]
    assert abacus["boundary"] == 8 and abacus["recovers_at"] == [10] and not abacus["monotone"]
    assert math.isnan(table.loc["model.pos_encoding=learned|task.index_hints=False", "holds_to"])
    text = summary.summary_text("m", trials, final)
    assert "holds to 10" in text and "8 (recovers at 10)" in text


def test_method_table_ranks_methods_by_median_boundary_with_seed_spread(study):
    trials, final, _ = study
    table = methods.method_table(final, trials).set_index("method")
    assert list(table.index) == ["coupled", "abacus", "learned + index hints", "learned", "none"]
    assert table.loc["coupled", "n_holds"] == 2 and table.loc["coupled", "holds_to"] == 10
    assert math.isnan(table.loc["coupled", "boundary_median"])  # holds beyond every length evaluated
    assert table.loc["learned", "boundary_median"] == 5 and table.loc["learned", "n"] == 2
    assert table.loc["learned", "equivalence_beyond"] == 1.0  # exact 0, every answer the equivalence one
    hints = table.loc["learned + index hints"]  # seed 0 keeps 1.0 at 5 and breaks at 8; seed 1 too (0.1 < 0.5)
    assert (hints["boundary_q25"], hints["boundary_median"]) == (8, 8)
    assert table.loc["abacus", "n_nonmonotone"] == 1
    unlearned = table.loc["none"]  # ranked last, not as a curve that holds
    assert unlearned["n_unlearned"] == 1 and unlearned["n_holds"] == 0 and math.isnan(unlearned["boundary_q75"])
    assert (table.drop(index="none")["n_unlearned"] == 0).all()
    fig = methods.boundary_by_method(methods.per_trial(final).assign(cell=""))
    assert len(fig.axes) == 1 and len(fig.axes[0].get_xticklabels()) == 5


def test_the_report_has_the_method_table_and_plot(study, tmp_path):
    from analysis.report import build_report

    _, _, store = study
    index = build_report(store, "m", tmp_path / "report")
    assert "Length-generalization methods" in index.read_text()
    assert (tmp_path / "report" / "methods.csv").exists() and (tmp_path / "report" / "boundary_by_method.png").exists()
