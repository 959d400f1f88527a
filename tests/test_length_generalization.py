"""Length generalization end to end: what the task's position ids buy on a CPU budget.

Measured (unpadded addition trained on up to 5 digits, '+' and '=', reversed answer, batch
64, lr 1e-3 cosine, seed 0, one thread while other work shared the two cores), exact match
at 5 / 6 / 8 / 10 digits with coupled ids:
  1 layer, d_model 128, 4 heads, max_position 16, 3000 steps   1.00 / 0.90 / 0.03 / 0.00
    the same, 6000 steps (at 2000 / 6000)        0.93 / 0.84 / 0.14 / 0.05, 1.00 / 0.67 / 0.02 / 0.00
    task.sampling=lengths                                        0.99 / 0.40 / 0.02 / 0.00
    task.sampling=lengths, max_position 14, 2000 steps (the slow test's budget), seeds 0 / 1
                                     0.99 / 0.395 / 0.02 / 0.00, 0.985 / 0.89 / 0.04 / 0.00
    task.sampling=below, the same budget, seeds 0 / 1  0.99 / 0.36 / 0.00 / 0.00, 0.07 / 0.11 / 0 / 0
    2 heads                                                      0.99 / 0.62 / 0.00 / 0.00
    d_model 64                                                   1.00 / 0.13 / 0.01 / 0.00
    2 layers, d_model 64                                         1.00 / 0.24 / 0.01 / 0.00
    max_position 32 (d_model 64)                                 0.00 / 0.00 / 0.00 / 0.00
    operands padded to 12 digits (d_model 64, max_position 16)   0.02 / 0.00 / 0.00 / 0.00
    padded to 12, 2 layers, d_model 128, max_position 20, 2000 steps (283 s; loss 0.91)
      (the issue's prototype with the paper's ids, 5 / 8 / 10 digits)  0.00 / 0.00 / 0.00
    task.random_zero_pad (training operands zero-padded to a random width <= 12, evaluation
      unpadded), 3000 steps (at 1000 / 2000 / 3000)   0.86 / 0.015 / 0 / 0, 0.97 / 0.015 / 0 / 0,
                                                     1.00 / 0.02 / 0.00 / 0.00
  Abacus, unpadded, the 1-layer budget, 3000 steps                0.00 / 0.00 / 0.00 / 0.00
    (with task.sampling=below Abacus does not learn the ID sums; with lengths it does:
    search_spaces/length_methods_cpu.yaml)
The id table alone holds at 10 digits on no CPU budget measured.  Where the errors sit says
why: the id table never sees an answer query and a key more than 5-6 ids apart in 5-digit
training (the offsets move the ids, not their span), and on longer operands those
untrained pairs draw attention away: 8-digit sums go wrong at answer digits 1-2 (75% of
them), whose queries sit 6-7 ids below the top operand digits, and are right at digits
5-6 (0-3%); 10-digit sums at digits 1-4 and 8-10.  Zero padding, which puts far-apart ids
in every training sequence, does worse: the digits above the fifth are then always zeros in
training, and the model learns that (6-digit sums 0.02 exact, where unpadded gets 0.90).

Attention that reads the ids relatively fixes it.  Same model and format, max_position 16,
task.sampling=lengths, seed 0, exact match at 5 / 6 / 8 / 10 / 12 digits, final training
loss, wall seconds on one thread (other work sharing the cores):
  coupled (the id table alone), 2000 steps       0.98 / 0.375 / 0.005 / 0 / 0     loss 0.014, 51 s
  coupled_rope (RoPE by each token's id, and the table), 2000 steps
                                                 0.99 / 0.62 / 0.00 / 0 / 0       0.009, 97 s
    RoPE by id without the table                 1.00 / 0.055 / 0 / 0 / 0         0.007, 90 s
    RoPE by id and the table, 3000 steps         1.00 / 0.57 / 0.005 / 0 / 0      0.17, 180 s
  coupled_alibi (score - m_h |id_q - id_k|, and the table), 2000 steps, by slopes m_h:
    1, 1/2, 1/4, 1/8 (at 1000 / 2000)   0.815 / 0.635 / 0.255 / 0.02 / 0.005,
                                                 0.985 / 0.885 / 0.075 / 0 / 0         0.012, 78 s
    2, 2, 1, 1                                   0.97 / 0.915 / 0.965 / 0.625 / 0.40   0.025, 84 s
    4, 2, 1, 1/2, 3000 steps (at 1000 / 3000)   0.78 / 0.78 / 0.69 / 0.82 / 0.635,
                                                 0.985 / 0.695 / 0.08 / 0.005 / 0      0.006, 132 s
    4, 4, 2, 2 (the default)                     0.89 / 0.915 / 0.845 / 0.85 / 0.79    0.057, 68 s
      3000 steps, seed 0                         0.965 / 0.97 / 0.985 / 0.98 / 0.96    0.013, 133 s
      3000 steps, seed 1                         0.98 / 0.98 / 0.98 / 0.95 / 0.975     0.009, 115 s
      4000 steps                                 0.97 / 0.97 / 0.99 / 0.97 / 0.955     0.007, 173 s
      3000 steps, 2 layers                       0.995 / 0.995 / 0.995 / 0.985 / 0.99  0.013, 243 s
      3000 steps, max_position 20 (room for 15-digit sums)
                                                 0.94 / 0.94 / 0.92 / 0.91 / 0.88, 0.855 at 15 digits;
                                                 0.40 (one batch's loss), 161 s
      3000 steps, 2 layers, max_position 24, exact at 5 / 8 / 10 / 15 / 20 digits
                                                 1.00 / 1.00 / 0.99 / 0.96 / 0.955     260 s
      the same, max_position 44, exact at 5 / 10 / 20 / 30 / 40 digits (a wide id range
      slows learning)                            0.965 / 0.845 / 0.805 / 0.635 / 0.505  277 s
        4000 steps                               0.975 / 0.915 / 0.805 / 0.685 / 0.53   251 s
    4, 4, 2, 2 with heads 2 and 4 centred one place up, -m_h |id_k - id_q - 1| (the
      carry's two places as the two heads' centres)  0.67 / 0.655 / 0.445 / 0.47 / 0.355  0.080, 78 s
The curves point at a flat head as the leak: early in training (1000 steps) the runs with a
flat head are as good at 10-12 digits as at 5, then, as the loss falls, the long sums fail
again (training finds an answer through far-apart ids, which only a flat head can reach).
With every slope >= 2 a key k places away costs >= 2k: the lookup stays local and the
curve flat.  The length_methods_cpu spec, seeds 0 / 1 trained as one pack: 0.98 / 0.98 at
8 digits, 0.97 / 0.975 at 10, 0.975 / 0.92 at 12 (learned: ID not learned, 0.00).
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
        cfg = trial_config(
            {
                "task": {
                    "op": "add",
                    "digits": 2,
                    "train_set": "fresh",
                    "pad": False,
                    "symbols": True,
                    "width": 12,
                    "eval_lengths": [2],
                    "eval_grid": "diagonal",
                    "eval_examples": 200,
                },
                "model": {
                    "n_layer": 1,
                    "n_head": 4,
                    "d_model": 64,
                    "dropout": 0.0,
                    "pos_encoding": scheme,
                    "max_position": 32,
                },
                "train": {
                    "steps": 800,
                    "batch_size": 64,
                    "lr": 1e-3,
                    "warmup_steps": 200,
                    "schedule": "cosine",
                    "eval_every": 800,
                    "seed": 0,
                    "device": "cpu",
                },
            }
        )
        scores[scheme] = train(cfg).metrics["id_exact_match"]
    assert scores["randomized"] >= 0.9 and scores["learned"] >= 0.9, scores


BUDGET = {  # the CPU budget the boundary is measured at (see the module docstring)
    "task": {
        "op": "add",
        "digits": 5,
        "sampling": "lengths",
        "train_set": "fresh",
        "pad": False,
        "symbols": True,
        "width": 10,
        "reverse": True,
        "eval_lengths": [5, 6, 8, 10],
        "eval_grid": "diagonal",
        "eval_examples": 200,
        "probes": {"enabled": False},
    },
    "model": {"n_layer": 1, "n_head": 4, "d_model": 128, "dropout": 0.0, "max_position": 14},
    "train": {
        "steps": 2000,
        "batch_size": 64,
        "lr": 1e-3,
        "warmup_steps": 200,
        "schedule": "cosine",
        "eval_every": 2000,
        "seed": 0,
        "device": "cpu",
    },
}


def final_scores(result) -> dict[str, dict[int, float]]:
    """{"exact_match": {length: value}, "digit_acc": {...}} at a run's last evaluation."""
    last = max(row["step"] for row in result.eval_rows)
    scores: dict[str, dict[int, float]] = {"exact_match": {}, "digit_acc": {}}
    for row in result.eval_rows:
        if row["step"] == last and row["metric"] in scores:
            scores[row["metric"]][row["len_a"]] = round(row["value"], 3)
    return scores


