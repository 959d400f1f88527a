"""Claims (the spec's ``expect`` list): validated before Ray, checked as seed distributions.

Each claim kind on hand-made store frames (a cell with one seed, a seed that diverged, a
trial still running, Optuna trials per seed), the refusals through ``main()``, and
``oodstudy check`` on a real small study.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.claims import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, check_claims, claim_lines, tally
from study.claims_config import Claim
from study.cli import main

ROOT = Path(__file__).resolve().parents[1]


def frames(seeds: dict[int, list[tuple[int, str, float]]]):
    """trials and final eval rows of a digits x seed grid: ``seeds[digits]`` lists
    (seed, status, equivalence_of_wrong at split ood) per trial; every trial also has
    exact_match 1.0 in distribution and 0.0 beyond."""
    trials, final = [], []
    for digits, runs in seeds.items():
        for i, (seed, status, equivalence) in enumerate(runs):
            trial_id = f"d{digits}s{seed}t{i}"
            point = f"task.digits={digits}|train.seed={seed}"
            trials.append(
                {
                    "trial_id": trial_id,
                    "grid_point": point,
                    "status": status,
                    "family": "arithmetic",
                    "score": 1.0 - 0.01 * i,
                    "task.digits": digits,
                    "train.seed": seed,
                }
            )
            for length in (digits, digits + 2, digits + 3):
                split = "id" if length <= digits else "ood"
                for metric, value in (
                    ("exact_match", 1.0 if split == "id" else 0.0),
                    ("equivalence_of_wrong", equivalence if split == "ood" else math.nan),
                ):
                    final.append(
                        {
                            "trial_id": trial_id,
                            "grid_point": point,
                            "status": status,
                            "family": "arithmetic",
                            "task.digits": digits,
                            "train.seed": seed,
                            "step": 100,
                            "split": split,
                            "metric": metric,
                            "value": value,
                            "len_a": length,
                            "len_b": length,
                            "n_context": None,
                            "shift": None,
                            "shift_value": None,
                        }
                    )
    return pd.DataFrame(trials), pd.DataFrame(final)


def claim(**fields) -> Claim:
    base = {
        "finding": "OOD answers equal the ID equivalent",
        "source": "arXiv 2407.17963 D_4",
        "metric": "equivalence_of_wrong",
        "at": {"split": "ood"},
        "op": ">=",
        "value": 0.9,
    }
    return Claim.model_validate({**base, **fields})


def test_the_median_over_seeds_is_compared_and_a_diverged_seed_is_left_out():
    trials, final = frames(
        {3: [(0, "completed", 0.95), (1, "completed", 0.5), (2, "completed", 0.97), (3, "diverged", 0.0)]}
    )
    table = check_claims([claim()], trials, final, "max")
    row = table.iloc[0]
    assert (row["verdict"], row["n"], row["held"]) == (REPRODUCED, 3, 2)
    assert row["median"] == pytest.approx(0.95) and row["min"] == pytest.approx(0.5)
    assert row["q25"] == pytest.approx(0.725) and row["max"] == pytest.approx(0.97)
    line = claim_lines(table)[0]
    assert line.startswith("reproduced") and "median 0.95" in line and "3 seeds, 2 hold" in line
    assert "published >= 0.9" in line and "[arXiv 2407.17963 D_4]" in line


def test_a_share_of_seeds_and_a_tolerance():
    trials, final = frames({3: [(0, "completed", 0.95), (1, "completed", 0.5), (2, "completed", 0.87)]})
    every_seed = claim(pool="share", share=1.0)
    three_quarters_with_slack = claim(pool="share", share=0.6, tolerance=0.05)
    table = check_claims([every_seed, three_quarters_with_slack], trials, final, "max")
    assert list(table["verdict"]) == [NOT_REPRODUCED, REPRODUCED]
    assert list(table["held"]) == [1, 2]  # 0.87 holds against 0.9 - 0.05


def test_each_seed_is_read_at_its_best_optuna_trial():
    # two trials of seed 0: the first has the better score (1.0 vs 0.99) and 0.2, the other 0.99
    trials, final = frames({3: [(0, "completed", 0.2), (0, "completed", 0.99)]})
    row = check_claims([claim()], trials, final, "max").iloc[0]
    assert (row["n"], row["median"], row["verdict"]) == (1, pytest.approx(0.2), NOT_REPRODUCED)
    row = check_claims([claim()], trials, final, "min").iloc[0]  # mode min: the other trial is best
    assert row["median"] == pytest.approx(0.99)


def test_a_cell_with_one_seed_says_so_and_cells_select_rows():
    trials, final = frames({2: [(0, "completed", 0.9), (1, "failed", 0.0)], 3: [(0, "completed", 0.1)]})
    table = check_claims([claim(cells={"task.digits": 2})], trials, final, "max")
    assert list(table["cell"]) == ["task.digits=2"] and table.iloc[0]["n"] == 1
    assert "(one seed: no spread)" in claim_lines(table)[0]
    both = check_claims([claim()], trials, final, "max")
    assert list(both["cell"]) == ["task.digits=2", "task.digits=3"]
    assert list(both["verdict"]) == [REPRODUCED, NOT_REPRODUCED]
    assert tally(both) == "claims: 1 reproduced, 1 not reproduced, 0 not measurable yet (of 2)"


def test_a_relation_between_cells():
    trials, final = frames(
        {2: [(0, "completed", 0.1), (1, "completed", 0.2)], 3: [(0, "completed", 0.7), (1, "completed", 0.5)]}
    )
    three_times = claim(value=None, cells={"task.digits": 3}, than={"task.digits": 2}, factor=3)
    four_times = claim(value=None, cells={"task.digits": 3}, than={"task.digits": 2}, factor=4.5)
    table = check_claims([three_times, four_times], trials, final, "max")
    assert list(table["reference"]) == [pytest.approx(0.15)] * 2
    assert list(table["verdict"]) == [REPRODUCED, NOT_REPRODUCED]  # 0.6 >= 0.45, 0.6 < 0.675
    assert "published >= 3x task.digits=2 = 0.15" in claim_lines(table)[0]


def test_running_trials_and_missing_rows_are_not_measurable_yet():
    trials, final = frames({3: [(0, "completed", 0.95), (1, "running", 0.0)]})
    final = final[final["trial_id"] != "d3s1t0"]
    row = check_claims([claim()], trials, final, "max").iloc[0]
    assert (row["verdict"], row["n"], row["unfinished"]) == (NOT_MEASURABLE, 1, 1)
    nowhere = check_claims([claim(at={"split": "ood", "len_a": 9})], trials, final, "max").iloc[0]
    assert (nowhere["verdict"], nowhere["n"], nowhere["cell"]) == (NOT_MEASURABLE, 0, "")


def test_condition_values_may_be_lists():
    trials, final = frames({3: [(0, "completed", 0.95)]})
    final.loc[(final["metric"] == "equivalence_of_wrong") & (final["len_a"] == 6), "value"] = 0.0
    row = check_claims([claim(at={"len_a": [5]})], trials, final, "max").iloc[0]
    assert row["median"] == pytest.approx(0.95)
    row = check_claims([claim(at={"len_a": [5, 6]})], trials, final, "max").iloc[0]
    assert row["median"] == pytest.approx(0.475)


def test_a_claim_on_the_structure_probes_reads_the_representations_table():
    trials, final = frames({3: [(0, "completed", 0.95), (1, "completed", 0.95)]})
    structure = pd.DataFrame(
        [
            {
                "trial_id": f"d3s{seed}t{seed}",
                "kind": "probe_digit",
                "split": split,
                "position": position,
                "layer": -1,
                "length": 5,
                "value": value,
            }
            for seed, (ood_units, ood_tens) in enumerate([(1.0, 0.3), (0.9, 0.2)])
            for split, position, value in (("id", 0, 1.0), ("ood", 0, ood_units), ("ood", 1, ood_tens))
        ]
    )
    units = claim(table="representations", metric="probe_digit", at={"split": "ood", "position": 0}, value=0.9)
    tens = claim(table="representations", metric="probe_digit", at={"split": "ood", "position": 1}, value=0.9)
    table = check_claims([units, tens], trials, final, "max", structure)
    assert list(table["verdict"]) == [REPRODUCED, NOT_REPRODUCED]
    assert list(table["median"]) == [pytest.approx(0.95), pytest.approx(0.25)]
    assert check_claims([units], trials, final, "max").iloc[0]["verdict"] == NOT_MEASURABLE  # no probe rows


def spec_file(tmp_path, expect: list[dict], **fields) -> Path:
    data = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    data.update(store=str(tmp_path / "store"), expect=expect, **fields)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


GOOD = {
    "finding": "OOD answers equal the ID equivalent",
    "source": "arXiv 2407.17963 D_4",
    "metric": "equivalence_of_wrong",
    "at": {"split": "ood"},
    "cells": {"task.digits": 3},
    "op": ">=",
    "value": 0.9,
}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"metric": "accuracy"}, "expect[0].metric='accuracy' is not reported by the arithmetic trials"),
        ({"metric": "ood_equivalence"}, "write metric: equivalence with at: {split: ood}"),
        ({"cells": {"task.digits": 4}}, "expect[0].cells.task.digits=4 is not a value of grid.task.digits [2, 3]"),
        (
            {"cells": {"train.seed": 0}},
            "expect[0].cells.train.seed: not a grid axis of this study (cell axes: task.digits)",
        ),
        ({"at": {"len_a": 9}}, "expect[0].at.len_a=9: no grid point of its cells evaluates it"),
        ({"at": {"n_context": 3}}, "expect[0].at.n_context=3: no grid point of its cells evaluates it"),
        ({"at": {"length": 3}}, "at.length: not a condition"),
        ({"than": {"task.digits": 2}}, "give one of value (a published value), than (another cell"),
        ({"than_metric": "chance"}, "give one of value"),
        ({"value": None, "than_metric": "accuracy"}, "expect[0].than_metric='accuracy' is not reported"),
        ({"pool": "mean"}, "pool"),
        ({"share": 0.5}, "share applies to pool: share only"),
        ({"source": ""}, "source"),
        (
            {"table": "representations", "metric": "probe_coefficients"},
            "expect[0].metric='probe_coefficients' is not a structure probe of the trials of its cells; use one of",
        ),
        ({"table": "representations", "at": {"len_a": 4}}, "at.len_a: not a condition of table representations"),
    ],
)
def test_a_claim_no_grid_point_can_measure_is_refused_before_ray(tmp_path, capsys, change, words):
    path = spec_file(tmp_path, [{**GOOD, **change}])
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("oodstudy: ") and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "store").exists()  # refused before anything was written


def test_check_without_claims_and_on_a_path_that_is_not_a_store(tmp_path, capsys):
    assert main(["check", "quickstart", "--store", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err


@pytest.mark.slow
def test_run_prints_the_claims_and_check_rereads_them_from_the_store(tmp_path, ray_local, capsys):
    tiny = [
        "train.steps=30",
        "train.eval_every=15",
        "task.eval_examples=32",
        "task.width=3",
        "task.eval_max_len=3",
        "grid.task.digits=[1, 2]",
        "grid.train.seed=[0, 1]",
        "tune.params={}",
        "model.n_layer=1",
    ]
    claims = [
        {**GOOD, "cells": {"task.digits": 1}, "value": 0.0},  # holds for any model
        {**GOOD, "cells": {"task.digits": 2}, "metric": "exact_match", "at": {"split": "id"}, "value": 0.99},
    ]
    path = spec_file(tmp_path, claims, name="claimed")
    sets = [x for s in tiny for x in ("--set", s)]
    assert main(["run", str(path), *sets]) == 0
    out = capsys.readouterr().out
    assert "claims: 1 reproduced, 1 not reproduced, 0 not measurable yet (of 2)" in out
    assert "reproduced         | OOD answers equal the ID equivalent [arXiv 2407.17963 D_4] | task.digits=1" in out
    from study.store import Store

    rows = Store(str(tmp_path / "store"), create=False).frame("claims", study="claimed")
    assert sorted(rows["verdict"]) == [NOT_REPRODUCED, REPRODUCED] and set(rows["n"]) == {2}
    assert main(["check", "claimed", "--store", str(tmp_path / "store")]) == 1  # one claim did not reproduce
    out = capsys.readouterr().out
    assert out.startswith("study claimed: claims: 1 reproduced, 1 not reproduced")
    assert len(Store(str(tmp_path / "store"), create=False).frame("claims", study="claimed")) == 2  # newest wins
    # the report opens with them (checked again on the store, as check does)
    assert main(["report", "--store", str(tmp_path / "store"), "--study", "claimed", "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r" / "index.html").read_text()
    assert '<h2 id="claims">Claims</h2>' in html and "claims: 1 reproduced, 1 not reproduced" in html
    assert html.index('id="claims"') < html.index('id="overview"')
    assert len(pd.read_csv(tmp_path / "r" / "claims.csv")) == 2


def test_a_smaller_grid_set_on_the_command_line_drops_the_claims_it_cannot_measure(capsys):
    from study.config import load_sweep_spec

    spec = load_sweep_spec(ROOT / "search_spaces" / "quickstart_icl.yaml", ["grid.task.mix_weight=[0.0,1.0]"])
    assert [claim.finding for claim in spec.expect] == [
        "the dense specialist tracks least squares on dense prompts",
        "the sparse specialist fails on dense prompts (outside its support)",
    ]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith(
        "oodstudy: expect[2] (the mixture selects least squares on dense prompts) "
        "is not checked: it reads task.mix_weight=0.5, which --set "
        "grid.task.mix_weight took out of the grid"
    )


def test_a_claim_against_another_metric_of_the_same_cell_compares_seed_by_seed():
    """e.g. an OOD exact match at the chance level its residue structure predicts: each seed
    against its own reference, the median against the reference's median."""
    trials, final = frames({3: [(0, "completed", 0.95), (1, "completed", 0.5), (2, "completed", 0.97)]})
    ood_exact = (final["metric"] == "exact_match") & (final["split"] == "ood")
    final.loc[ood_exact & (final["trial_id"] == "d3s1t1"), "value"] = 0.6  # seed 1's reference
    at_most = claim(value=None, than_metric="exact_match", op="<=", tolerance=0.05, pool="share", share=0.3)
    row = check_claims([at_most], trials, final, "max").iloc[0]
    assert (row["held"], row["verdict"], row["reference"]) == (1, REPRODUCED, 0.0)  # 0.5 <= 0.6 + 0.05 only
    assert "published <= 1x exact_match (tolerance 0.05) = 0" in claim_lines(pd.DataFrame([row]))[0]
    median = check_claims([claim(value=None, than_metric="exact_match", factor=2)], trials, final, "max").iloc[0]
    assert median["verdict"] == REPRODUCED and median["held"] == 2  # seeds 0, 2 hold against 2 x 0; seed 1: 0.5 < 1.2
