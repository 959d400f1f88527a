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

    def _trial_row(self, trial, member: dict[str, Any]) -> dict[str, Any]:
        mid = member["trial_id"]
        if mid not in self.trial_rows:
            self.trial_rows[mid] = {
                "trial_id": mid,
                "grid": json.dumps(member.get("grid", {})),
                "config": json.dumps(TrialConfig.model_validate(member["trial"]).to_dict()),
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
        return self.trial_rows[mid]

    def _flush(self, trial) -> None:
        """Append each member's buffered rows and its trials row; a buffer is emptied only
        once its rows are written, so a failed write loses nothing."""
        attempt = int(trial.num_failures)
        for member in trial_members(trial):
            mid, point_id = member["trial_id"], member["cell"]  # the member's grid point id
            buffer = self.buffers.get(mid, {})
            for (table, reported_attempt), rows in list(buffer.items()):
                if rows:
                    self.store.append(table, rows, study=self.study, attempt=reported_attempt, cell=point_id)
                del buffer[(table, reported_attempt)]
            row = self.trial_rows.get(mid)
            if row is not None:
                self.store.append("trials", [row], study=self.study, attempt=attempt, cell=point_id)

    def on_step_begin(self, iteration, trials, **info) -> None:
        if not self.seen_trials and trials:
            self.seen_trials = True
            self._close_orphans(trials)

    def _close_orphans(self, trials) -> None:
        """After a driver crash: trials in the store that the restored run does not know."""
        known = {m["trial_id"] for t in trials for m in trial_members(t)}
        frame = self.store.frame("trials", study=self.study)
        orphans = frame[(frame["status"].isin(["pending", "running"])) & ~frame["trial_id"].isin(known)]
        for _, row in orphans.iterrows():
            record = {k: row[k] for k in ("trial_id", "grid", "config", "start_time", "node", "device", "n_params", "steps", "score")}
            record = {k: (None if pd.isna(v) else v) for k, v in record.items()}
            record.update(status="abandoned", end_time=_now(), error="driver stopped before the trial was recorded")
            self.store.append("trials", [record], study=self.study, attempt=int(row["attempt"]) + 1, cell=row["cell"])

    def _rows(self, trial) -> list[dict[str, Any]]:
        return [self._trial_row(trial, m) for m in trial_members(trial)]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        for row in self._rows(trial):
            row["status"] = "running"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        members = trial_members(trial)
        rows = result.pop("rows", None) or {}
        reported = result.get("members")
        if reported is None:  # a one-model trainable's flat result
            reported, rows = {members[0]["trial_id"]: result}, {members[0]["trial_id"]: rows}
        attempt = int(trial.num_failures)  # rows keep the attempt that reported them
        for member in members:
            mid = member["trial_id"]
            buffer = self.buffers.setdefault(mid, {})
            for table, table_rows in (rows.get(mid) or {}).items():
                buffer.setdefault((table, attempt), []).extend(table_rows)
            mine = reported.get(mid)
            if mine is not None:
                self._trial_row(trial, member).update(
                    status=mine.get("status", "running"),
                    node=mine.get("node"),
                    device=mine.get("device"),
                    n_params=mine.get("n_params"),
                    steps=mine.get("step"),
                    score=mine.get(self.metric),
                )

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        self._flush(trial)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        for row in self._rows(trial):
            # a member still running when its trial ends was stopped by the scheduler
            row.update(status="pruned" if row["status"] == "running" else row["status"], end_time=_now())
        self._flush(trial)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        for member in trial_members(trial):  # the retry re-reports everything after its checkpoint
            self.buffers.pop(member["trial_id"], None)
        rows = self._rows(trial)
        for row in rows:
            row.update(status="retrying", error=_error_text(trial))
        self._flush(trial)
        for row in rows:
            row.update(status="running", error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        for row in self._rows(trial):
            row.update(status="failed", end_time=_now(), error=_error_text(trial))
        self._flush(trial)

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            if any(m["trial_id"] in self.buffers for m in trial_members(trial)):
                self._flush(trial)


def trial_members(trial) -> list[dict[str, Any]]:
    """The members a Tune trial trains (one, for a trial without ``members`` in its config):
    each with its store ``trial_id``, ``cell``, ``grid`` and raw ``trial`` config."""
    members = trial.config.get("members")
    if members:
        return members
    return [{"trial_id": trial.trial_id, "cell": trial.config.get("cell", "all"),
             "grid": trial.config.get("grid", {}), "trial": trial.config["trial"]}]


def _error_text(trial) -> str | None:
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text()[-2000:] if path and os.path.exists(path) else "trial raised an error"
    except OSError:
        return "trial raised an error"


class ProgressLine(Callback):
    """One live line: grid points done (printed as "cells"), trials (pack members) running/done, ETA."""

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
        done = [m for t in trials if t.status in ("TERMINATED", "ERROR") for m in trial_members(t)]
        running = sum(len(trial_members(t)) for t in trials if t.status == "RUNNING")
        per_point: dict[str, int] = {}
        for m in done:
            per_point[m["cell"]] = per_point.get(m["cell"], 0) + 1
        points_done = sum(n >= self.quota for n in per_point.values())
        total = self.n_points * self.quota
        elapsed = time.monotonic() - self.started
        eta = elapsed / len(done) * (total - len(done)) if done else float("nan")
        eta_text = f"{eta / 60:.1f} min" if eta == eta else "?"
        return (f"[{self.study_name}] cells {points_done}/{self.n_points} done | trials {running} running, "
                f"{len(done)}/{total} done | elapsed {elapsed / 60:.1f} min | ETA {eta_text}   ")

    def on_experiment_end(self, trials, **info) -> None:
        print(self.line(trials), file=sys.stderr, flush=True)
