"""The trainable of every study: one Ray Tune trial trains one trial config, or a pack.

Trials only *report*: metrics for Tune and the searcher, rows for the store (which the
driver's :class:`~study.tune.callbacks.StoreCallback` writes) and a checkpoint at
each evaluation that ``train`` marks for one.

A Tune trial whose config lists ``members`` (see :class:`~study.tune.search.CellSearcher`)
trains them as one pack (:func:`study.train.train_pack`).  Every report carries
``members`` (each member's latest summary: metrics, step, status, under its own trial
id) and ``rows`` (each member's new rows, by trial id); its top-level metrics are the
best member's (by the study's metric and mode), which is what the scheduler compares,
so a pack is stopped early only when its best member would be.  One report per
evaluation: a member's divergence between evaluations travels with the next one.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
from typing import Any

from study.config import TrialConfig


def best_member(latest: dict[str, dict[str, Any]], metric: str | None, mode: str) -> dict[str, Any]:
    """The summary of the member with the best finite ``metric`` (the first member if none has one)."""
    if metric is None:
        return next(iter(latest.values()))
    scored = [m for m in latest.values() if isinstance(m.get(metric), (int, float)) and math.isfinite(m[metric])]
    if not scored:
        return next(iter(latest.values()))
    return (max if mode == "max" else min)(scored, key=lambda m: m[metric])


def replay_ended(ids: list[str], ended: dict[str, dict[str, Any]], metric: str | None, mode: str) -> dict[str, Any]:
    """The final report of a trial whose members all ended before a driver crash (as the
    store recorded them), for a resumed run whose Tune state still had the trial running:
    no step is trained again; ``replayed`` tells the store writer that nothing is new."""
    latest = {
        mid: {
            **({metric: ended[mid].get("score")} if metric is not None else {}),
            "step": ended[mid].get("steps"),
            "status": ended[mid]["status"],
            "n_params": ended[mid].get("n_params"),
            "device": ended[mid].get("device"),
            "node": ended[mid].get("node"),
        }
        for mid in ids
    }
    summary = best_member(latest, metric, mode)
    status = summary["status"] if len(ids) == 1 else "completed"
    return {
        **summary,
        "step": max(int(m["step"] or 0) for m in latest.values()),
        "status": status,
        "members": latest,
        "rows": {},
        "replayed": True,
    }


def load_latest_state(checkpoint) -> dict[str, Any] | None:
    """The training state in ``checkpoint``; when that checkpoint is gone (a driver killed
    between saving newer checkpoints, which deleted it, and recording them), the newest
    checkpoint of the same trial that is still there; None when none is left."""
    import pyarrow.fs as pafs
    from ray import tune

    from study.train import load_state

    def load(ckpt) -> dict[str, Any]:
        with ckpt.as_directory() as directory:
            return load_state(os.path.join(directory, "state.pt"))

    try:
        return load(checkpoint)
    except FileNotFoundError:
        pass
    fs, parent = checkpoint.filesystem, checkpoint.path.rstrip("/").rsplit("/", 1)[0]
    siblings = sorted(
        (
            info.path
            for info in fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
            if info.base_name.startswith("checkpoint_") and info.type == pafs.FileType.Directory
        ),
        reverse=True,
    )
    for path in siblings:
        try:
            return load(tune.Checkpoint(path, filesystem=fs))
        except (FileNotFoundError, OSError):
            continue
    return None


def worker_label(config: dict[str, Any]) -> str:
    """What Ray calls a trial's worker: the study, the grid point (a pack: its cell) and the
    members it trains.  Ray shows an actor's ``repr`` as its name on the dashboard's Actors
    page (the state API's ``repr_name``) and in the prefix of each of its log lines."""
    members = len(config.get("members") or [None])
    pack = f" x{members}" if members > 1 else ""
    return f"{config.get('study', 'trial')} {config.get('cell', 'all')}{pack}"


def named_trainable(trainable):
    """``trainable`` (a function, as :func:`run_trial` or ``tune.with_parameters`` of it) as
    Tune's class of it, named by :func:`worker_label`: Tune names every function's worker
    after the function (``run_trial``), so the dashboard listed a study's workers alike."""
    from ray.tune.trainable.function_trainable import wrap_function

    class StudyTrial(wrap_function(trainable)):
        def __repr__(self) -> str:  # Ray reads it once the worker holds its config
            return worker_label(getattr(self, "config", None) or {})

    StudyTrial.__name__ = StudyTrial.__qualname__ = "StudyTrial"
    return StudyTrial


def run_trial(
    config: dict[str, Any],
    fail_once_at_step: int | None = None,
    ended: dict[str, dict[str, Any]] | None = None,
    threads: int = 1,
) -> None:
    """One Ray Tune trial: train the config's model (or pack), reporting metrics, rows and checkpoints.

    ``fail_once_at_step`` raises once, after the report at that step, in a trial's
    first attempt: it exists to exercise retries from checkpoints.  ``ended``: on
    resume, the store's record of every member that already ended (member id ->
    status, steps, score, ...); a trial whose members all ended reports that and trains nothing.
    """
    import torch
    from ray import tune

    from study.train import PackReport, save_state, train_pack

    context = tune.get_context()
    trial_id = context.get_trial_id() or "local"
    members = config.get("members") or [{"trial_id": trial_id, "trial": config["trial"]}]
    cfgs = [TrialConfig.model_validate(m["trial"]) for m in members]
    ids = [m["trial_id"] for m in members]
    metric, mode = config.get("metric"), config.get("mode", "max")
    if ended and all(mid in ended for mid in ids):
        tune.report(replay_ended(ids, ended, metric, mode))
        return
    torch.set_num_threads(max(1, threads))  # resources.threads: one unless the spec asks for more
    checkpoint = tune.get_checkpoint()
    restore = load_latest_state(checkpoint) if checkpoint is not None else None
    first_attempt = restore is None
    study, point = config.get("study") or context.get_experiment_name(), config.get("cell", "all")
    prefix = f"[{study} {point} trial {trial_id}]"  # every line of the trial's log says what it trains
    print(
        f"{prefix} {'resuming at step ' + str(restore['step']) if restore else 'starting'}, "
        f"{cfgs[0].train.steps} steps, {len(ids)} member(s)",
        flush=True,
    )
    progress = _progress_poster(study)
    latest: dict[str, dict[str, Any]] = {}  # member id -> its latest summary
    held: dict[str, dict[str, list]] = {}  # member id -> table -> rows not reported yet

    def report(pack: PackReport) -> None:
        for r in pack.members:
            latest[r.trial_id] = {
                **r.metrics,
                "step": r.step,
                "status": r.status,
                "n_params": r.n_params,
                "device": r.device,
                "node": platform.node(),
            }
            for table, rows in r.rows.items():
                held.setdefault(r.trial_id, {}).setdefault(table, []).extend(rows)
        evaluated = any("evals" in r.rows for r in pack.members)
        done = len(latest) == len(ids) and all(m["status"] != "running" for m in latest.values())
        if not (evaluated or done):
            return
        summary = best_member(latest, metric, mode)
        status = summary["status"] if len(ids) == 1 else ("completed" if done else "running")
        metrics = {
            **summary,
            "step": pack.step,
            "status": status,
            "members": {mid: dict(m) for mid, m in latest.items()},
            "rows": dict(held),
        }
        held.clear()
        scores = "  ".join(
            f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, float) and (k.startswith("id_") or k == "loss")
        )
        print(f"{prefix} step {pack.step}/{cfgs[0].train.steps} {status}  {scores}", flush=True)
        if pack.state is None:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as directory:
                save_state(pack.state, os.path.join(directory, "state.pt"))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        if fail_once_at_step is not None and first_attempt and pack.step >= fail_once_at_step and not done:
            raise RuntimeError(f"injected failure after step {pack.step}")

    results = train_pack(cfgs, ids, restore=restore, report=report, progress=progress)
    if not latest:
        # restored from the checkpoint of the pack's last step (the driver died before Tune saw
        # the trial end): no step was left to train, so say again how every member ended
        for mid, r in zip(ids, results):
            latest[mid] = {
                **r.metrics,
                "step": r.steps,
                "status": r.status,
                "n_params": r.n_params,
                "device": r.device,
                "node": platform.node(),
            }
        summary = best_member(latest, metric, mode)
        status = summary["status"] if len(ids) == 1 else "completed"
        tune.report(
            {
                **summary,
                "step": max(r.steps for r in results),
                "status": status,
                "members": {mid: dict(m) for mid, m in latest.items()},
                "rows": {},
            }
        )


def _progress_poster(study: str, every_s: float = 2.0):
    """A ``progress(step, losses)`` hook posting each member's recent loss to the study's
    progress board at most every ``every_s`` seconds (None when the driver runs no board)."""
    import time

    from study.tune.progress import find_board

    board = find_board(study)
    if board is None:
        return None
    last = [float("-inf")]

    def progress(step: int, losses: dict[str, float]) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            board.post.remote(step, losses)

    return progress