def scores_by_length(scheme: str) -> dict[str, dict[int, float]]:
    """:func:`final_scores` of one run of ``scheme`` at the BUDGET."""
    return final_scores(train(trial_config({**BUDGET, "model": {**BUDGET["model"], "pos_encoding": scheme}})))


@pytest.mark.slow
def test_coupled_ids_carry_addition_past_the_training_length_where_learned_positions_stop():
    """Trained on up to 5 digits (2000 steps, each operand's digit count uniform in 1..5 as
    Cho et al. train; 130 s for both runs on 2 shared cores), coupled ids (Cho et al.,
    arXiv 2405.20671) keep 6-digit sums largely exact and two thirds of the digits of
    8-digit sums (half of 10-digit ones) right; learned absolute positions write no right
    answer and almost no right digit beyond 5 digits.  Measured, coupled, seeds 0 / 1:
    exact 0.99 / 0.985 at 5 digits, 0.395 / 0.89 at 6, 0.02 / 0.04 at 8, 0 / 0 at 10;
    digit accuracy 1.00 / 1.00, 0.91 / 0.98, 0.69 / 0.69, 0.53 / 0.48.  With
    task.sampling=below (mostly 5-digit operands) the same budget is seed-fragile: seed 0
    0.99 / 0.36 / 0.00 / 0.00 exact (digits 1.00 / 0.87 / 0.49 / 0.33), seed 1 0.07 / 0.11 /
    0 / 0 (digits 0.81 / 0.81 / 0.57 / 0.42).  The 3000-step spec run
    (search_spaces/length_methods_cpu.yaml) has both seeds' figures.  Neither scheme holds
    at 10 digits on any CPU budget measured (see the module docstring); coupled_alibi does
    (the last test)."""
    torch.set_num_threads(1)
    coupled, learned = scores_by_length("coupled"), scores_by_length("learned")
    em, digits = "exact_match", "digit_acc"
    assert coupled[em][5] >= 0.9, coupled
    assert coupled[em][6] >= 0.2 and learned[em][6] == 0.0, (coupled, learned)
    assert coupled[digits][8] >= 0.5 and coupled[digits][10] >= 0.35, coupled
    assert max(learned[digits][length] for length in (6, 8, 10)) <= 0.1, learned


