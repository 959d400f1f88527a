"""Looking after a store: compaction (merge small fragments) and validation (find what
readers skip or what does not belong).  Functions of a :class:`~study.store.store.Store`;
``Store.compact`` and ``Store.validate`` call them."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.store.fragments import OWN_NAME, Fragment, merged_name
from study.store.schema import KEYS, MARKER, STUDY_NAME, TABLES, check_study, file_schema
from study.store.sql import connect, ctrl_c_as_keyboard_interrupt, sql_ident

if TYPE_CHECKING:
    from study.store.store import Store

# Temp files older than this are reported by validate() as leftovers of a crashed write.
STALE_TEMP_SECONDS = 15 * 60
# compact() merges fragments smaller than this (bytes) and leaves bigger ones alone.
COMPACT_MAX_BYTES = 256 * 2**20
# The footer key of a compacted fragment that lists the fragment names it replaces.
REPLACES_KEY = b"oodstudy.replaces"


@dataclass(frozen=True)
class Problem:
    """One thing validate() found: the path concerned, what is wrong, and how bad it is.

    ``severity`` is ``"error"`` (data a reader skips or a foreign file) or
    ``"warning"`` (harmless leftovers such as an old temp file or an unfinished
    compaction).
    """

    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


def compact(store: Store, study: str | None = None, *, max_bytes: int = COMPACT_MAX_BYTES) -> list[str]:
    """Merge each (table, study) partition's small fragments into one; return new paths.

    Small means under ``max_bytes`` (fragments already that big are left alone, so
    running compact during a study costs about what was written since the last
    run).  First finishes any compaction that crashed (deletes the fragments a
    merged fragment says it replaces), then writes one deduplicated fragment whose
    footer records the fragments it replaces, then deletes them.  Unreadable
    fragments are left alone.  Safe to run again, or concurrently, at any time.

    Ctrl-C raises KeyboardInterrupt (never DuckDB's own error for it) and leaves each
    partition either as it was (the merged fragment appears whole or not at all) or
    compacted: once the merged fragment is written, the fragments it replaces are
    deleted before the interrupt goes on.
    """
    written = []
    names = [study] if study is not None else store.studies()
    with ctrl_c_as_keyboard_interrupt():  # whichever DuckDB call it lands in
        for name in names:
            check_study(name)
            for table in TABLES:
                _finish_compaction(store, table, name)
                merged = _merge_partition(store, table, name, max_bytes)
                if merged is not None:
                    path, replaced = merged
                    try:
                        _delete_replaced(store, table, name, replaced)
                    except KeyboardInterrupt:
                        _delete_replaced(store, table, name, replaced)  # a file already gone is fine
                        raise
                    written.append(path)
    return written


def _replaced_by_merged(store: Store, table: str, study: str) -> set[str]:
    """Names of fragments that a merged fragment in the partition says it replaces."""
    replaced: set[str] = set()
    for frag in store.fragments(table, study):
        if "~" not in frag.name:
            continue
        try:
            meta = pq.read_schema(frag.path, filesystem=store.fs).metadata or {}
            replaced.update(json.loads(meta.get(REPLACES_KEY, b"[]")))
        except (pa.ArrowException, OSError, ValueError):
            continue
    return replaced


def _finish_compaction(store: Store, table: str, study: str) -> None:
    replaced = _replaced_by_merged(store, table, study)
    present = {f.name for f in store.fragments(table, study)}
    _delete_replaced(store, table, study, sorted(replaced & present))


def _delete_replaced(store: Store, table: str, study: str, names: Iterable[str]) -> None:
    for name in names:
        store.delete_file(f"{store.root}/{table}/study={study}/{name}")


def _merge_partition(store: Store, table: str, study: str, max_bytes: int) -> tuple[str, list[str]] | None:
    """Write one deduplicated fragment holding a partition's small fragments; return
    its path and the names it replaces, or None when there are not two to merge."""

    def small(frags: list[Fragment]) -> list[Fragment]:
        return [f for f in frags if f.size < max_bytes and OWN_NAME.match(f.name)]

    candidates = small(store.fragments(table, study))
    if len(candidates) < 2:
        return None
    store.check_fragments(candidates)  # never merge (and so delete) a file readers would skip
    used: list[Fragment] = []
    file_cols = ", ".join(sql_ident(c) for c in file_schema(table).names)

    def run(con: duckdb.DuckDBPyConnection, frags: dict[str, list[Fragment]]) -> pa.Table:
        used[:] = frags[table]
        query = f"SELECT {file_cols} FROM ({store.planner.dedup_sql(con, table, frags[table])}) AS t"
        return con.sql(query).to_arrow_table()

    data = store.read([table], run, study=study, select=small)
    if len(used) < 2:
        return None
    data = data.cast(file_schema(table))
    sources = [f.name for f in used]
    now = dt.datetime.now(dt.timezone.utc)
    path = f"{store.root}/{table}/study={study}/{merged_name(sources, now)}"
    store.write_parquet(path, data, {REPLACES_KEY: json.dumps(sources).encode()})
    return path, sources


def validate(store: Store) -> list[Problem]:
    """Everything in the store that readers skip or that does not belong there.

    Errors: unreadable Parquet, a wrong schema, foreign files or directories, a
    fragment holding a key twice or whose name misstates its content.  Warnings:
    a temp file older than STALE_TEMP_SECONDS, a Parquet file the store did not
    write (read, but never compacted), fragments a crashed compaction left.
    """
    problems: list[Problem] = []
    fragments: list[Fragment] = []
    now = dt.datetime.now(dt.timezone.utc)
    for info in store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True)):
        found = _classify(store, info, now)
        if isinstance(found, Problem):
            problems.append(found)
        elif isinstance(found, Fragment):
            fragments.append(found)
    good = []
    for frag, why in zip(fragments, store.footer_problems(fragments, check_names=True)):
        if why is None:
            good.append(frag)
        else:
            problems.append(Problem(frag.path, why))
    problems.extend(_duplicate_key_problems(store, good))
    for frag in good:
        if not OWN_NAME.match(frag.name):
            problems.append(Problem(frag.path, "not written by the store: read, but never compacted", "warning"))
    studies = store.studies()
    for table in TABLES:
        for study in studies:
            present = {f.name for f in store.fragments(table, study)}
            for old in sorted(_replaced_by_merged(store, table, study) & present):
                path = f"{store.root}/{table}/study={study}/{old}"
                message = "already merged by a compaction that did not finish; run `oodstudy store compact`"
                problems.append(Problem(path, message, "warning"))
    return sorted(problems, key=lambda p: p.path)


def _classify(store: Store, info: pafs.FileInfo, now: dt.datetime) -> Problem | Fragment | None:
    """What one entry under the root is: a fragment to check, a problem, or fine."""
    parts = info.path[len(store.root) + 1 :].split("/")
    name, depth = parts[-1], len(parts)
    is_file = info.type == pafs.FileType.File
    if parts[0].startswith("_"):
        return None  # tool-private entries (a sweep's _runs, _leases, _damaged) are not the store's to judge
    if name.startswith("."):
        age = (now - info.mtime).total_seconds() if info.mtime else 0.0
        if is_file and age > STALE_TEMP_SECONDS:
            message = f"temp file left by an interrupted write {age / 60:.0f} min ago; safe to delete"
            return Problem(info.path, message, "warning")
        return None
    if depth == 1:
        if name.startswith("_") or (name in TABLES and not is_file):
            return None  # the marker, or tool-private entries such as a sweep's _runs
        return Problem(
            info.path, f"unknown entry: a store holds {MARKER}, the tables {sorted(TABLES)} and _<private> entries"
        )
    if parts[0] not in TABLES:
        return None  # inside an entry judged above
    study = parts[1].removeprefix("study=")
    if not parts[1].startswith("study=") or not STUDY_NAME.match(study):
        return Problem(info.path, "not inside a study=<name> partition") if depth == 2 else None
    if depth == 2:
        return None if not is_file else Problem(info.path, "a file where a study=<name> directory belongs")
    if depth > 3 or not is_file:
        return Problem(info.path, "unexpected nesting inside a partition") if depth == 3 else None
    if name.startswith("_") or not name.endswith(".parquet"):
        return Problem(info.path, "foreign file in a partition (hive readers of the directory may fail on it)")
    return Fragment(info.path, parts[0], study, name, info.size or 0, info.mtime)


def _duplicate_key_problems(store: Store, frags: list[Fragment]) -> list[Problem]:
    """Fragments that hold a key twice (readers assume a fragment never does)."""
    problems = []
    for table in TABLES:
        mine = [f for f in frags if f.table == table]
        if not mine:
            continue
        keys = ", ".join(sql_ident(c) for c in KEYS[table])
        con = connect()
        try:
            query = (
                f"SELECT DISTINCT _frag FROM ({store.planner.source_sql(con, table, mine, 'check')}) AS s "
                f"GROUP BY _frag, {keys} HAVING count(*) > 1"
            )
            for (index,) in con.sql(query).fetchall():
                problems.append(Problem(mine[index].path, "holds the same key more than once"))
        finally:
            con.close()
    return problems
