"""Recovering a run that a full disk (or a crash mid-write) cut short.

Two pieces the runner and the CLI use:

- :func:`disk_full_at` recognises "no space left on device" anywhere in an exception's
  chain (``__cause__``, ``__context__``, Ray's ``RayTaskError.cause``, and the text of a
  ``TuneError``, which carries only the formatted traceback of the error it wraps) and
  says, in one line, which filesystem is full: ``disk full at PATH``;
- :func:`run_state_problems` / :func:`set_aside_damaged_run_state` check the files of a
  study's Tune run directory that a write cut short leaves unreadable: Ray Tune writes
  its experiment state (``experiment_state-<session>.json``) in place, not atomically,
  and copies the searcher state into the run directory the same way, so a full disk
  can leave them truncated; ``Tuner.restore`` then logs "Failed to restore the run
  state" and goes on from a partial state.  Setting them aside (into
  ``<run dir>/_damaged/``, nothing deleted) lets the restore pick the previous session's
  state, or lets the caller see that none is left.
"""

from __future__ import annotations

import errno
import json
import os
import pickletools
from dataclasses import dataclass
from pathlib import Path

# The texts that say "no space left" when only an error's message survives (TuneError,
# a RayTaskError's string, pyarrow's "[errno 28] No space left on device").
NO_SPACE_TEXTS = ("No space left on device", "[Errno 28]", "[errno 28]", "Disk quota exceeded")
# Tune's run-state files in a study's run directory: name prefix -> how to check it.
RUN_STATE_FILES = {
    "experiment_state-": "json",
    "searcher-state-": "pickle",
    "search_gen_state-": "pickle",  # a pickle despite its .json suffix
    "tuner.pkl": "pickle",
    "oodstudy_spec.json": "json",
}
# Where set_aside_damaged_run_state() moves unreadable run-state files, under the run directory.
DAMAGED_DIR = "_damaged"


def _chain(err: BaseException):
    """``err`` and every exception it was raised from or during, each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__, getattr(e, "cause", None)) if isinstance(x, BaseException))


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` or an exception in its chain is ENOSPC (or EDQUOT), by errno or by text."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(e) for text in NO_SPACE_TEXTS):
            return True
    return False


def mount_point(path: str) -> str:
    """The mount point of the filesystem ``path`` is (or would be) on."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    p = p.resolve()
    while not os.path.ismount(p):
        p = p.parent
    return str(p)


def free_text(path: str) -> str:
    """``<free> free of <size>`` of the filesystem ``path`` is on."""
    stat = os.statvfs(mount_point(path))
    return f"{_size(stat.f_bavail * stat.f_frsize)} free of {_size(stat.f_blocks * stat.f_frsize)}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def disk_full_at(err: BaseException, paths: list[str]) -> str | None:
    """``"disk full at PATH (its filesystem MOUNT has 0 B free of 3.0 MiB)"`` when ``err``
    is a full disk, else None.  ``paths`` are where the run writes (the store, the run
    directory, the Optuna journal; remote URIs are skipped): the error itself rarely
    names the file (pyarrow says "Error writing bytes to file"), so PATH is the one of
    them on the filesystem with the least free space."""
    if not is_disk_full(err):
        return None
    local = [p for p in paths if p and "://" not in p]
    if not local:
        return "disk full at the store or run directory (no space left on device)"

    def free(path: str) -> int:
        try:
            stat = os.statvfs(mount_point(path))
            return stat.f_bavail * stat.f_frsize
        except OSError:
            return 1 << 62

    path = min(local, key=free)
    try:
        detail = f" (its filesystem {mount_point(path)} has {free_text(path)})"
    except OSError:
        detail = ""
    return f"disk full at {path}{detail}"


@dataclass(frozen=True)
class RunStateProblem:
    """A run-state file that cannot be read: its path, its size and why."""

    path: str
    size: int
    why: str

    def __str__(self) -> str:
        return f"{self.path} ({self.size} bytes): {self.why}"


def _problem(path: Path, kind: str) -> str | None:
    data = path.read_bytes()
    if not data:
        return "empty (a write cut short)"
    if kind == "json":
        try:
            json.loads(data)
        except ValueError as err:
            return f"not valid JSON ({err}): a write cut short"
        return None
    try:  # walks the opcodes without building any object: safe on any file
        for _ in pickletools.genops(data):
            pass
    except Exception as err:  # noqa: BLE001 - pickletools raises ValueError, IndexError, ...
        return f"not a complete pickle ({err}): a write cut short"
    return None


def run_state_problems(run_dir: str) -> list[RunStateProblem]:
    """The run-state files of a study's Tune run directory (``<storage path>/<study>``)
    that cannot be read (see RUN_STATE_FILES); an absent directory has none."""
    root = Path(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        kind = next((k for prefix, k in RUN_STATE_FILES.items() if path.name.startswith(prefix)), None)
        if kind is None or not path.is_file():
            continue
        why = _problem(path, kind)
        if why is not None:
            found.append(RunStateProblem(str(path), path.stat().st_size, why))
    return found


def set_aside_damaged_run_state(run_dir: str) -> list[tuple[str, str]]:
    """Move every unreadable run-state file into ``<run_dir>/_damaged/`` (nothing is
    deleted); return (from, to) pairs.  Tune's restore then reads the newest readable
    experiment state; with none left, ``Tuner.can_restore`` says so."""
    moved = []
    for problem in run_state_problems(run_dir):
        source = Path(problem.path)
        target = Path(run_dir) / DAMAGED_DIR / source.name
        n = 1
        while target.exists():
            target = Path(run_dir) / DAMAGED_DIR / f"{source.name}.{n}"
            n += 1
        target.parent.mkdir(exist_ok=True)
        os.replace(source, target)
        moved.append((str(source), str(target)))
    return moved
