"""The analysis tables, on synthetic studies written through the real store with known answers.

Arithmetic study "arith" (grid model.size x task.digits x train.seed, lengths 1..7):

- cell A (nano, 3 digits): ID 1, then length 4: 0.8, 5: 0.2, 6-7: 0  -> breaks at 5;
  three seeds scaled 0.9 / 0.95 / 0.99, one failed trial without evals and one
  diverged trial whose perfect scores must not count;
- cell B (micro, 3 digits): 1 up to length 5, 6: 0.9, 7: 0.1       -> breaks at 7;
  seed 1 was retried (its first attempt re-reported with other values), seed 2
  breaks one length earlier (at 6);
- cell C (nano, 4 digits): 5: 0.1, 6: 0.1, 7: 0.9                   -> breaks at 5,
  recovers at 7 (not monotone); its second trial was pruned at step 100;
- cell D (micro, 4 digits): in the grid, no trial at all;
- cell E (nano, 5 digits): its only trial failed; (micro, 5 digits) has none.

Every trial also has an earlier step (100) whose scores are 0.5, so only final
steps may reach the tables.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import breakdown as bd
from references import find_boundary
from analysis import equivalence, icl, load, representations, summary
from study.config import ConfigError
from study.store import Store

LENGTHS = range(1, 8)
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)

SHAPES = {  # OOD exact match by max operand length (ID lengths score 1)
    "A": {4: 0.8, 5: 0.2, 6: 0.0, 7: 0.0},
    "B": {4: 1.0, 5: 1.0, 6: 0.9, 7: 0.1},
    "B_early": {4: 1.0, 5: 1.0, 6: 0.3, 7: 0.0},
    "C": {5: 0.1, 6: 0.1, 7: 0.9},
    "flat": {4: 1.0, 5: 1.0, 6: 1.0, 7: 1.0},
}


def add_trial(
    store: Store,
    study: str,
    trial_id: str,
    grid: dict,
    config: dict,
    status: str = "completed",
    attempt: int = 0,
    steps: int = 200,
) -> str:
    cell = "|".join(f"{k}={v}" for k, v in grid.items())
    store.append(
        "trials",
        [
            {
                "trial_id": trial_id,
                "grid": json.dumps(grid),
                "config": json.dumps(config),
                "status": status,
                "start_time": T0,
                "end_time": T0 + dt.timedelta(seconds=60),
                "node": "n0",
                "device": "cpu",
                "n_params": 1000,
                "steps": steps,
                "score": None,
                "error": "boom" if status == "failed" else None,
            }
        ],
        study=study,
        attempt=attempt,
        cell=cell,
    )
    return cell


def arith_rows(
    trial_id: str, step: int, digits: int, shape: dict[int, float], scale: float, metrics: bool = True
) -> list[dict]:
    rows = []
    for la in LENGTHS:
        for lb in LENGTHS:
            length = max(la, lb)
            em = scale * (1.0 if length <= digits else shape[length])
            values = {"exact_match": em}
            if metrics:
                values.update(equivalence=1.0, chance=0.1, equivalence_of_wrong=1.0 if em < 1 else math.nan)
            for metric, value in values.items():
                rows.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "split": "id" if length <= digits else "ood",
                        "metric": metric,
                        "value": value,
                        "len_a": la,
                        "len_b": lb,
                    }
                )
    return rows


def arith_trial(
    store: Store,
    study: str,
    trial_id: str,
    size: str,
    digits: int,
    seed: int,
    shape: str | None,
    scale: float = 1.0,
    status: str = "completed",
    final_step: int = 200,
) -> None:
    grid = {"model.size": size, "task.digits": digits, "train.seed": seed}
    config = {
        "task": {"family": "arithmetic", "op": "add", "digits": digits},
        "model": {"size": size},
        "train": {"seed": seed, "lr": 1e-3 * (1 + seed)},
    }
    cell = add_trial(store, study, trial_id, grid, config, status=status, steps=final_step)
    if shape is None:
        return
    early = [dict(r, value=0.5) for r in arith_rows(trial_id, 100, digits, SHAPES["flat"], 1.0, metrics=False)]
    final = arith_rows(trial_id, final_step, digits, SHAPES[shape], scale)
    store.append("evals", (early if final_step > 100 else []) + final, study=study, cell=cell)


def build_arith(store: Store, study: str = "arith") -> None:
    arith_trial(store, study, "a0", "nano", 3, 0, "A", 0.9)
    arith_trial(store, study, "a1", "nano", 3, 1, "A", 0.95)
    arith_trial(store, study, "a2", "nano", 3, 2, "A", 0.99)
    arith_trial(store, study, "a3", "nano", 3, 3, None, status="failed")
    arith_trial(store, study, "a4", "nano", 3, 4, "flat", 1.0, status="diverged")
    arith_trial(store, study, "b0", "micro", 3, 0, "B", 1.0)
    # b1: the first attempt failed after reporting step 200 with other values; the retry
    # re-reports step 200 (attempt 1): its rows replace the first ones.
    arith_trial(store, study, "b1", "micro", 3, 1, "B", 0.3, status="failed")
    cell = add_trial(
        store,
        study,
        "b1",
        {"model.size": "micro", "task.digits": 3, "train.seed": 1},
        {"task": {"family": "arithmetic", "digits": 3}, "model": {"size": "micro"}, "train": {"seed": 1, "lr": 2e-3}},
        attempt=1,
    )
    store.append("evals", arith_rows("b1", 200, 3, SHAPES["B"], 0.9), study=study, attempt=1, cell=cell)
    arith_trial(store, study, "b2", "micro", 3, 2, "B_early", 0.8)
    arith_trial(store, study, "c0", "nano", 4, 0, "C", 1.0)
    arith_trial(store, study, "c1", "nano", 4, 1, "C", 0.5, status="pruned", final_step=100)
    arith_trial(store, study, "e0", "nano", 5, 0, None, status="failed")


# In-context study "icl": model.size x task.mix_weight (0 and 1 are the specialists)
# x train.seed.  Model nmse = base + err(cell) + 0.01 * seed.
ICL_ERR = {
    ("nano", 0.0): 0.05,
    ("nano", 0.5): 0.10,
    ("nano", 1.0): 0.04,
    ("micro", 0.0): 0.02,
    ("micro", 0.5): 0.03,
    ("micro", 1.0): 0.01,
}
NNZ_BASE = {3.0: 0.2, 6.0: 0.45, 12.0: 0.95}


def icl_base(k: int, mix: float) -> float:
    if k <= 4:
        return 1.0 - 0.2 * k
    return {5: 0.5, 6: 0.9}[k] if mix == 0.5 else 0.1


def build_icl(store: Store, study: str = "icl") -> None:
    for (size, mix), err in ICL_ERR.items():
        for seed in (0, 1):
            trial_id = f"{size}-{mix}-{seed}"
            grid = {"model.size": size, "task.mix_weight": mix, "train.seed": seed}
            config = {
                "task": {"family": "icl", "classes": ["linear", "sparse_linear"], "mix_weight": mix, "n_dims": 5},
                "model": {"size": size},
                "train": {"seed": seed},
            }
            cell = add_trial(store, study, trial_id, grid, config)
            e = err + 0.01 * seed
            rows = []
            for k in range(7):
                split = "id" if k <= 4 else "ood"
                for metric, value in (
                    ("nmse", icl_base(k, mix) + e),
                    ("nmse_lstsq", max(0.0, 1 - 0.2 * k)),
                    ("nmse_averaging", 1 - 0.1 * k),
                ):
                    rows.append(
                        {
                            "trial_id": trial_id,
                            "step": 100,
                            "split": split,
                            "metric": metric,
                            "value": value,
                            "n_context": k,
                            "shift": "none",
                        }
                    )
            for nnz, base in NNZ_BASE.items():
                for k in range(1, 5):
                    for metric, value in (("nmse", base + e), ("nmse_lstsq", 0.5), ("nmse_averaging", 0.7)):
                        rows.append(
                            {
                                "trial_id": trial_id,
                                "step": 100,
                                "split": "id" if nnz == 3 else "ood",
                                "metric": metric,
                                "value": value,
                                "n_context": k,
                                "shift": "nnz",
                                "shift_value": nnz,
                            }
                        )
            store.append("evals", rows, study=study, cell=cell)


def build_points(store: Store, study: str, trial_id: str, cell: str) -> None:
    """Step 100: a blob with mixed labels; step 200: ten tight clusters on a circle."""
    rng = np.random.default_rng(0)
    rows = []
    for step in (100, 200):
        for point, (a, b) in enumerate((a, b) for a in range(10) for b in range(10)):
            label = (a + b) % 10
            if step == 100:
                pc1, pc2 = rng.normal(size=2)
            else:
                angle = 2 * math.pi * label / 10
                pc1, pc2 = 5 * math.cos(angle) + 0.05 * rng.normal(), 5 * math.sin(angle) + 0.05 * rng.normal()
            rows.append(
                {
                    "trial_id": trial_id,
                    "step": step,
                    "kind": "pca_units_digit",
                    "split": "id" if point % 2 else "ood",
                    "point": point,
                    "label": str(label),
                    "a": a,
                    "b": b,
                    "pc1": pc1,
                    "pc2": pc2,
                }
            )
    store.append("representations", rows, study=study, cell=cell)


# Final units-digit probe accuracy (ID) of the arithmetic trials; at step 100 it is
# 0.95 in cell A (before the ID accuracy, 0.5 there, reaches 0.9) and 0.2 elsewhere.
# The diverged a4 must not count.  The OOD equivalence rate is 0.6 at length
# digits + 1 and 0.3 at digits + 2.
UNITS_PROBE = {"a0": 0.97, "a1": 0.98, "a2": 0.99, "a4": 0.1, "b0": 0.5, "b1": 0.6, "b2": 0.7, "c0": 1.0}


def build_scores(store: Store, study: str = "arith") -> None:
    for trial_id, final in UNITS_PROBE.items():
        digits = 4 if trial_id.startswith("c") else 3
        cell = f"model.size={'micro' if trial_id.startswith('b') else 'nano'}|task.digits={digits}|train.seed={trial_id[1]}"
        rows = []
        for step, value in ((100, 0.95 if trial_id.startswith("a") else 0.2), (200, final)):
            score = {"trial_id": trial_id, "step": step, "layer": -1}
            rows.append(dict(score, kind="probe_digit", split="id", position=0, length=digits, value=value))
            rows.append(dict(score, kind="probe_digit", split="id", position=1, length=digits, value=0.5))
            for extra, rate in ((1, 0.6), (2, 0.3)):
                rows.append(
                    dict(score, kind="repr_equivalence", split="ood", position=0, length=digits + extra, value=rate)
                )
        store.append("representations", rows, study=study, cell=cell)


def build_icl_scores(store: Store, study: str = "icl") -> None:
    """Coefficient-probe R^2 of every in-context trial: min(1, k / 5) on ID prompts, half of
    that at nnz = 12 (OOD)."""
    for size, mix in ICL_ERR:
        for seed in (0, 1):
            trial_id = f"{size}-{mix}-{seed}"
            rows = []
            for k in range(7):
                for shift, value, split, r2 in (
                    ("none", 0.0, "id", min(1.0, k / 5)),
                    ("nnz", 12.0, "ood", min(1.0, k / 5) / 2),
                ):
                    rows.append(
                        {
                            "trial_id": trial_id,
                            "step": 100,
                            "kind": "probe_coefficients",
                            "split": split,
                            "position": k,
                            "layer": -1,
                            "shift": shift,
                            "shift_value": value,
                            "value": r2,
                        }
                    )
            store.append(
                "representations", rows, study=study, cell=f"model.size={size}|task.mix_weight={mix}|train.seed={seed}"
            )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(str(tmp_path_factory.mktemp("store")), create=True)
    build_arith(s)
    build_icl(s)
    build_points(s, "arith", "a2", "model.size=nano|task.digits=3|train.seed=2")
    build_scores(s)
    build_icl_scores(s)
    return s


@pytest.fixture(scope="module")
def arith(store):
    trials = load.trials(store, "arith")
    return trials, load.final_evals(store, "arith", trials_frame=trials)


@pytest.fixture(scope="module")
def icl_study(store):
    trials = load.trials(store, "icl")
    return trials, load.final_evals(store, "icl", trials_frame=trials)


# --------------------------------------------------------------------------- load


def test_trials_expand_the_grid_and_keep_the_latest_attempt(arith):
    trials, _ = arith
    assert list(trials["trial_id"]) == ["b0", "b1", "b2", "a0", "a1", "a2", "a3", "a4", "c0", "c1", "e0"]
    b1 = trials.set_index("trial_id").loc["b1"]
    assert (b1["status"], b1["attempt"], b1["model.size"], b1["task.digits"], b1["train.seed"]) == (
        "completed",
        1,
        "micro",
        3,
        1,
    )
    assert trials["family"].eq("arithmetic").all() and (trials["seconds"] == 60).all()
    # config columns: only what varies between trials (seed, lr, size, digits)
    assert {"config.train.lr", "config.train.seed", "config.model.size"} <= set(trials.columns)
    axes = load.grid_axes(trials).set_index("axis")
    assert axes.loc["model.size", "values"] == ["nano", "micro"]
    assert axes.loc["task.digits", "values"] == [3, 4, 5]
    assert axes.loc["train.seed", "seed"] and not axes.loc["model.size", "seed"]
    cells = load.grid_points(trials).set_index("grid_point")
    assert cells.loc["model.size=nano|task.digits=3|train.seed=3", "n_failed"] == 1
    assert cells["n_trials"].sum() == 11


def test_final_evals_reads_only_each_trials_last_step_without_duplicates(arith):
    _, final = arith
    steps = final.groupby("trial_id")["step"].unique().map(list).to_dict()
    assert steps == {
        "a0": [200],
        "a1": [200],
        "a2": [200],
        "a4": [200],
        "b0": [200],
        "b1": [200],
        "b2": [200],
        "c0": [200],
        "c1": [100],
    }
    b1 = final[(final["trial_id"] == "b1") & (final["metric"] == "exact_match")]
    assert len(b1) == 49 and b1["value"].max() == pytest.approx(0.9)  # the retry's rows, once each
    assert {"model.size", "task.digits", "train.seed", "grid_point", "status", "family"} <= set(final.columns)


def test_filters_run_in_the_store(store):
    rows = load.final_evals(store, "arith", metrics=["exact_match"], where="len_a = 7 AND len_b = 1")
    assert set(rows["metric"]) == {"exact_match"} and len(rows) == 9  # nine trials with evals
    assert set(rows["split"]) == {"ood"}


# --------------------------------------------------------------------------- breakdown


def test_breakdown_finds_each_cells_boundary_and_its_spread(arith):
    trials, final = arith
    table = bd.breakdown(final, trials, metric="exact_match").set_index("cell")
    assert list(table.index) == [
        "model.size=nano|task.digits=3",
        "model.size=nano|task.digits=4",
        "model.size=nano|task.digits=5",
        "model.size=micro|task.digits=3",
        "model.size=micro|task.digits=4",
        "model.size=micro|task.digits=5",
    ]
    assert (table["shift"] == "length").all()
    a, c, e, b, d, _ = (table.iloc[i] for i in range(6))

    assert (a["n_trials"], a["n_failed"], a["n_usable"], a["best_trial"]) == (5, 2, 3, "a2")
    assert a["id_score"] == pytest.approx(0.99)
    assert (a["boundary"], a["verdict"], bool(a["monotone"]), a["recovers_at"]) == (5, "breaks", True, [])
    assert a["ood_score"] == pytest.approx(0.99 * 0.25)
    assert (a["id_median"], a["id_q25"], a["id_q75"]) == pytest.approx((0.95, 0.925, 0.97))
    assert a["ood_median"] == pytest.approx(0.95 * 0.25)
    assert (a["n_break"], a["boundary_q25"], a["boundary_q50"], a["boundary_q75"], a["n_nonmonotone"]) == (
        3,
        5,
        5,
        5,
        0,
    )

    assert (b["n_trials"], b["n_failed"], b["n_usable"], b["best_trial"]) == (3, 0, 3, "b0")
    assert (b["boundary"], b["verdict"], bool(b["monotone"])) == (7, "breaks", True)
    assert (b["id_median"], b["id_q25"], b["id_q75"]) == pytest.approx((0.9, 0.85, 0.95))
    assert (b["boundary_q25"], b["boundary_q50"], b["boundary_q75"]) == (6, 7, 7)

    assert (c["best_trial"], c["n_usable"], c["boundary"], bool(c["monotone"]), c["recovers_at"]) == (
        "c0",
        2,
        5,
        False,
        [7],
    )
    assert c["n_nonmonotone"] == 2 and c["id_median"] == pytest.approx(0.75)

    assert (d["n_trials"], d["n_usable"], d["verdict"]) == (0, 0, "no_trial")
    assert math.isnan(d["id_score"]) and math.isnan(d["boundary"]) and pd.isna(d["best_trial"])
    assert (e["n_trials"], e["n_failed"], e["n_usable"], e["verdict"]) == (1, 1, 0, "no_trial")
    assert math.isnan(e["id_median"]) and math.isnan(e["ood_score"])


def test_threshold_is_relative_to_the_id_score(arith):
    trials, final = arith
    table = bd.breakdown(final, trials, threshold=0.05).set_index("cell")
    assert table.loc["model.size=nano|task.digits=3", "boundary"] == 6  # 0 < 0.05 x ID; 0.2 is not
    micro = table.loc["model.size=micro|task.digits=3"]
    assert math.isnan(micro["boundary"]) and micro["verdict"] == "holds"
    assert (micro["n_break"], micro["boundary_q25"]) == (1, 7)  # seed 2 drops to 0 at length 7
    assert math.isnan(micro["boundary_q50"])  # the other two seeds never break


def test_curves_give_the_best_trial_and_the_distribution_per_length(arith):
    _, final = arith
    curve = bd.curves(final, "exact_match")
    a = curve[curve["cell"] == "model.size=nano|task.digits=3"].set_index("x")
    assert list(a.index) == [1, 2, 3, 4, 5, 6, 7]
    assert list(a["split"]) == ["id"] * 3 + ["ood"] * 4
    assert list(a["best"]) == pytest.approx([0.99, 0.99, 0.99, 0.792, 0.198, 0, 0])
    assert list(a["n"]) == [3] * 7
    assert a.loc[5, ["median", "q25", "q75"]].tolist() == pytest.approx([0.19, 0.185, 0.194])
    pairs = bd.curves(final, "exact_match", length="pair")
    assert len(pairs[pairs["cell"] == "model.size=nano|task.digits=3"]) == 49
    by_a = bd.breakdown(final, arith[0], length="len_a").set_index("cell")
    # along len_a, the OOD rows at len_a=1 are those with a long b: already broken there
    assert by_a.loc["model.size=nano|task.digits=3", "boundary"] == 1


def test_find_boundary_reads_both_directions():
    acc = bd.metric_info("exact_match")
    assert find_boundary(np.array([4, 5, 6]), np.array([0.9, 0.4, 0.6]), 1.0, acc) == (5, False, [6])
    boundary, monotone, recovers = find_boundary(np.array([4, 5]), np.array([0.9, 0.8]), 1.0, acc)
    assert math.isnan(boundary) and monotone and recovers == []
    err = bd.metric_info("nmse")  # floor 1: retention = (1 - nmse) / (1 - id nmse)
    assert find_boundary(np.array([1, 2]), np.array([0.3, 0.7]), 0.2, err)[0] == 2
    assert find_boundary(np.array([1]), np.array([0.1]), 1.0, err)[1] is None  # ID never learned


@pytest.mark.parametrize("metric, id_levels", [("exact_match", [0.0, 0.4, 1.0]), ("nmse", [1.0, 0.5, 0.1])])
def test_all_curves_at_once_agree_with_find_boundary_curve_by_curve(metric, id_levels):
    rng = np.random.default_rng(1)
    rows = []
    for t in range(60):
        id_score = id_levels[t % 3]
        for x in range(4, 10):
            score = np.nan if rng.random() < 0.15 else rng.random()
            rows.append(
                {
                    "trial_id": f"t{t:02d}",
                    "shift": "length",
                    "x": float(x),
                    "split": "ood",
                    "score": score,
                    "id_score": id_score,
                }
            )
    scores = pd.DataFrame(rows)
    at_once = bd.trial_boundaries(scores, metric, threshold=0.5, tol=0.05).set_index("trial_id")
    for trial, curve in scores.groupby("trial_id"):
        boundary, monotone, recovers = find_boundary(
            curve["x"].to_numpy(), curve["score"].to_numpy(), curve["id_score"].iloc[0], bd.metric_info(metric)
        )
        got = at_once.loc[trial]
        assert (got["boundary"] == boundary) or (math.isnan(got["boundary"]) and math.isnan(boundary))
        assert (got["monotone"], got["recovers_at"]) == (monotone, recovers)


def test_summary_table_prints_one_line_per_cell(store):
    text = summary.summary_text("arith", *load.study_frames(store, "arith"))
    lines = text.splitlines()
    assert lines[0] == "study arith" and "along length:" in lines
    # distributions first: the seeds' median and range lead, the best seed's boundary is the last column
    assert lines[1].startswith("exact_match per cell: the median over its seeds [min-max]")
    assert lines[lines.index("along length:") + 1].split() == [
        "cell",
        "seeds",
        "id",
        "len4",
        "len5",
        "len6",
        "len7",
        "boundary",
        "equiv",
        "best",
        "seed",
    ]
    row = next(line for line in lines if line.startswith("model.size=nano|task.digits=4"))
    # len4 is in distribution for a 4-digit cell: "id", not a missing value; seeds c0 (ID 1.0) and c1 (pruned, 0.5)
    assert row.split() == [
        "model.size=nano|task.digits=4",
        "2/2",
        "0.75",
        "[0.50-1.00]",
        "id",
        "0.08",
        "0.08",
        "0.68",
        "5",
        "in",
        "2",
        "of",
        "2",
        "seeds",
        "1.00",
        "5",
        "(recovers",
        "at",
        "7)",
    ]
    # three usable seeds of five (a3 failed, a4 diverged); the micro seeds break at 6, 7 and 7
    row = next(line for line in lines if line.startswith("model.size=nano|task.digits=3"))
    assert row.split()[1:4] == ["3/5", "0.95", "[0.90-0.99]"] and "5 in 3 of 3 seeds" in row
    assert "7 [6-7] in 3 of 3 seeds" in next(
        line for line in lines if line.startswith("model.size=micro|task.digits=3")
    )
    assert any(line.startswith("model.size=micro|task.digits=4") and "0/0" in line for line in lines)
    assert next(line for line in lines if line.startswith("model.size=nano|task.digits=5")).split()[1:3] == ["0/1", "-"]
    # a legend for seeds, "id", the best seed and equiv (the equivalence rate beyond the boundary)
    assert any(line.startswith("seeds = usable/all seeds of the cell") for line in lines)
    assert any(line.startswith("equiv = share of answers") for line in lines)


def test_the_seed_boundary_text_counts_seeds_that_break_hold_or_never_learned():
    row = {
        "n_usable": 4,
        "n_learned": 4,
        "n_break": 3,
        "break_median": 5.0,
        "break_min": 4.0,
        "break_max": 6.0,
        "holds_to_max": 12.0,
    }
    assert bd.seed_boundary_text(row) == "5 [4-6] in 3 of 4 seeds, holds to 12 in 1"
    assert bd.seed_boundary_text({**row, "n_break": 0}) == "holds to 12 in 4 of 4 seeds"
    assert (
        bd.seed_boundary_text({**row, "n_usable": 1, "n_learned": 1, "n_break": 1, "break_min": 5.0, "break_max": 5.0})
        == "5 in 1 of 1 seed"
    )
    assert bd.seed_boundary_text({**row, "n_learned": 3}) == "5 [4-6] in 3 of 4 seeds, ID not learned in 1"
    assert bd.seed_boundary_text({**row, "n_learned": 0, "n_break": 0}) == "n/a (ID not learned in 4 of 4)"


def test_seed_best_keeps_each_grid_points_best_trial(arith):
    trials, final = arith
    # two trials of one grid point: the better by ID score stays, the other goes
    twin = final[final["trial_id"] == "a1"].assign(trial_id="a1x")
    twin.loc[twin["split"] == "id", "value"] = 0.0
    both = pd.concat([final, twin])
    more = pd.concat([trials, trials[trials["trial_id"] == "a1"].assign(trial_id="a1x")])
    cut_final, cut_trials = bd.seed_best(both, more, "exact_match")
    assert "a1x" not in set(cut_final["trial_id"]) and "a1" in set(cut_final["trial_id"])
    assert len(cut_trials) == len(trials) and cut_trials["grid_point"].is_unique
    assert "e0" in set(cut_trials["trial_id"])  # a grid point without a usable trial still counts (failed)


# --------------------------------------------------------------------------- equivalence


def test_equivalence_table_sets_exact_match_beside_equivalence_and_chance(arith):
    _, final = arith
    table = equivalence.equivalence_table(final)
    a = table[table["cell"] == "model.size=nano|task.digits=3"].set_index("x")
    assert list(a.index) == [4, 5, 6, 7] and (a["best_trial"] == "a2").all()
    assert list(a["exact_match"]) == pytest.approx([0.792, 0.198, 0, 0])
    assert list(a["equivalence"]) == [1.0] * 4 and list(a["chance"]) == [0.1] * 4
    assert list(a["equivalence_of_wrong"]) == [1.0] * 4
    assert list(a["equivalence_gap"]) == pytest.approx([0.208, 0.802, 1, 1])
    assert list(a["n"]) == [3] * 4


# --------------------------------------------------------------------------- icl


def test_icl_breakdown_uses_lower_is_better(icl_study):
    trials, final = icl_study
    table = bd.breakdown(final, trials, metric="nmse")
    assert set(table["shift"]) == {"nnz", "n_context"}
    nnz = table[table["shift"] == "nnz"].set_index("cell")
    assert (nnz["boundary"] == 12).all() and nnz["monotone"].all()
    mix = nnz.loc["model.size=nano|task.mix_weight=0.5"]
    assert mix["best_trial"] == "nano-0.5-0" and mix["id_score"] == pytest.approx(4.7 / 9)
    k = table[table["shift"] == "n_context"].set_index("cell")
    assert k.loc["model.size=nano|task.mix_weight=0.5", "boundary"] == 6
    assert k.loc["model.size=nano|task.mix_weight=1", "verdict"] == "holds"


def test_icl_curves_and_selection_gap(icl_study):
    _, final = icl_study
    curves = icl.icl_curves(final)
    row = curves[
        (curves["cell"] == "model.size=nano|task.mix_weight=0.5")
        & (curves["shift"] == "none")
        & (curves["n_context"] == 2)
    ].set_index("metric")
    assert row.loc["nmse", "best"] == pytest.approx(0.7) and row.loc["nmse", "median"] == pytest.approx(0.705)
    assert row.loc["nmse_lstsq", "best"] == pytest.approx(0.6)
    gap = icl.selection_gap(final)
    g = gap[gap["cell"] == "model.size=nano|task.mix_weight=0.5"]
    k2 = g[(g["shift"] == "none") & (g["n_context"] == 2)].iloc[0]
    assert (k2["best_baseline"], k2["gap"], k2["specialist"]) == ("nmse_lstsq", pytest.approx(0.1), 1.0)
    assert k2["nmse_specialist"] == pytest.approx(0.64) and k2["gap_specialist"] == pytest.approx(0.06)
    assert (k2["gap_median"], k2["n"]) == (pytest.approx(0.105), 2)
    k5 = g[(g["shift"] == "none") & (g["n_context"] == 5)].iloc[0]
    assert k5["gap_specialist"] == pytest.approx(0.6 - 0.14)
    micro = gap[
        (gap["cell"] == "model.size=micro|task.mix_weight=0.5") & (gap["n_context"] == 2) & (gap["shift"] == "none")
    ].iloc[0]
    assert micro["nmse_specialist"] == pytest.approx(0.61)  # compared within the same size
    assert gap.loc[gap["task.mix_weight"] != 0.5, "gap_specialist"].isna().all()


def test_error_along_shifts_and_mixture_weight(icl_study):
    _, final = icl_study
    errors = icl.shift_errors(final)
    nnz = errors[(errors["shift"] == "nnz") & (errors["metric"] == "nmse") & (errors["model.size"] == "nano")]
    assert nnz.set_index(["task.mix_weight", "shift_value"]).loc[(0.5, 12.0), "best"] == pytest.approx(1.05)
    mix = icl.mixture_effect(errors)
    nano12 = mix[(mix["model.size"] == "nano") & (mix["shift"] == "nnz") & (mix["shift_value"] == 12)]
    assert list(nano12["task.mix_weight"]) == [0.0, 0.5, 1.0]
    assert list(nano12["best"]) == pytest.approx([1.0, 1.05, 0.99])
    assert list(mix.columns[:4]) == ["family", "model.size", "task.mix_weight", "shift"]


def test_error_along_nnz_at_chosen_k_and_the_selection_phase(icl_study):
    _, final = icl_study
    assert icl.dense_dim(final) == 12  # the largest nnz evaluated stands for dense prompts
    profile = icl.nnz_profile(final, ks=(2, 4))
    assert set(profile["n_context"]) == {2, 4} and set(profile["shift_value"]) == {3.0, 6.0, 12.0}
    row = profile[
        (profile["cell"] == "model.size=nano|task.mix_weight=0.5")
        & (profile["n_context"] == 2)
        & (profile["shift_value"] == 6.0)
    ].set_index("metric")
    assert row.loc["nmse", "median"] == pytest.approx(0.555) and row.loc["nmse", "best"] == pytest.approx(0.55)
    assert row.loc["nmse_lstsq", "median"] == pytest.approx(0.5) and row.loc["nmse", "n"] == 2
    assert icl.nnz_profile(final).empty  # k = d = 12 was never evaluated
    phase = icl.selection_phase(final, ks=(2,))
    assert set(phase["shift"]) == {"nnz"} and set(phase["n_context"]) == {2}
    cell = phase.set_index(["model.size", "task.mix_weight", "shift_value"]).loc[("nano", 0.5, 6.0)]
    assert (cell["best_baseline"], cell["gap"], cell["gap_median"]) == (
        "nmse_lstsq",
        pytest.approx(0.05),
        pytest.approx(0.055),
    )
    assert icl.nnz_profile(final[final["shift"] != "nnz"]).empty


def test_summary_of_an_nnz_study_gives_the_error_at_two_d_examples_beside_least_squares_and_lasso(tmp_path):
    """A sparse specialist that fails on dense prompts must read as failing in the terminal
    summary: the k-averaged table dilutes it with k < d, so a block at k = 2d follows.
    d = 2: w = 0 scores 0.03 (nnz 1) / 0.50 (nnz 2) at k = 4, w = 1 0.04 / 0.02 (+ 0.01 * seed)."""
    s = Store(str(tmp_path / "store"), create=True)
    err = {(0.0, 1.0): 0.03, (0.0, 2.0): 0.50, (1.0, 1.0): 0.04, (1.0, 2.0): 0.02}
    for mix in (0.0, 1.0):
        for seed in (0, 1):
            trial_id = f"{mix}-{seed}"
            config = {
                "task": {
                    "family": "icl",
                    "classes": ["linear", "sparse_linear"],
                    "mix_weight": mix,
                    "n_dims": 2,
                    "nnz": 1,
                },
                "train": {"seed": seed},
            }
            cell = add_trial(s, "nz", trial_id, {"task.mix_weight": mix, "train.seed": seed}, config)
            rows = [
                {
                    "trial_id": trial_id,
                    "step": 100,
                    "split": "id",
                    "metric": "nmse",
                    "value": 0.5,
                    "n_context": k,
                    "shift": "none",
                }
                for k in range(5)
            ]
            for nnz in (1.0, 2.0):
                split = "id" if (nnz == 1.0) == (mix == 0.0) else "ood"
                for k in range(5):
                    for metric, value in (
                        ("nmse", 1.0 if k < 4 else err[(mix, nnz)] + 0.01 * seed),
                        ("nmse_lstsq", 0.0 if k >= 2 else 0.5),
                        ("nmse_lasso", 0.001 * nnz if k >= 2 else 0.4),
                    ):
                        rows.append(
                            {
                                "trial_id": trial_id,
                                "step": 100,
                                "split": split,
                                "metric": metric,
                                "value": value,
                                "n_context": k,
                                "shift": "nnz",
                                "shift_value": nnz,
                            }
                        )
            s.append("evals", rows, study="nz", cell=cell)
    lines = summary.summary_text("nz", *load.study_frames(s, "nz")).splitlines()
    head = lines.index("nmse at k = 2d = 4 examples along nnz (median over usable trials; nnz = 2 is dense):")
    assert lines[head + 1].split() == ["nnz1", "nnz2"]
    table = {line.rsplit(maxsplit=2)[0]: line.split()[-2:] for line in lines[head + 2 : head + 6]}
    assert table == {
        "task.mix_weight=0": ["0.035", "0.505"],
        "task.mix_weight=1": ["0.045", "0.025"],
        "least squares": ["0.000", "0.000"],
        "Lasso": ["0.001", "0.002"],
    }
    assert summary.nnz_block(load.final_evals(s, "nz").query("shift != 'nnz'")) == ""


# --------------------------------------------------------------------------- representations


def test_separation_scores_a_known_configuration():
    ratio, r2 = representations.separation_score(
        np.array([[0, 0], [0, 2], [4, 0], [4, 2]]), np.array(["0", "0", "1", "1"])
    )
    assert (ratio, r2) == pytest.approx((4.0, 0.8))


def test_separation_grows_from_blob_to_clusters(store):
    points = load.points(store, "arith", trial_id="a2")
    assert list(points.columns) == load.POINT_COLUMNS and len(points) == 200
    sep = representations.separation(points).set_index(["step", "split"])
    assert sep.loc[(100, "all"), "r2"] < 0.3 and sep.loc[(200, "all"), "r2"] > 0.99
    assert sep.loc[(200, "all"), "separation"] > 100 * sep.loc[(100, "all"), "separation"]
    assert sep.loc[(200, "id"), "n_points"] == 50 and sep.loc[(200, "all"), "n_labels"] == 10


def test_a_missing_study_names_the_studies_there(store):
    with pytest.raises(ConfigError, match="studies there: arith, icl"):
        load.check_study(store, "nope")


# --------------------------------------------------------------------------- structure scores


def test_structure_scores_are_read_with_their_trials(store, arith):
    trials, _ = arith
    scores = load.structure_scores(store, "arith", trials_frame=trials)
    assert len(scores) == 8 * 2 * 4 and set(scores["kind"]) == {"probe_digit", "repr_equivalence"}
    assert {"grid_point", "status", "model.size", "task.digits", "position", "layer", "length", "value"} <= set(scores)
    assert scores.set_index("trial_id").loc["a4", "status"].iloc[0] == "diverged"
    final = load.structure_scores(store, "arith", kinds=["repr_equivalence"], final=True, trials_frame=trials)
    assert set(final["step"]) == {200} and set(final["kind"]) == {"repr_equivalence"} and len(final) == 16
    assert set(load.structure_scores(store, "icl")["kind"]) == {"probe_coefficients"}
    # the PCA points stay apart from the scores
    assert load.points(store, "arith", kind=None)["kind"].unique().tolist() == ["pca_units_digit"]


def test_structure_comes_before_accuracy_in_cell_a_only(store, arith):
    trials, _ = arith
    scores = load.structure_scores(store, "arith", trials_frame=trials)
    evals = load.evals(store, "arith", metrics=["exact_match"], trials_frame=trials)
    curves = representations.structure_vs_accuracy(scores, evals)
    a0 = curves[curves["trial_id"] == "a0"].set_index("step")
    assert a0.loc[100, "structure"] == 0.95 and a0.loc[200, "structure"] == 0.97
    assert a0.loc[100, "accuracy"] == 0.5 and a0.loc[200, "accuracy"] == pytest.approx(0.9)
    lead = representations.first_crossings(curves, threshold=0.85).set_index("trial_id")
    assert lead.loc["a0", ["structure_step", "accuracy_step", "lead"]].tolist() == [100, 200, 100]
    assert lead.loc["c0", "lead"] == 0 and math.isnan(lead.loc["b0", "structure_step"])


def test_structure_by_length_and_per_cell(store, arith):
    trials, _ = arith
    scores = load.structure_scores(store, "arith", trials_frame=trials)
    lengths = representations.structure_by_length(scores, "repr_equivalence")
    a = lengths[lengths["cell"] == "model.size=nano|task.digits=3"]
    assert a["length"].tolist() == [4, 5] and a["median"].tolist() == [0.6, 0.3] and a["n"].tolist() == [3, 3]
    table = representations.structure_cells(scores, trials).set_index("cell")
    assert table.loc["model.size=nano|task.digits=3", ["structure", "n"]].tolist() == [0.98, 3]  # a4 diverged
    assert table.loc["model.size=micro|task.digits=3", "structure"] == pytest.approx(0.6)
    assert table.loc["model.size=nano|task.digits=4", ["structure", "n"]].tolist() == [1.0, 1]
    assert table.loc["model.size=micro|task.digits=4", "n"] == 0  # in the grid, never probed
    assert math.isnan(table.loc["model.size=micro|task.digits=4", "structure"])
    ood = representations.structure_cells(scores, trials, "repr_equivalence", split="ood").set_index("cell")
    assert ood["structure"].dropna().tolist() == pytest.approx([0.6, 0.6, 0.6])  # the first OOD length


def test_coefficient_curves_per_cell_and_condition(store, icl_study):
    trials, _ = icl_study
    curves = representations.coefficient_curves(load.structure_scores(store, "icl", trials_frame=trials))
    nano = curves[curves["cell"] == "model.size=nano|task.mix_weight=0.5"]
    ident, shifted = nano[nano["shift"] == "none"], nano[nano["shift"] == "nnz"]
    assert ident["k"].tolist() == list(range(7)) and ident["n"].tolist() == [2] * 7
    assert ident["median"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert set(shifted["split"]) == {"ood"} and shifted["median"].max() == pytest.approx(0.5)
