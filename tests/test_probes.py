"""Structure scores on synthetic hidden states whose structure is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.tasks.probes import (
    cluster_score,
    coefficient_r2,
    equivalence_rate,
    held_out_split,
    nearest_label_rate,
    probe_accuracy,
)


def clustered(labels: np.ndarray, d: int, spread: float, seed: int) -> np.ndarray:
    """States [N, d]: one random centre per label (unit-scale) plus Gaussian noise of ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels.max() + 1, d))
    return centres[labels] + spread * rng.normal(size=(len(labels), d))


def test_held_out_split_is_a_seeded_partition():
    train, test = held_out_split(100, 0.25, seed=3)
    assert len(test) == 25 and len(train) == 75
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    again, _ = held_out_split(100, 0.25, seed=3)
    other, _ = held_out_split(100, 0.25, seed=4)
    assert (again == train).all() and not (other == train).all()
    assert [len(p) for p in held_out_split(2, 0.9, seed=0)] == [1, 1]


def test_probe_reads_clustered_states_perfectly_and_random_states_at_chance():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    states = clustered(labels, d=48, spread=0.05, seed=1)
    (acc,) = probe_accuracy(states[:1500], labels[:1500], [(states[1500:], labels[1500:])])
    assert acc == 1.0
    noise = rng.normal(size=(2000, 48))
    (acc,) = probe_accuracy(noise[:1500], labels[:1500], [(noise[1500:], labels[1500:])])
    assert abs(acc - 0.1) < 0.05  # ten balanced labels


def test_probe_fitted_on_id_applies_to_ood_states():
    """OOD states in the clusters of their ID labels are read correctly; shifted away, they are not."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1200)
    states = clustered(labels, d=16, spread=0.05, seed=1)
    inside, outside = states[800:], states[800:] + 10.0 * rng.normal(size=(400, 16))
    id_acc, ood_inside, ood_outside = probe_accuracy(
        states[:600], labels[:600], [(states[600:800], labels[600:800]), (inside, labels[800:]), (outside, labels[800:])]
    )
    assert id_acc == 1.0 and ood_inside == 1.0 and ood_outside < 0.5


def test_probe_with_one_training_label_is_that_constant():
    states = np.random.default_rng(0).normal(size=(30, 4))
    labels = np.array([7] * 30)
    test_labels = np.array([7, 7, 3, 7])
    assert probe_accuracy(states, labels, [(states[:4], test_labels)]) == [0.75]
    assert math.isnan(probe_accuracy(states, labels, [(states[:0], labels[:0])])[0])


def test_cluster_score_is_one_for_tight_clusters_and_near_zero_for_random_states():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 600)
    assert cluster_score(clustered(labels, d=8, spread=1e-6, seed=1), labels) > 0.999
    assert -0.1 < cluster_score(rng.normal(size=(600, 8)), labels) < 0.02  # slightly negative for random labels
    assert math.isnan(cluster_score(rng.normal(size=(5, 2)), np.zeros(5, dtype=int)))  # one label


def test_equivalence_rate_is_one_for_states_built_to_match_and_chance_for_random_ones():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 32))  # states of 200 distinct ID inputs
    equivalent = rng.integers(0, 200, 500)  # each OOD input's ID equivalent
    matching = reference[equivalent] + 0.01 * rng.normal(size=(500, 32))
    assert equivalence_rate(matching, reference, equivalent) == 1.0
    unrelated = rng.normal(size=(500, 32))
    assert equivalence_rate(unrelated, reference, equivalent) < 0.03  # chance is 1/200
    # a state nearer another ID input's than its equivalent's is a miss
    assert equivalence_rate(reference[(equivalent + 1) % 200], reference, equivalent) == 0.0


def test_equivalence_rate_counts_ties_as_misses():
    reference = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])  # two ID inputs with one state
    assert equivalence_rate(np.array([[0.0, 0.1], [5.0, 5.0]]), reference, np.array([0, 2])) == 0.5
    assert math.isnan(equivalence_rate(np.zeros((0, 2)), reference, np.zeros(0, dtype=int)))


def test_nearest_label_rate_is_one_inside_the_id_clusters_and_chance_outside():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 600)
    states = clustered(labels, d=16, spread=0.05, seed=1)
    ref, ood = slice(0, 400), slice(400, 600)
    assert nearest_label_rate(states[ood], labels[ood], states[ref], labels[ref]) == 1.0
    noise = rng.normal(size=(200, 16))
    assert abs(nearest_label_rate(noise, labels[ood], states[ref], labels[ref]) - 0.1) < 0.06


@pytest.mark.parametrize("noise, low, high", [(0.0, 0.99, 1.0), (None, -0.2, 0.05)])
def test_coefficient_r2_is_one_for_linearly_held_coefficients_and_not_above_zero_for_noise(noise, low, high):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(1000, 5))  # the prompts' coefficients
    mixing = rng.normal(size=(5, 40))
    states = w @ mixing if noise is not None else rng.normal(size=(1000, 40))
    (r2,) = coefficient_r2(states[:700], w[:700], [(states[700:], w[700:])])
    assert low <= r2 <= high


# --------------------------------------------------------------------------- a trained model


@pytest.mark.slow
def test_a_trained_nano_adder_reads_its_units_digit_and_keeps_ood_states_by_their_equivalents(tmp_path):
    """The default trial (nano model, 3-digit addition in the 2308.08268 format), trained for
    1500 steps: enough for the units digit (the whole ID answer takes ~2.5K-6K steps).  At
    initialization the units-digit probe reads the digit at about chance; trained, it reads it
    (>= 0.95), and the scores reach the store as the sweep driver writes them."""
    import json

    import torch

    from analysis import load
    from study.config import trial_config
    from study.model import Transformer
    from study.store import Store
    from study.tasks import build_task
    from study.train import train

    cfg = trial_config(overrides=["train.steps=1500", "train.eval_every=1500", "task.eval_examples=64",
                                  "train.device=cpu"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a trial with resources.cpus=1 runs; spares a shared CPU
    try:
        torch.manual_seed(cfg.train.seed)  # the model train() starts from
        task = build_task(cfg.task, seed=cfg.train.seed)
        init = {(r["kind"], r["split"], r["position"], r["length"]): r["value"]
                for r in task.representations(Transformer(cfg.model, task.io).eval()) if "value" in r}
        reports = []
        train(cfg, report=reports.append)
    finally:
        torch.set_num_threads(threads)
    assert init[("probe_digit", "id", 0, 3)] < 0.25
    store = Store(str(tmp_path / "store"), create=True)
    store.append("trials", [{"trial_id": "local", "status": "completed", "config": json.dumps(cfg.to_dict()),
                             "grid": "{}"}], study="probe", cell="")
    for report in reports:
        store.append("representations", report.rows["representations"], study="probe", cell="")
    final = load.structure_scores(store, "probe", final=True).set_index(["kind", "split", "position", "length"])
    value = final["value"]
    assert value[("probe_digit", "id", 0, 3)] >= 0.95
    assert value[("probe_digit", "ood", 0, 4)] >= 0.8  # the ID probe reads 4-digit inputs too
    chance = value[("repr_equivalence_chance", "ood", 0, 4)]
    assert value[("repr_equivalence", "ood", 0, 4)] > 20 * chance  # chance: 1 / ~770 ID states
    assert value[("repr_equivalence_digit", "ood", 0, 4)] >= 0.8  # unrelated states: ~0.1
    assert init[("repr_equivalence_digit", "ood", 0, 4)] < 0.3
