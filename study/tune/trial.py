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
    study, point = config.get("study") or context.get_experiment_name(), config.get("cell", "all")
    prefix = f"[{study} {point} trial {trial_id}]"  # every line of the trial's log says what it trains
    print(f"{prefix} {'resuming at step ' + str(restore['step']) if restore else 'starting'}, "
          f"{cfg.train.steps} steps", flush=True)
    progress = _progress_poster(study, trial_id)

    def report(r: Report) -> None:
        scores = "  ".join(f"{k}={v:.4g}" for k, v in r.metrics.items() if k.startswith("id_") or k == "loss")
        print(f"{prefix} step {r.step}/{cfg.train.steps} {r.status}  {scores}", flush=True)
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

    train(cfg, trial_id=trial_id, restore=restore, report=report, progress=progress)


def _progress_poster(study: str, trial_id: str, every_s: float = 2.0):
    """A ``progress(step, loss)`` hook posting to the study's progress board at most every
    ``every_s`` seconds (None when the driver runs no board)."""
    import time

    from study.tune.progress import find_board

    board = find_board(study)
    if board is None:
        return None
    last = [float("-inf")]

    def progress(step: int, loss: float) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            board.post.remote(trial_id, step, loss)

    return progress
