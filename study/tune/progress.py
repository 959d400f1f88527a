"""A running study's live progress: per trial its grid point, step / total and last loss;
per grid point done / running / pending; an ETA from the measured rate of training steps.

A grid point is a cell with its seed; its id is what the store's ``cell`` column and a
trial config's ``"cell"`` key hold.

Pure parts first (:class:`TrialProgress`, :class:`StepRate`, :func:`eta_seconds`,
:func:`snapshot`, :func:`progress_lines`), then the two edges: the
:class:`ProgressBoard` actor the trials post their step and loss to (a trial reports to
Tune only at evaluations, which are minutes apart), and the progress file the driver
writes next to Tune's experiment state, which ``oodstudy status`` reads while a study
runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

PROGRESS_FILE = "oodstudy_progress.json"
BOARD_PREFIX = "oodstudy-progress:"
STALE_AFTER_S = 120.0  # a progress file older than this belongs to a driver that stopped


@dataclass
class TrialProgress:
    """One trial as the progress line shows it."""

    trial_id: str
    point: str  # grid point id
    status: str  # "running" | "pending" | "done"
    step: int
    total: int
    loss: float | None = None


# --------------------------------------------------------------------------- ETA


class StepRate:
    """The training speed of one running trial, in steps per second, measured over the
    last ``window_s`` seconds: the steps each trial gained between the first and the
    last time it was seen training, divided by the seconds between them, pooled over
    trials.  A trial counts from its first step on, so the start-up of Ray, of a
    worker and of a model does not dilute the speed."""

    def __init__(self, window_s: float = 120.0) -> None:
        self.window_s = window_s
        self.seen: dict[str, list[tuple[float, int]]] = {}  # trial id -> (time, step) while training

    def add(self, now: float, trials: list[TrialProgress]) -> None:
        for t in trials:
            if t.status != "running" or t.step <= 0:
                continue
            samples = self.seen.setdefault(t.trial_id, [])
            if samples and t.step < samples[-1][1]:  # back to a checkpoint: a new attempt
                samples.clear()
            if samples and t.step == samples[-1][1]:  # no new step posted since the last look
                continue
            samples.append((now, t.step))
            while len(samples) > 2 and samples[1][0] <= now - self.window_s:
                samples.pop(0)

    def per_trial(self) -> float | None:
        """Steps per second of one running trial; None until a trial was seen to advance."""
        steps = sum(s[-1][1] - s[0][1] for s in self.seen.values() if len(s) > 1)
        seconds = sum(s[-1][0] - s[0][0] for s in self.seen.values() if len(s) > 1)
        if steps <= 0 or seconds <= 0:
            return None
        return steps / seconds


def eta_seconds(remaining: Sequence[float], slots: int, rate: float | None) -> float | None:
    """Seconds until every trial is done: ``remaining`` steps per trial (running trials
    first, then pending ones in the order they will start) run on ``slots`` trials at a
    time, each at ``rate`` steps per second; a freed slot takes the next trial."""
    if not remaining:
        return 0.0
    if rate is None or rate <= 0:
        return None
    free_at = [0.0] * max(1, slots)
    for steps in remaining:
        slot = min(range(len(free_at)), key=free_at.__getitem__)
        free_at[slot] += steps / rate
    return max(free_at)


# --------------------------------------------------------------------------- snapshot


def snapshot(
    study: str,
    trials: list[TrialProgress],
    planned: dict[str, tuple[int, int]],
    *,
    elapsed_s: float,
    eta_s: float | None,
    finished: bool = False,
    now: float | None = None,
) -> dict[str, Any]:
    """The state of a run as one JSON-able dict.  ``planned``: grid point -> (trials,
    steps per trial).  Trials the searcher has not suggested yet count as pending."""
    points: dict[str, dict[str, int]] = {}
    for point, (n, _) in planned.items():
        mine = [t for t in trials if t.point == point]
        done = sum(t.status == "done" for t in mine)
        running = sum(t.status == "running" for t in mine)
        points[point] = {"planned": n, "done": done, "running": running, "pending": max(0, n - done - running)}
    return {
        "study": study,
        "updated": time.time() if now is None else now,
        "finished": finished,
        "elapsed_s": elapsed_s,
        "eta_s": eta_s,
        "points": points,
        "trials": [asdict(t) for t in trials],
    }


def remaining_steps(trials: list[TrialProgress], planned: dict[str, tuple[int, int]]) -> list[int]:
    """Steps left per trial, running trials first, then pending and not yet suggested ones."""
    running = [max(0, t.total - t.step) for t in trials if t.status == "running"]
    pending = [max(0, t.total - t.step) for t in trials if t.status == "pending"]
    unseen = []
    for point, (n, steps) in planned.items():
        known = sum(t.point == point for t in trials)
        unseen += [steps] * max(0, n - known)
    return running + pending + unseen


def short_point(point: str) -> str:
    """``task.digits=2|task.mix_weight=0.5`` -> ``digits=2 mix_weight=0.5``."""
    return " ".join(
        key.rsplit(".", 1)[-1] + sep + value for key, sep, value in (part.partition("=") for part in point.split("|"))
    )


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def headline(state: dict[str, Any]) -> str:
    """``[quickstart] trials 1 done, 2 running, 1 pending of 4 | grid points 0/4 done | 2.0 min elapsed, ETA 1.5 min``."""
    search = state.get("threshold")
    if search:  # the number of trials is not known in advance
        done = sum(t["status"] == "done" for t in state["trials"])
        running = sum(t["status"] == "running" for t in state["trials"])
        return (
            f"[{state['study']}] threshold search: {done} trials so far, {running} running, budget "
            f"{search['budget']} per cell ({search['cells']} cell{'s' * (search['cells'] != 1)}) | "
            f"{_minutes(state['elapsed_s'])} elapsed"
        )
    points = state["points"].values()
    done, running, pending = (sum(c[k] for c in points) for k in ("done", "running", "pending"))
    planned = sum(c["planned"] for c in points)
    points_done = sum(c["done"] >= c["planned"] for c in points)
    return (
        f"[{state['study']}] trials {done} done, {running} running, {pending} pending of {planned} | "
        f"grid points {points_done}/{len(state['points'])} done | {_minutes(state['elapsed_s'])} elapsed, "
        f"ETA {_minutes(state['eta_s'])}"
    )


def trial_text(t: dict[str, Any]) -> str:
    loss = f" loss {t['loss']:.3f}" if t.get("loss") is not None else ""
    return f"{short_point(t['point'])}: step {t['step']}/{t['total']}{loss}"


def progress_lines(state: dict[str, Any]) -> list[str]:
    """The headline, then one line per running trial."""
    running = [t for t in state["trials"] if t["status"] == "running"]
    return [headline(state)] + [f"  {trial_text(t)}" for t in running]


def one_line(state: dict[str, Any]) -> str:
    """Everything on one line (for a terminal that redraws it in place)."""
    running = [t for t in state["trials"] if t["status"] == "running"]
    return " | ".join([headline(state)] + [trial_text(t) for t in running])


# --------------------------------------------------------------------------- edges: board and file


def board_name(study: str) -> str:
    return BOARD_PREFIX + study


def board_title(study: str) -> str:
    """How the dashboard lists the study's board (its repr): what the start-up line names."""
    return f"progress of study {study}"