@pytest.mark.slow
def test_alibi_over_coupled_ids_keeps_10_digit_sums_exact_after_5_digit_training():
    """The issue's bar: >= 90% exact match at 10 digits, trained on up to 5 digits.  Coupled
    ids whose attention also pays 2-4 per place of |id_q - id_k| (model.pos_encoding=
    coupled_alibi), the model above at 3000 steps: 128 s on 2 shared cores.  Measured,
    exact at 5 / 6 / 8 / 10 digits, seed 0: 0.955 / 0.965 / 0.975 / 0.945; seed 1 (run
    alone, not asserted): 0.985 / 0.99 / 0.97 / 0.99.  With
    max_position 16, run alone: seed 0 0.965 / 0.97 / 0.985 / 0.98 (0.96 at 12 digits),
    seed 1 0.98 / 0.98 / 0.98 / 0.95 (0.975); seeds 0 and 1 trained as one pack pass this
    test's bars too (262 s).  Learned positions write no right answer beyond 5 digits
    (the test above)."""
    torch.set_num_threads(1)
    cfg = trial_config(
        {
            **BUDGET,
            "model": {**BUDGET["model"], "pos_encoding": "coupled_alibi"},
            "train": {**BUDGET["train"], "steps": 3000, "eval_every": 3000},
        }
    )
    exact = final_scores(train(cfg))["exact_match"]
    assert exact[10] >= 0.9, exact
    assert min(exact[length] for length in (5, 6, 8)) >= 0.9, exact
