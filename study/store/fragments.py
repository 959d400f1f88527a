"""What a fragment's name says: its write time and, for one trial, the trial and steps.

Names are ``<time>-<uuid>[_<trial hash>[_<min step>_<max step>]].parquet`` for an
append and ``<time>-<uuid>~<time>-<uuid>.parquet`` for a merge.  Readers use them to
find, without opening files, the fragments that may share a key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from study.store.schema import GROUP_COLUMNS

# The names the store gives fragments: ``<time>-<uuid>[_<trial hash>[_<min step>_<max
# step>]].parquet`` for an append, ``<time>-<uuid>~<time>-<uuid>.parquet`` for a merge.
OWN_NAME = re.compile(
    r"^\d{8}T\d{12}Z-[0-9a-f]{12}(_[0-9a-f]{8}(_-?\d+_-?\d+)?|~\d{8}T\d{12}Z-[0-9a-f]{12})?\.parquet$"
)


@dataclass(frozen=True)
class Fragment:
    """One visible Parquet fragment: its full path in the store's filesystem, the
    table and study it belongs to, its file name, size in bytes and modification time."""

    path: str
    table: str
    study: str
    name: str
    size: int
    mtime: dt.datetime | None


def fragment_name(now: dt.datetime, summary: str = "") -> str:
    """A unique fragment name that sorts by write time, then ``summary`` (see
    ``fragment_summary``): ``<time>-<uuid>[_<summary>].parquet``."""
    stem = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:12]}"
    return f"{stem}_{summary}.parquet" if summary else f"{stem}.parquet"


def merged_name(sources: list[str], now: dt.datetime) -> str:
    """The name of a compacted fragment: right after the latest source it replaces."""
    base = re.split(r"[_~.]", max(sources), maxsplit=1)[0]
    return f"{base}~{fragment_name(now)}"


def trial_hash(trial_id: str) -> str:
    return hashlib.blake2b(trial_id.encode(), digest_size=4).hexdigest()


def fragment_summary(table: str, data: pa.Table) -> str:
    """What a fragment of one trial holds, for its name: ``<trial hash>[_<min step>_<max step>]``.

    Readers use it to find, without opening files, the fragments that may share a
    key (same trial, overlapping steps).  Empty when the rows span several trials or
    have null trial ids or steps: such a fragment may share keys with any other.
    """
    trials = pc.unique(data.column("trial_id"))
    if len(trials) != 1 or not trials[0].is_valid:
        return ""
    summary = trial_hash(trials[0].as_py())
    if "step" in GROUP_COLUMNS[table]:
        steps = data.column("step")
        if steps.null_count:
            return ""
        low, high = pc.min_max(steps).values()
        summary += f"_{low.as_py()}_{high.as_py()}"
    return summary


def parse_summary(table: str, name: str) -> tuple[str, int, int] | None:
    """``(trial hash, min step, max step)`` from a fragment name, or None if it has none."""
    if "~" in name:
        return None
    parts = name.removesuffix(".parquet").split("_")
    wanted = 4 if "step" in GROUP_COLUMNS[table] else 2
    if len(parts) != wanted:
        return None
    try:
        return (parts[1], int(parts[2]), int(parts[3])) if wanted == 4 else (parts[1], 0, 0)
    except ValueError:
        return None


def maybe_overlapping(frags: list[Fragment]) -> list[Fragment]:
    """The fragments that may hold a key that another fragment also holds.

    Judged from the names alone: two single-trial fragments can share a key only if
    they belong to the same study and trial (hash) and their step ranges overlap.
    A fragment without a summary (several trials, or compacted) may overlap anything
    in its study, so then every fragment of that study is a candidate (unless it is
    the study's only fragment).
    """
    by_trial: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    wide_studies = set()
    for i, frag in enumerate(frags):
        summary = parse_summary(frag.table, frag.name)
        if summary is None:
            wide_studies.add(frag.study)
        else:
            by_trial.setdefault((frag.study, summary[0]), []).append((summary[1], summary[2], i))
    per_study: dict[str, int] = {}
    for frag in frags:
        per_study[frag.study] = per_study.get(frag.study, 0) + 1
    chosen = {i for i, frag in enumerate(frags) if frag.study in wide_studies and per_study[frag.study] > 1}
    for spans in by_trial.values():
        # Chain the step ranges into blocks of overlapping ranges; a block of two or
        # more fragments may share keys.
        spans.sort()
        block, reach = [spans[0][2]], spans[0][1]
        for low, high, i in spans[1:]:
            if low <= reach:
                block.append(i)
                reach = max(reach, high)
            else:
                chosen.update(block if len(block) > 1 else [])
                block, reach = [i], high
        chosen.update(block if len(block) > 1 else [])
    return [frags[i] for i in sorted(chosen)]


def summary_problem(frag: Fragment, meta: pq.FileMetaData) -> str | None:
    """Whether a fragment's name misstates its trial or steps (judged by footer statistics)."""
    summary = parse_summary(frag.table, frag.name)
    if summary is None or meta.num_rows == 0:
        return None
    named_hash, low, high = summary
    trials: set[str] = set()
    steps: list[int] = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stats = {group.column(j).path_in_schema: group.column(j).statistics for j in range(group.num_columns)}
        trial = stats.get("trial_id")
        if trial is None or not trial.has_min_max:
            return None
        trials.update((trial.min, trial.max))
        if "step" in GROUP_COLUMNS[frag.table]:
            step = stats.get("step")
            if step is None or not step.has_min_max:
                return None
            steps.extend((step.min, step.max))
    if len(trials) != 1 or trial_hash(next(iter(trials))) != named_hash:
        return "its name says it holds one trial, but its rows hold another or several"
    if steps and (min(steps) < low or max(steps) > high):
        return f"its name says it holds steps {low}..{high}, but it holds {min(steps)}..{max(steps)}"
    return None