class ProgressBoard:
    """Ray actor (created by the driver, zero CPUs): the latest (step, loss) per trial (a
    pack's members each under their own trial id), and the driver's progress lines in its
    log.  The dashboard shows a driver's own output only for jobs sent through the Jobs API,
    so for an embedded ``oodstudy run`` this actor's log (its Log tab on the dashboard, under
    the study's job) is where the progress is read there."""

    def __init__(self, study: str = "") -> None:
        self.study = study
        self.latest: dict[str, tuple[int, float]] = {}

    def __repr__(self) -> str:  # the name the dashboard lists the actor under, and its log lines' prefix
        return board_title(self.study)

    def post(self, step: int, losses: dict[str, float]) -> None:
        for trial_id, loss in losses.items():
            self.latest[trial_id] = (step, loss)

    def read(self) -> dict[str, tuple[int, float]]:
        return dict(self.latest)

    def show(self, lines: list[str]) -> None:
        """Write the driver's progress lines to this actor's log, stamped with the UTC time."""
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        print("\n".join(f"{stamp} {line}" for line in lines), flush=True)


def start_board(study: str):
    """The study's board actor (None when Ray is not running)."""
    import ray

    if not ray.is_initialized():
        return None
    return ray.remote(num_cpus=0)(ProgressBoard).options(name=board_name(study), get_if_exists=True).remote(study)


def find_board(study: str):
    """From inside a trial: the board of its study, or None (e.g. a Tuner without ProgressLine)."""
    import ray

    try:
        return ray.get_actor(board_name(study))
    except ValueError:
        return None


def progress_path(run_dir: str, study: str) -> str:
    return f"{run_dir.rstrip('/')}/{study}/{PROGRESS_FILE}"


def write_progress(run_dir: str, state: dict[str, Any]) -> None:
    """Replace the progress file (local directory or object store URI)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(progress_path(run_dir, state["study"]))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    temp = path + ".tmp"
    with fs.open_output_stream(temp) as out:
        out.write(json.dumps(state).encode())
    fs.move(temp, path)


def read_progress(run_dir: str, study: str) -> dict[str, Any] | None:
    """The study's progress file, or None when there is none (never ran under this driver)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(progress_path(run_dir, study))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def is_live(state: dict[str, Any] | None, now: float | None = None) -> bool:
    """Is a driver running this study right now (unfinished and updated recently)?"""
    if state is None or state.get("finished"):
        return False
    return (time.time() if now is None else now) - float(state["updated"]) < STALE_AFTER_S
