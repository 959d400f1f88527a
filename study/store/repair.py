"""A damaged study: find the fragments readers skip, refuse to report on them silently,
and repair the study from what the store still holds.

Readers skip a fragment they cannot read (a truncated file, a wrong schema) with a
warning.  When that fragment is a ``trials`` fragment, a finished study reads as never
run: no trials rows, its evals and curves orphaned.  :func:`check_intact` turns that
into one error line naming ``oodstudy store validate`` and ``oodstudy store repair``;
:func:`repair_study` moves each unreadable fragment aside (nothing is deleted) into
``<root>/_damaged/<its path in the store>``, a tool-private folder that the store's
listing, ``validate`` and hive readers ignore (a leading ``_``), and rebuilds a trials
row for every trial that has rows in ``evals``, ``curves`` or ``representations`` but
no readable trials row.

What a rebuilt trials row says, from the trial's own rows (and the study's spec when
given, for the planned steps, the grid point and the tuning metric):

- ``steps``: the trial's last step in ``curves``/``evals``; ``score``: the tuning metric
  summarised from its evals at its last evaluated step (``study.train.summarize``, as
  the trial computed it); ``attempt``: the highest attempt among its rows;
- ``status``: ``diverged`` when its last loss is not finite (how a diverged trial ends
  its curve); ``completed`` when it reached the planned ``train.steps`` of its grid
  point; else ``abandoned`` (the status the driver gives a trial whose end it did not
  record): how it ended (stopped early, failed, interrupted) is not known, and
  ``abandoned`` counts as unfinished, so ``status`` shows the study unfinished and
  ``resume`` does not answer "nothing to do" but restores the run, whose own state
  decides what trains again.  Without a spec the planned steps are not known, so
  every trial that did not diverge is ``abandoned``;
- ``config``: only what is known for sure (the grid point's axes and ``task.family``),
  never the tuned values, which were in the lost row; ``error`` says the row was rebuilt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs

from study.errors import StoreError
from study.store.schema import TABLES, check_study
from study.store.sql import sql_literal
from study.store.uri import OBJECT_STORES

if TYPE_CHECKING:
    from study.config import SweepSpec
    from study.store.store import Store

# Where repair_study() puts the fragments it moves aside, under the store's root.
DAMAGED_DIR = "_damaged"
# The tables whose rows name a trial that must have a trials row.
TRIAL_TABLES = ("evals", "curves", "representations")
REBUILT_ERROR = (
    "trials row rebuilt by `oodstudy store repair` from the trial's {tables} rows "
    "(its own row was unreadable); {ending}"
)


@dataclass(frozen=True)
class Damage:
    """One fragment of a study that readers skip: its path in the store's filesystem,
    its table, its size in bytes and why it cannot be read."""

    path: str
    table: str
    size: int
    why: str

    def relative(self, store: Store) -> str:
        """The path below the store's root: ``trials/study=q/<name>.parquet``."""
        return self.path[len(store.root) + 1 :]


@dataclass
class RepairReport:
    """What :func:`repair_study` did: fragments moved aside (from, to) and trials rows rebuilt."""

    study: str
    moved: list[tuple[str, str]] = field(default_factory=list)
    rebuilt: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.moved and not self.rebuilt:
            return f"study {self.study}: nothing to repair (every fragment reads, every trial has its trials row)"
        lines = [
            f"study {self.study}: moved {len(self.moved)} unreadable fragment(s) aside, "
            f"rebuilt {len(self.rebuilt)} trials row(s)"
        ]
        lines += [f"  moved {src} -> {dst}" for src, dst in self.moved]
        lines += [
            f"  rebuilt trial {r['trial_id']} ({r['cell']}): {r['status']}, step {r['steps']}" for r in self.rebuilt
        ]
        return "\n".join(lines)


def damage(store: Store, study: str) -> list[Damage]:
    """The fragments of ``study`` (every table) that readers cannot use, with why.

    Judged as the readers judge them (their Parquet footer and schema, see
    ``Store.footer_problems``); damage never raises for a bad fragment."""
    check_study(study)
    frags = [f for table in TABLES for f in store.fragments(table, study)]
    found = []
    for frag, why in zip(frags, store.footer_problems(frags)):
        if why is not None:
            found.append(Damage(frag.path, frag.table, frag.size, " ".join(why.split())))
    return found


def damage_message(store: Store, study: str, found: list[Damage]) -> str:
    """One line: what is damaged, how to see it and how to repair it."""
    per_table: dict[str, int] = {}
    for d in found:
        per_table[d.table] = per_table.get(d.table, 0) + 1
    counts = " and ".join(f"{n} {table} fragment{'s' if n > 1 else ''}" for table, n in per_table.items())
    first = found[0]
    why = first.why if len(first.why) <= 200 else first.why[:197] + "..."
    more = f"; {len(found) - 1} more" if len(found) > 1 else ""
    return (
        f"the store at {store.uri} is damaged: {counts} of study {study} cannot be read "
        f"({first.relative(store)}: {why}{more}), so its results would read as incomplete; "
        f"see it with: oodstudy store validate --store {store.uri}; "
        f"repair with: oodstudy store repair --store {store.uri} --study {study}"
    )


def check_intact(store: Store, study: str) -> None:
    """Raise StoreError (one line naming ``store validate`` and ``store repair``) when a
    fragment of ``study`` cannot be read."""
    found = damage(store, study)
    if found:
        raise StoreError(damage_message(store, study, found))


