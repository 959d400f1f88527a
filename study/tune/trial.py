"""The trainable of every study: one Ray Tune trial trains one trial config.

Trials only *report*: metrics for Tune and the searcher, rows for the store (which the
driver's :class:`~study.tune.callbacks.StoreCallback` writes) and a checkpoint at
each evaluation that ``train`` marks for one.
"""

from __future__ import annotations

import os
import platform
import tempfile
from typing import Any

from study.config import TrialConfig


def run_trial(config: dict[str, Any], fail_once_at_step: int | None = None) -> None:
    """One Ray Tune trial: train the config's model, reporting metrics, rows and checkpoints.

    ``fail_once_at_step`` raises once, after the report at that step, in a trial's
    first attempt: it exists to exercise retries from checkpoints.
    """
    import torch
    from ray import tune

    from study.train import Report, load_state, save_state, train

    cfg = TrialConfig.model_validate(config["trial"])
    context = tune.get_context()
    trial_id = context.get_trial_id() or "local"
    cpus = int(context.get_trial_resources().required_resources.get("CPU", 1)) if context.get_trial_resources() else 1
    torch.set_num_threads(max(1, cpus))
    restore = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            restore = load_state(os.path.join(directory, "state.pt"))
    first_attempt = restore is None

    def report(r: Report) -> None:
        metrics = {
            **r.metrics,
            "step": r.step,
            "status": r.status,
            "n_params": r.n_params,
            "device": r.device,
            "node": platform.node(),
            "rows": r.rows,
        }
        if r.state is None:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as directory:
                save_state(r.state, os.path.join(directory, "state.pt"))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        if fail_once_at_step is not None and first_attempt and r.step >= fail_once_at_step and not r.done:
            raise RuntimeError(f"injected failure after step {r.step}")

    train(cfg, trial_id=trial_id, restore=restore, report=report)
