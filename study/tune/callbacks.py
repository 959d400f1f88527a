"""Driver-side Tune callbacks of every study: the store writer and the progress line.

:class:`StoreCallback` buffers each trial's reported rows and appends them to the
store, flushing a trial's rows before Tune acknowledges that trial's checkpoint, so
every row at or before a trial's latest checkpoint is durable.  A retried or restored
trial re-reports the steps after its checkpoint; the store keeps the latest attempt
of each row key.  :class:`ProgressLine` prints the live progress and writes it where ``status`` reads it.

Every callback reads Tune's result without changing it, so their order does not matter,
with one exception that is the last callback on purpose: :class:`ForgetRows` takes the
rows out of each result once every other callback has read them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
from ray.tune import Callback

from study.config import SweepSpec, TrialConfig
from study.naming import TRIALS_FIELDS, grid_point_id, trials_row
from study.store import Store
from study.tune.progress import (
    StepRate,
    TrialProgress,
    eta_seconds,
    headline,
    one_line,
    progress_lines,
    remaining_steps,
    snapshot,
    start_board,
    write_progress,
)

if TYPE_CHECKING:
    from ray.util.metrics import Gauge

# seconds between the progress lines written to the board actor's log (the dashboard's copy)
BOARD_LOG_EVERY_S = 10.0


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
        self.replayed: set[str] = set()  # members whose end a resumed run only repeated: the store has it
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
            self.trial_rows[mid] = trials_row(
                trial_id=mid,
                grid=json.dumps(member.get("grid", {})),
                config=json.dumps(TrialConfig.model_validate(member["trial"]).to_dict()),
                status="pending",
                start_time=_now(),
                steps=0,
            )
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
            if row is not None and mid not in self.replayed:
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
            stored = {k: (None if pd.isna(row[k]) else row[k]) for k in TRIALS_FIELDS}
            record = trials_row(
                **{
                    **stored,
                    "status": "abandoned",
                    "end_time": _now(),
                    "error": "driver stopped before the trial was recorded",
                }
            )
            self.store.append("trials", [record], study=self.study, attempt=int(row["attempt"]) + 1, cell=row["cell"])

    def _rows(self, trial) -> list[dict[str, Any]]:
        return [self._trial_row(trial, m) for m in trial_members(trial)]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        for row in self._rows(trial):
            row["status"] = "running"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        members = trial_members(trial)
        rows = result.get("rows") or {}
        if result.get("replayed"):  # see study.tune.trial.replay_ended
            self.replayed.update(m["trial_id"] for m in members)
            return
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
        for member in trial_members(trial):
            row = self._trial_row(trial, member)
            if row["status"] == "running":
                # a member still running when its trial ends was stopped by the scheduler, unless it
                # had reached its planned steps (a trial restored at its end may not report again)
                planned = TrialConfig.model_validate(member["trial"]).train.steps
                row["status"] = "completed" if (row.get("steps") or 0) >= planned else "pruned"
            row["end_time"] = _now()
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


class ThresholdTable(Callback):
    """Driver side: the ``thresholds`` rows of a threshold search, one per cell, read off the
    searcher (:class:`~study.tune.threshold.ThresholdSearcher`) and written to the store at
    the start, whenever a seed's outcome changes a cell, and at the end.  A cell's newest row
    replaces its older ones (key: study, cell; ``attempt`` = the cell's seeds returned).

    It holds the searcher itself: Tune pickles the Tuner's search algorithm and callbacks
    together, so a restored run's callback reads the restored searcher."""

    def __init__(self, store_uri: str, study: str, searcher) -> None:
        self.store_uri, self.study, self.searcher = store_uri, study, searcher
        self._reset()

    def _reset(self) -> None:
        self._store: Store | None = None
        self.written: dict[str, tuple] = {}  # cell -> what its last row said

    def __getstate__(self) -> dict[str, Any]:
        return {"store_uri": self.store_uri, "study": self.study, "searcher": self.searcher}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def write(self) -> None:
        """Append the rows of the cells whose search changed since the last write."""
        from study.tune.threshold import threshold_rows

        def state(cell) -> tuple:
            return (cell.trials, len(cell.outcomes), cell.errors, cell.stopped or "searching")

        changed = [c for c in self.searcher.cells.values() if self.written.get(c.id) != state(c)]
        for row in threshold_rows(self.searcher.search, changed):
            if self._store is None:
                self._store = Store(self.store_uri)
            self._store.append(
                "thresholds", [row], study=self.study, attempt=row["outcomes"] + row["errors"], cell=row["cell"]
            )
            self.written[row["cell"]] = (row["trials"], row["outcomes"], row["errors"], row["stopped"])

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self.write()

    def on_step_end(self, iteration, trials, **info) -> None:
        self.write()  # after the searcher has heard of a trial's end (cheap when nothing changed)

    def on_experiment_end(self, trials, **info) -> None:
        self.write()


def trial_members(trial) -> list[dict[str, Any]]:
    """The members a Tune trial trains (one, for a trial without ``members`` in its config):
    each with its store ``trial_id``, ``cell``, ``grid`` and raw ``trial`` config."""
    members = trial.config.get("members")
    if members:
        return members
    return [
        {
            "trial_id": trial.trial_id,
            "cell": trial.config.get("cell", "all"),
            "grid": trial.config.get("grid", {}),
            "trial": trial.config["trial"],
        }
    ]


def _error_text(trial) -> str | None:
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text()[-2000:] if path and os.path.exists(path) else "trial raised an error"
    except OSError:
        return "trial raised an error"


class ProgressLine(Callback):
    """The live progress of a run: per running trial its grid point, step / total and last
    loss; trials and grid points done / running / pending; an ETA from the measured step rate.

    Printed to stderr (redrawn in place on a terminal, every 30 s otherwise) and
    written every few seconds to the progress file that ``oodstudy status`` reads.
    Trials post their step and loss to a :class:`~study.tune.progress.ProgressBoard`
    between evaluations.  ``clock`` (seconds, monotonic) can be replaced in tests.
    """

    def __init__(
        self, spec: SweepSpec, run_dir: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.study_name = spec.name
        self.run_dir = run_dir
        # a threshold search plans no trials in advance: it says its trials so far and its budget
        self.threshold = (
            None if spec.threshold is None else {"budget": spec.threshold.budget, "cells": len(spec.grid_points())}
        )
        self.planned = (
            {}
            if spec.threshold is not None
            else {
                grid_point_id(p): (
                    spec.tune.trials_per_grid_point,
                    TrialConfig.model_validate(spec.trial_raw(p, {})).train.steps,
                )
                for p in spec.grid_points()
            }
        )
        self.max_concurrent = spec.max_concurrent or 0
        self.clock = clock
        self._reset()

    def _reset(self) -> None:
        self.started: float | None = None
        self.rate = StepRate()
        self.board = None
        self.pending_read = None  # a read of the board on its way
        self.posted: dict[str, tuple[int, float]] = {}
        self.totals: dict[str, int] = {}  # trial id -> planned steps
        self.most_running = 0
        self.last_print = self.last_write = self.last_sample = self.last_show = float("-inf")
        self.interactive = sys.stderr.isatty()
        self.line_break = LineBreak()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for live in ("board", "pending_read", "posted", "rate", "started", "totals", "line_break"):
            state.pop(live, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self.board = start_board(self.study_name)
        if self.interactive:  # a log line of Ray's starts on a line of its own, not after the progress line
            for handler in logging.getLogger("ray").handlers:
                handler.addFilter(self.line_break)

    def progress(self, trials, posted: dict[str, tuple[int, float]] | None = None) -> list[TrialProgress]:
        """Tune's trials as :class:`TrialProgress` rows (posted: trial id -> (step, loss) from the board)."""
        rows = []
        for t in trials:
            if t.trial_id not in self.totals:
                self.totals[t.trial_id] = TrialConfig.model_validate(t.config["trial"]).train.steps
            last = t.last_result or {}
            status = {"RUNNING": "running", "TERMINATED": "done", "ERROR": "done"}.get(t.status, "pending")
            for member in trial_members(t):  # a pack: each member with its own loss, from its last
                mid = member["trial_id"]  # evaluation or, when newer, from the board
                reported = (last.get("members") or {}).get(mid, last)
                step, loss = int(reported.get("step") or last.get("step") or 0), reported.get("loss")
                if posted and mid in posted and posted[mid][0] >= step:
                    step, loss = posted[mid]
                rows.append(
                    TrialProgress(
                        mid,
                        member["cell"],
                        status,
                        step,
                        self.totals[t.trial_id],
                        None if loss is None else float(loss),
                    )
                )
        return rows

    def state(self, rows: list[TrialProgress], now: float, finished: bool = False) -> dict[str, Any]:
        """Sample the step rate at ``now`` and return the run's snapshot with its ETA."""
        if self.started is None:
            self.started = now
        running = sum(r.status == "running" for r in rows)
        self.most_running = max(self.most_running, running)
        self.rate.add(now, rows)
        slots = self.max_concurrent or self.most_running or 1
        eta = eta_seconds(remaining_steps(rows, self.planned), slots, self.rate.per_trial())
        state = snapshot(
            self.study_name,
            rows,
            self.planned,
            elapsed_s=now - self.started,
            eta_s=0.0 if finished else eta,
            finished=finished,
        )
        if getattr(self, "threshold", None):
            state["threshold"] = self.threshold
        return state

    def _posted(self) -> dict[str, tuple[int, float]]:
        """The board's latest (step, loss) per trial, without ever blocking Tune's loop:
        a read is sent, and collected at a later step once it has arrived."""
        if self.board is None:
            return self.posted
        import ray

        if self.pending_read is None:
            self.pending_read = self.board.read.remote()
        ready, _ = ray.wait([self.pending_read], timeout=0)
        if ready:
            try:
                self.posted = ray.get(self.pending_read)
            except ray.exceptions.RayError:  # a lost board only costs the between-evaluation steps
                self.board = None
            self.pending_read = None
        return self.posted

    def on_step_end(self, iteration, trials, **info) -> None:
        now = self.clock()
        if now - self.last_sample < 1.0:
            return
        self.last_sample = now
        state = self.state(self.progress(trials, self._posted()), now)
        if now - self.last_write >= 5.0:
            self.last_write = now
            self._write(state)
        if self.board is not None and now - self.last_show >= BOARD_LOG_EVERY_S:
            self.last_show = now
            self.board.show.remote(progress_lines(state))  # not awaited: the dashboard's copy never slows Tune
        if now - self.last_print >= (1.0 if self.interactive else 30.0):
            self.last_print = now
            if self.interactive:
                width = shutil.get_terminal_size((160, 20)).columns
                print("\r" + fit_line(one_line(state), width - 1), end="", file=sys.stderr, flush=True)
                self.line_break.open = True
            else:
                print("\n".join(progress_lines(state)), file=sys.stderr, flush=True)

    def _write(self, state: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        try:
            write_progress(self.run_dir, state)
        except OSError as err:  # progress is advisory: never stop a run for it
            print(f"\n[{self.study_name}] could not write the progress file: {err}", file=sys.stderr)
            self.run_dir = None

    def on_experiment_end(self, trials, **info) -> None:
        state = self.state(self.progress(trials), self.clock(), finished=True)
        self._write(state)
        if self.board is not None:
            self.board.show.remote([headline(state)])
        print(("\n" if self.line_break.open else "") + headline(state), file=sys.stderr, flush=True)
        self.line_break.open = False
        for handler in logging.getLogger("ray").handlers:
            handler.removeFilter(self.line_break)


class LineBreak(logging.Filter):
    """Ends the progress line (redrawn in place, no newline) before a log record is printed."""

    def __init__(self) -> None:
        super().__init__()
        self.open = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.open:
            sys.stderr.write("\n")
            self.open = False
        return True


def fit_line(text: str, width: int) -> str:
    """``text`` in ``width`` columns: cut with an ellipsis when longer, padded when shorter
    (so that a redraw covers the previous line)."""
    return text if len(text) == width else (text[: width - 1] + "\u2026" if len(text) > width else text.ljust(width))


# Prometheus names of the study gauges (Ray exports them with a "ray_" prefix) and their tags.
# ``oodstudy_cells`` counts grid points (every grid axis, seeds included) and the ``cell`` tag
# of ``oodstudy_best_score`` holds a grid point id, as the store's ``cell`` column does: names
# and tags keep their first spelling, which dashboards query (cluster/grafana/oodstudy.json).
STUDY_GAUGES = {
    "oodstudy_cells": ("grid points of the study by state (total, done, running, pending)", ("study", "state")),
    "oodstudy_trials": ("Tune trials of the study by status", ("study", "status")),
    "oodstudy_best_score": ("best ID score reported at a grid point so far (tune.metric)", ("study", "cell", "metric")),
    "oodstudy_examples_per_second": (
        "training examples per second of a running Tune trial (a pack: its cell)",
        ("study", "cell", "trial"),
    ),
}
TRIAL_STATUSES = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")


def member_points(trial) -> list[tuple[str, str]]:
    """(member trial id, grid point id) of each member a Tune trial trains: a pack has one
    per member (the trial's own ``cell`` key then holds the pack's cell, which is no grid
    point); a trial without ``members`` trains its own grid point."""
    return [(m["trial_id"], m["cell"]) for m in trial.config.get("members") or []] or [
        (trial.trial_id, trial.config.get("cell", "all"))
    ]


def grid_point_progress(trials, n_points: int, quota: int) -> dict[str, int]:
    """Grid points by state: done (quota of finished members reached), running (a member
    trains), pending; a pack's members count each toward their own grid point."""
    finished: dict[str, int] = {}
    running: set[str] = set()
    for t in trials:
        for _, point in member_points(t):
            if t.status in ("TERMINATED", "ERROR"):
                finished[point] = finished.get(point, 0) + 1
            elif t.status == "RUNNING":
                running.add(point)
    done = {point for point, n in finished.items() if n >= quota}
    n_running = len(running - done)
    return {"total": n_points, "done": len(done), "running": n_running, "pending": n_points - len(done) - n_running}


def best_scores(trials, metric: str, mode: str) -> dict[str, float]:
    """Per grid point: the best value of ``metric`` any of its members has reported.  A
    member's values are Tune's record of ``members/<id>/<metric>`` (a pack's own ``metric``
    is its best member's, whichever grid point that was); a trial that reports no
    ``members`` is read by its top-level ``metric``."""
    best: dict[str, float] = {}
    pick = max if mode == "max" else min
    for t in trials:
        packed = bool(t.config.get("members"))
        for member_id, point in member_points(t):
            reported = t.metric_analysis.get(f"members/{member_id}/{metric}" if packed else metric) or {}
            value = reported.get(mode)
            if value is None or value != value:  # not reported yet, or NaN
                continue
            best[point] = pick(best[point], value) if point in best else value
    return best


def trial_speed(result: dict[str, Any]) -> float | None:
    """Training examples/s of a Tune trial from one result: the sum over its members of each
    member's latest ``examples_per_s`` curve row (a trial's rows are keyed by member id, then
    table; flat ``{table: rows}`` is read as one member).  None when the result has none."""
    rows = result.get("rows") or {}
    per_member = [rows] if "curves" in rows else [m for m in rows.values() if isinstance(m, dict)]
    latest = [
        speeds[-1]
        for m in per_member
        if (speeds := [r["value"] for r in m.get("curves", []) if r.get("metric") == "examples_per_s"])
    ]
    return sum(latest) if latest else None


class StudyGauges(Callback):
    """Driver side: the study's progress as ``ray.util.metrics`` gauges, tagged with the study.

    Ray has no Tune view in its dashboard; these gauges reach the head's Prometheus
    endpoint and so Grafana (``cluster/grafana/oodstudy.json``).  Examples/s comes from the
    trial's own curve rows, read from the result as :class:`StoreCallback` reads them.
    """

    def __init__(self, spec: SweepSpec, every_s: float = 1.0) -> None:
        self.study, self.metric, self.mode = spec.name, spec.tune.metric, spec.tune.mode
        self.n_points, self.quota = len(spec.grid_points()), spec.tune.trials_per_grid_point
        self.every_s = every_s
        self._reset()

    def _reset(self) -> None:
        self._gauges: dict[str, Gauge] | None = None
        self.last_publish = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_gauges", "last_publish")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def gauges(self) -> dict:
        if self._gauges is None:
            from ray.util.metrics import Gauge

            self._gauges = {
                name: Gauge(name, description=text, tag_keys=tags) for name, (text, tags) in STUDY_GAUGES.items()
            }
        return self._gauges

    def publish(self, trials) -> None:
        for state, n in grid_point_progress(trials, self.n_points, self.quota).items():
            self.gauges["oodstudy_cells"].set(n, tags={"study": self.study, "state": state})
        for status in TRIAL_STATUSES:
            n = sum(t.status == status for t in trials)
            self.gauges["oodstudy_trials"].set(n, tags={"study": self.study, "status": status})
        for point, score in best_scores(trials, self.metric, self.mode).items():
            self.gauges["oodstudy_best_score"].set(
                score, tags={"study": self.study, "cell": point, "metric": self.metric}
            )

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self.last_publish >= self.every_s:
            self.last_publish = time.monotonic()
            self.publish(trials)

    def _set_speed(self, trial, value: float) -> None:
        tags = {"study": self.study, "cell": trial.config.get("cell", "all"), "trial": trial.trial_id}
        self.gauges["oodstudy_examples_per_second"].set(value, tags=tags)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        speed = trial_speed(result)
        if speed is not None:
            self._set_speed(trial, speed)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._set_speed(trial, 0.0)  # no longer running

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._set_speed(trial, 0.0)

    def on_experiment_end(self, trials, **info) -> None:
        self.publish(trials)


class ForgetRows(Callback):
    """Driver side, the last of a study's callbacks: takes ``rows`` out of each result once
    every other callback has read them.

    Tune keeps each result after its callbacks ran (a trial's last result and the results of
    its checkpoints, in the experiment state it saves every few seconds) and its loggers
    write it (``result.json``, ``progress.csv``, TensorBoard); the rows belong in the store,
    which :class:`StoreCallback` has written them to.  The one callback that changes a result:
    every other one reads it, in any order, before this one runs.
    """

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        result.pop("rows", None)