def repair_study(store: Store, study: str, spec: SweepSpec | None = None) -> RepairReport:
    """Move each unreadable fragment of ``study`` aside into ``<root>/_damaged/``, then
    rebuild a trials row (appended through ``Store.append``) for every trial that has
    rows in evals, curves or representations but no readable trials row.

    ``spec`` (the study's spec, e.g. its copy in the run directory) gives the planned
    steps per grid point, the grid point's axes and the tuning metric; without it a
    rebuilt row is ``completed`` never (see the module's doc).  Safe to run again:
    a repaired study has nothing to repair.
    """
    check_study(study)
    report = RepairReport(study)
    for d in damage(store, study):
        report.moved.append((d.path, _move_aside(store, d)))
    rows = rebuild_rows(store, study, spec)
    for row in rows:
        store.append(
            "trials",
            [{k: v for k, v in row.items() if k not in ("cell", "attempt")}],
            study=study,
            attempt=row["attempt"],
            cell=row["cell"],
        )
    report.rebuilt = rows
    return report


def _move_aside(store: Store, found: Damage) -> str:
    """Move a fragment to ``<root>/_damaged/<its relative path>`` (a new name if taken)."""
    target = f"{store.root}/{DAMAGED_DIR}/{found.relative(store)}"
    n = 1
    while store.fs.get_file_info(target).type != pafs.FileType.NotFound:
        target = f"{store.root}/{DAMAGED_DIR}/{found.relative(store)}.{n}"
        n += 1
    try:
        if store.fs.type_name not in OBJECT_STORES:  # object stores have no directories
            store.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        store.fs.move(found.path, target)
    except (OSError, pa.ArrowException) as err:
        raise StoreError(
            f"cannot move the unreadable fragment {found.path} aside to {target}: "
            f"{' '.join(str(err).split())[:300]}; check the store's permissions and free space"
        ) from None
    return target


def orphan_trials(store: Store, study: str) -> list[str]:
    """Trial ids with rows in evals, curves or representations but no trials row."""
    known = set(store.frame("trials", study=study, columns=["trial_id"])["trial_id"])
    seen: set[str] = set()
    for table in TRIAL_TABLES:
        seen |= set(store.frame(table, study=study, columns=["trial_id"])["trial_id"].dropna())
    return sorted(seen - known)


def rebuild_rows(store: Store, study: str, spec: SweepSpec | None = None) -> list[dict[str, Any]]:
    """The trials rows :func:`repair_study` appends: one per orphan trial (see the module's doc)."""
    orphans = orphan_trials(store, study)
    if not orphans:
        return []
    where = f"trial_id IN ({', '.join(sql_literal(t) for t in orphans)})"
    frames = {t: store.frame(t, study=study, where=where) for t in TRIAL_TABLES}
    points = _points(spec)
    rows = []
    for trial in orphans:
        mine = {t: f[f["trial_id"] == trial] for t, f in frames.items()}
        rows.append(_rebuilt_row(trial, mine, points, spec))
    return rows


def _rebuilt_row(
    trial: str, mine: dict[str, Any], points: dict[str, tuple[dict, int, str]], spec: SweepSpec | None
) -> dict[str, Any]:
    present = [t for t in TRIAL_TABLES if len(mine[t])]
    cell = (
        next(str(mine[t]["cell"].dropna().iloc[0]) for t in present if mine[t]["cell"].notna().any())
        if any(mine[t]["cell"].notna().any() for t in present)
        else None
    )
    attempt = max(int(mine[t]["attempt"].max()) for t in present)
    steps = [int(mine[t]["step"].max()) for t in ("curves", "evals") if len(mine[t])]
    last = max(steps) if steps else 0
    written = [mine[t]["written_at"].min() for t in present] + [mine[t]["written_at"].max() for t in present]
    point = points.get(cell) if cell is not None else None
    planned = point[1] if point else None

    curves = mine["curves"]
    losses = curves[(curves["metric"] == "loss")].sort_values("step")
    diverged = len(losses) and not math.isfinite(float(losses["value"].iloc[-1]))
    if diverged:
        status, ending = "diverged", f"its loss is not finite at step {int(losses['step'].iloc[-1])}"
    elif planned is not None and last >= planned:
        status, ending = "completed", f"it reached its planned {planned} steps"
    else:
        status = "abandoned"
        ending = (
            f"its rows end at step {last} of {planned} planned, how it ended is not known"
            if planned is not None
            else f"its rows end at step {last}; the planned steps are not known without the study's spec"
        )
    score = None
    evals = mine["evals"]
    if spec is not None and len(evals) and not diverged:
        from study.train import summarize  # the trial's own summary of its evals (imports torch)

        at = evals[evals["step"] == evals["step"].max()]
        value = summarize(at[["split", "metric", "value"]].to_dict("records")).get(spec.tune.metric)
        score = None if value is None or not math.isfinite(value) else float(value)
    grid, family = (point[0], point[2]) if point else ({}, None)
    config = _nested({**grid, **({"task.family": family} if family else {})})
    return {
        "trial_id": trial,
        "cell": cell,
        "attempt": attempt,
        "grid": json.dumps(grid) if point else None,
        "config": json.dumps(config) if config else None,
        "status": status,
        "start_time": min(written).to_pydatetime(),
        "end_time": None if status == "abandoned" else max(written).to_pydatetime(),
        "steps": last,
        "score": score,
        "error": REBUILT_ERROR.format(tables="/".join(present), ending=ending),
    }


def _points(spec: SweepSpec | None) -> dict[str, tuple[dict, int, str]]:
    """Grid point id -> (its axes, its planned train.steps, its task.family), from the spec."""
    if spec is None:
        return {}
    from study.config import TrialConfig, grid_point_id

    out: dict[str, tuple[dict, int, str]] = {}
    for point in spec.grid_points():
        cfg = TrialConfig.model_validate(spec.trial_raw(point, {}))
        out[grid_point_id(point)] = (point, cfg.train.steps, cfg.task.family)
    return out


def _nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"task.digits": 2}`` -> ``{"task": {"digits": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
