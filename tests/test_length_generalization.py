"""Length generalization end to end: what the task's position ids buy on a CPU budget.

Measured (unpadded addition trained on up to 5 digits, '+' and '=', reversed answer, batch
64, lr 1e-3 cosine, seed 0, one thread while other work shared the two cores), exact match
at 5 / 6 / 8 / 10 digits with coupled ids:
  1 layer, d_model 128, 4 heads, max_position 16, 3000 steps   1.00 / 0.90 / 0.03 / 0.00
    the same, 6000 steps (at 2000 / 6000)        0.93 / 0.84 / 0.14 / 0.05, 1.00 / 0.67 / 0.02 / 0.00
    task.sampling=lengths                                        0.99 / 0.40 / 0.02 / 0.00
    2 heads                                                      0.99 / 0.62 / 0.00 / 0.00
    d_model 64                                                   1.00 / 0.13 / 0.01 / 0.00
    2 layers, d_model 64                                         1.00 / 0.24 / 0.01 / 0.00
    max_position 32 (d_model 64)                                 0.00 / 0.00 / 0.00 / 0.00
    operands padded to 12 digits (d_model 64, max_position 16)   0.02 / 0.00 / 0.00 / 0.00
No CPU budget measured keeps >= 90% exact match at 10 digits.  Where the errors sit says
why: the id table never sees an answer query and a key more than 5-6 ids apart in 5-digit
training (the offsets move the ids, not their span), and on longer operands those
untrained pairs draw attention away: 8-digit sums go wrong at answer digits 1-2 (75% of
them), whose queries sit 6-7 ids below the top operand digits, and are right at digits
5-6 (0-3%); 10-digit sums at digits 1-4 and 8-10.
"""

from __future__ import annotations

import pytest
import torch

from study.config import trial_config
from study.tasks.arithmetic import Arithmetic
from study.train import train


def sequential_ids(self, enc_or_significance, *_):
    tokens = getattr(enc_or_significance, "tokens", enc_or_significance)
    n, length = tokens.shape
    return torch.arange(length - 1).expand(n, length - 1)


@pytest.mark.slow
def test_task_ids_reach_the_model_like_its_own_positions(monkeypatch):
    """With ids 0, 1, 2, ... handed over by the task, the task-id path (ids through
    batches and decoding, the id-indexed table) learns 2-digit addition as learned
    positions do: 800 steps, ID exact match >= 0.9 for both (measured 0.975 and 0.975)."""
    monkeypatch.setattr(Arithmetic, "train_positions", sequential_ids)
    monkeypatch.setattr(Arithmetic, "fixed_positions", sequential_ids)
    scores = {}
    for scheme in ("randomized", "learned"):
        cfg = trial_config({
            "task": {"op": "add", "digits": 2, "train_set": "fresh", "pad": False, "symbols": True, "width": 12,
                     "eval_lengths": [2], "eval_grid": "diagonal", "eval_examples": 200},
            "model": {"n_layer": 1, "n_head": 4, "d_model": 64, "dropout": 0.0, "pos_encoding": scheme,
                      "max_position": 32},
            "train": {"steps": 800, "batch_size": 64, "lr": 1e-3, "warmup_steps": 200, "schedule": "cosine",
                      "eval_every": 800, "seed": 0, "device": "cpu"},
        })
        scores[scheme] = train(cfg).metrics["id_exact_match"]
    assert scores["randomized"] >= 0.9 and scores["learned"] >= 0.9, scores


BUDGET = {  # the CPU budget the boundary is measured at (see the module docstring)
    "task": {"op": "add", "digits": 5, "sampling": "below", "train_set": "fresh", "pad": False, "symbols": True,
             "width": 10, "reverse": True, "eval_lengths": [5, 6, 8, 10], "eval_grid": "diagonal",
             "eval_examples": 200, "probes": {"enabled": False}},
    "model": {"n_layer": 1, "n_head": 4, "d_model": 128, "dropout": 0.0, "max_position": 14},
    "train": {"steps": 2000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 200, "schedule": "cosine",
              "eval_every": 2000, "seed": 0, "device": "cpu"},
}


def scores_by_length(scheme: str) -> dict[str, dict[int, float]]:
    """{"exact_match": {length: value}, "digit_acc": {...}} at the last evaluation."""
    cfg = trial_config({**BUDGET, "model": {**BUDGET["model"], "pos_encoding": scheme}})
    result = train(cfg)
    last = max(row["step"] for row in result.eval_rows)
    scores: dict[str, dict[int, float]] = {"exact_match": {}, "digit_acc": {}}
    for row in result.eval_rows:
        if row["step"] == last and row["metric"] in scores:
            scores[row["metric"]][row["len_a"]] = round(row["value"], 3)
    return scores


@pytest.mark.slow
def test_coupled_ids_carry_addition_past_the_training_length_where_learned_positions_stop():
    """Trained on up to 5 digits (2000 steps, ~3 min for both runs on 2 shared cores),
    coupled ids (Cho et al., arXiv 2405.20671) keep some 6-digit sums exact and a third
    or more of the digits of 8- and 10-digit sums right; learned absolute positions write
    no right answer and almost no right digit beyond 5 digits.  Measured (seed 0):
    coupled exact 0.99 / 0.36 / 0.00 / 0.00 at 5 / 6 / 8 / 10 digits, digit accuracy
    1.00 / 0.87 / 0.49 / 0.33; learned exact 0.00 everywhere (it has not learned 5-digit
    addition on this budget either: digit accuracy 0.44 at 5, 0.06 / 0.00 / 0.01 beyond).
    The 3000-step spec run (search_spaces/length_methods_cpu.yaml, seeds 0 / 1): coupled
    0.995 / 1.00 at 5, 0.20 / 0.43 at 6, 0.005 / 0.04 at 8, 0 at 10 and 12 (and 0.04 / 0.02
    at 3 digits, rare in 'below' training); learned 0.07 / 1.00 at 5, 0 elsewhere.
    Neither holds at 10 digits on any CPU budget measured (see the module docstring)."""
    torch.set_num_threads(1)
    coupled, learned = scores_by_length("coupled"), scores_by_length("learned")
    em, digits = "exact_match", "digit_acc"
    assert coupled[em][5] >= 0.9, coupled
    assert coupled[em][6] >= 0.1 and learned[em][6] == 0.0, (coupled, learned)
    assert coupled[digits][8] >= 0.35 and coupled[digits][10] >= 0.25, coupled
    assert max(learned[digits][length] for length in (6, 8, 10)) <= 0.1, learned
