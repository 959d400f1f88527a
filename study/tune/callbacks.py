"""Driver-side Tune callbacks of every study: the store writer and the progress line.

:class:`StoreCallback` buffers each trial's reported rows and appends them to the
store, flushing a trial's rows before Tune acknowledges that trial's checkpoint, so
every row at or before a trial's latest checkpoint is durable.  A retried or restored
trial re-reports the steps after its checkpoint; the store keeps the latest attempt
of each row key.  :class:`ProgressLine` prints one live line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from study.config import SweepSpec, TrialConfig
from study.store import Store


def _now() -> datetime:
    return datetime.now(timezone.utc)


class StoreCallback(Callback):
    """Driver side: buffer each trial's reported rows, append them to the store.

    A trial's buffer is flushed when its checkpoint is saved (before Tune records
    the checkpoint) and when the trial ends.  Rows reported after a trial's last
    checkpoint by an attempt that then fails are dropped: the retry resumes from
    that checkpoint and reports those steps again.
    """

    def __init__(self, store_uri: str, study: str, metric: str) -> None:
        self.store_uri, self.study, self.metric = store_uri, study, metric
        self._reset()

    def _reset(self) -> None:
        self._store = None
        self.buffers: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = {}  # trial -> (table, attempt) -> rows
        self.trial_rows: dict[str, dict[str, Any]] = {}
        self.seen_trials = False

    def __getstate__(self) -> dict[str, Any]:
        return {"store_uri": self.store_uri, "study": self.study, "metric": self.metric}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def store(self):
        if self._store is None:
            self._store = Store(self.store_uri)
        return self._store

    def _trial_row(self, trial) -> dict[str, Any]:
        if trial.trial_id not in self.trial_rows:
            self.trial_rows[trial.trial_id] = {
                "trial_id": trial.trial_id,
                "grid": json.dumps(trial.config.get("grid", {})),
                "config": json.dumps(TrialConfig.model_validate(trial.config["trial"]).to_dict()),
                "status": "pending",
                "start_time": _now(),
                "end_time": None,
                "node": None,
                "device": None,
                "n_params": None,
                "steps": 0,
                "score": None,
                "error": None,
            }
        return self.trial_rows[trial.trial_id]

    def _flush(self, trial) -> None:
        """Append a trial's buffered rows and its trials row; the buffer is emptied only
        once everything is written, so a failed write loses nothing."""
        point_id, attempt = trial.config.get("cell", "all"), int(trial.num_failures)  # the grid point id
        buffer = self.buffers.get(trial.trial_id, {})
        for (table, reported_attempt), rows in list(buffer.items()):
            if rows:
                self.store.append(table, rows, study=self.study, attempt=reported_attempt, cell=point_id)
            del buffer[(table, reported_attempt)]
        row = self.trial_rows.get(trial.trial_id)
        if row is not None:
            self.store.append("trials", [row], study=self.study, attempt=attempt, cell=point_id)

    def on_step_begin(self, iteration, trials, **info) -> None:
        if not self.seen_trials and trials:
            self.seen_trials = True
            self._close_orphans(trials)

    def _close_orphans(self, trials) -> None:
        """After a driver crash: trials in the store that the restored run does not know."""
        known = {t.trial_id for t in trials}
        frame = self.store.frame("trials", study=self.study)
        orphans = frame[(frame["status"].isin(["pending", "running"])) & ~frame["trial_id"].isin(known)]
        for _, row in orphans.iterrows():
            record = {k: row[k] for k in ("trial_id", "grid", "config", "start_time", "node", "device", "n_params", "steps", "score")}
            record = {k: (None if pd.isna(v) else v) for k, v in record.items()}
            record.update(status="abandoned", end_time=_now(), error="driver stopped before the trial was recorded")
            self.store.append("trials", [record], study=self.study, attempt=int(row["attempt"]) + 1, cell=row["cell"])

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._trial_row(trial)["status"] = "running"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        rows = result.pop("rows", None) or {}
        buffer = self.buffers.setdefault(trial.trial_id, {})
        attempt = int(trial.num_failures)  # rows keep the attempt that reported them
        for table, table_rows in rows.items():
            buffer.setdefault((table, attempt), []).extend(table_rows)
        row = self._trial_row(trial)
        row.update(
            status=result.get("status", "running"),
            node=result.get("node"),
            device=result.get("device"),
            n_params=result.get("n_params"),
            steps=result.get("step"),
            score=result.get(self.metric),
        )

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        self._flush(trial)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        row = self._trial_row(trial)
        last = trial.last_result or {}
        status = last.get("status", "running")
        row.update(status="pruned" if status == "running" else status, end_time=_now())
        self._flush(trial)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.buffers.pop(trial.trial_id, None)  # the retry re-reports everything after its checkpoint
        row = self._trial_row(trial)
        row.update(status="retrying", error=_error_text(trial))
        self._flush(trial)
        row.update(status="running", error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        row = self._trial_row(trial)
        row.update(status="failed", end_time=_now(), error=_error_text(trial))
        self._flush(trial)

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            if trial.trial_id in self.buffers:
                self._flush(trial)


def _error_text(trial) -> str | None:
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text()[-2000:] if path and os.path.exists(path) else "trial raised an error"
    except OSError:
        return "trial raised an error"


class ProgressLine(Callback):
    """One live line: grid points done (printed as "cells"), trials running/done, ETA."""

    def __init__(self, spec: SweepSpec) -> None:
        self.study_name = spec.name
        self.n_points, self.quota = len(spec.grid_points()), spec.tune.trials_per_cell
        self.started = time.monotonic()
        self.last_print = 0.0
        self.interactive = sys.stderr.isatty()

    def on_step_end(self, iteration, trials, **info) -> None:
        now = time.monotonic()
        if now - self.last_print < (1.0 if self.interactive else 30.0):
            return
        self.last_print = now
        print(self.line(trials), end="\r" if self.interactive else "\n", file=sys.stderr, flush=True)

    def line(self, trials) -> str:
        done = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        running = sum(t.status == "RUNNING" for t in trials)
        per_point: dict[str, int] = {}
        for t in done:
            per_point[t.config.get("cell", "all")] = per_point.get(t.config.get("cell", "all"), 0) + 1
        points_done = sum(n >= self.quota for n in per_point.values())
        total = self.n_points * self.quota
        elapsed = time.monotonic() - self.started
        eta = elapsed / len(done) * (total - len(done)) if done else float("nan")
        eta_text = f"{eta / 60:.1f} min" if eta == eta else "?"
        return (f"[{self.study_name}] cells {points_done}/{self.n_points} done | trials {running} running, "
                f"{len(done)}/{total} done | elapsed {elapsed / 60:.1f} min | ETA {eta_text}   ")

    def on_experiment_end(self, trials, **info) -> None:
        print(self.line(trials), file=sys.stderr, flush=True)
