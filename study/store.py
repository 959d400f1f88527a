"""The Parquet results store: append-only, hive-partitioned, readable by any tool.

A store is a root URI: a local directory (``./results``), ``file://...``, or any
filesystem pyarrow supports (``s3://bucket/prefix``, ``gs://bucket/prefix``).  All
I/O goes through ``pyarrow.fs``; nothing assumes a local disk.

Layout::

    <root>/_oodstudy.json                                {"schema_version": 1, "created": ...}
    <root>/<table>/study=<name>/<time>-<uuid>_<trial hash>_<min step>_<max step>.parquet
    <root>/<table>/study=<name>/<time>-<uuid>~<time>-<uuid>.parquet     (compacted)

Writes: every append is one whole new fragment with a unique name that sorts by write
time.  On filesystems with rename it is written under a hidden temp name
(``.<name>.<random>.tmp``) in the same directory and renamed into place; on object
stores (S3, GCS) the upload only becomes visible once complete.  So no reader ever
sees a partial file.  Fragments hold every column of the table schema except
``study``, which lives in the directory name (standard hive partitioning: pyarrow,
pandas, DuckDB and polars read the tree directly).  A fragment that holds one trial
says so in its name: the trial id's hash and the range of its steps.

Reads: every row has a key (``schema.KEYS``); when a key was written more than once
(a retried or restored trial re-reports a step) readers keep the row with the highest
``attempt``, then the latest ``written_at``, then the latest fragment name.  This is
cheap because a fragment never holds a key twice (appends and compaction see to it):
a key can only repeat across fragments of the same trial whose step ranges overlap,
which the names tell without opening a file.  Only those fragments are read to find
the (study, trial, step) groups that really repeat, and only those groups' rows go
through the window function; every other row is read as it is.

Compaction merges a partition's small fragments into one deduplicated fragment whose
Parquet footer lists the fragments it replaces; they are deleted only after the merged
fragment is in place, and a later ``compact`` finishes a crashed one.  Because readers
deduplicate, they return the same rows at every point of a compaction.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import json
import os
import re
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.schema import ADDED_COLUMNS, KEYS, SCHEMA_VERSION, TABLES

MARKER = "_oodstudy.json"
DEFAULT_URI = "./results"
# Temp files older than this are reported by validate() as leftovers of a crashed write.
STALE_TEMP_SECONDS = 15 * 60
# compact() merges fragments smaller than this (bytes) and leaves bigger ones alone.
COMPACT_MAX_BYTES = 256 * 2**20
# The footer key of a compacted fragment that lists the fragment names it replaces.
REPLACES_KEY = b"oodstudy.replaces"
# Study names become directory names: keep them to characters that need no escaping.
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# Columns that group a table's keys into what one report writes at once.
_GROUP_COLUMNS = {t: [c for c in ("study", "trial_id", "step") if c in KEYS[t]] for t in TABLES}
_OBJECT_STORES = {"s3", "gcs"}
# The names the store gives fragments: ``<time>-<uuid>[_<trial hash>[_<min step>_<max
# step>]].parquet`` for an append, ``<time>-<uuid>~<time>-<uuid>.parquet`` for a merge.
_OWN_NAME = re.compile(
    r"^\d{8}T\d{12}Z-[0-9a-f]{12}(_[0-9a-f]{8}(_-?\d+_-?\d+)?|~\d{8}T\d{12}Z-[0-9a-f]{12})?\.parquet$"
)
# Query errors that are the query's own fault and never a sign of a bad fragment.
_QUERY_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException)
_READ_ERRORS = (duckdb.Error, pa.ArrowException, OSError)
_DICT_STRING = pa.dictionary(pa.int32(), pa.string())
_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


class StoreError(Exception):
    """A store cannot be opened or written as asked; the message says why and what to do."""


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


# ----------------------------------------------------------------------------- URIs


def open_filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, root path inside it)`` for a store URI.

    - a plain path (no ``scheme://``) is a local directory, made absolute;
    - ``s3://bucket/prefix?endpoint_override=http://host:port&region=...`` builds a
      pyarrow S3FileSystem from the query parameters, then ``storage_options``; the
      endpoint falls back to ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL``; small
      files are sent in a single PUT (``allow_delayed_open``);
    - anything else goes to ``pyarrow.fs.FileSystem.from_uri`` (``file://``, ``gs://``,
      ``hdfs://``...), or to the filesystem class with ``storage_options`` when given.
    """
    options = dict(storage_options or {})
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)).replace(os.sep, "/")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "s3a"):
        query = dict(parse_qsl(parts.query))
        merged: dict[str, Any] = {k: _parse_option(v) for k, v in query.items()}
        merged.update(options)
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_override" not in merged:
            merged["endpoint_override"] = endpoint
        merged.setdefault("allow_delayed_open", True)
        try:
            fs = pafs.S3FileSystem(**merged)
        except TypeError as err:
            raise StoreError(f"bad S3 option in {uri!r}: {err}") from None
        return fs, (parts.netloc + parts.path).rstrip("/")
    if options and scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(**options), (parts.netloc + parts.path).rstrip("/")
    if options:
        raise StoreError(f"storage_options are supported for s3:// and gs:// stores, not {scheme}://")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise StoreError(f"cannot open store URI {uri!r}: {err}") from None
    return fs, path.rstrip("/") or path


def _parse_option(value: str) -> Any:
    """A URI query value as Python: 'true'/'false' become booleans, numbers numbers."""
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value


# ----------------------------------------------------------------------------- rows


def coerce_rows(
    table: str,
    rows: list[dict[str, Any]] | pd.DataFrame | pa.Table,
    *,
    study: str,
    attempt: int | None = None,
    cell: str | None = None,
    now: dt.datetime | None = None,
) -> pa.Table:
    """Turn reported rows into a fragment table: the table's schema without ``study``.

    Missing optional columns become null; an unknown column is an error naming it.
    ``study``/``attempt``/``cell`` given as arguments fill rows that lack them (a row
    that says otherwise is an error); ``attempt`` defaults to 0 and ``written_at`` to
    ``now``.  If a key occurs twice, the row with the highest (attempt, written_at)
    is kept, the later one on a tie, so a fragment never holds a key twice.
    """
    schema = _table_schema(table)
    if isinstance(rows, pd.DataFrame):
        given = [str(c) for c in rows.columns]
    elif isinstance(rows, pa.Table):
        given = rows.column_names
    else:
        given = list(dict.fromkeys(k for row in rows for k in row))
    unknown = [c for c in given if c not in schema.names]
    if unknown:
        raise StoreError(
            f"unknown column(s) {unknown} for table {table!r}; its columns are {schema.names}"
        )
    n = len(rows)
    columns: dict[str, pa.Array] = {}
    for field in schema:
        if field.name not in given:
            columns[field.name] = pa.nulls(n, field.type)
            continue
        try:
            if isinstance(rows, pd.DataFrame):
                values = pa.array(rows[field.name], from_pandas=field.type != pa.float64())
            elif isinstance(rows, pa.Table):
                values = rows.column(field.name).combine_chunks()
            else:
                values = pa.array([row.get(field.name) for row in rows])
            if values.type != field.type:
                # Timestamps may carry nanoseconds the store does not keep; everything
                # else must convert exactly (3.5 is not an integer).
                values = values.cast(field.type, safe=not pa.types.is_timestamp(field.type))
            columns[field.name] = values
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise StoreError(
                f"column {field.name!r} of table {table!r} cannot be stored as {field.type}: {err}"
            ) from None
    now = now or dt.datetime.now(dt.timezone.utc)
    _check_fill(columns, "study", study)
    columns["attempt"] = pc.fill_null(_check_fill(columns, "attempt", attempt), 0)
    columns["cell"] = _check_fill(columns, "cell", cell)
    columns["written_at"] = pc.fill_null(columns["written_at"], pa.scalar(now, type=columns["written_at"].type))
    del columns["study"]
    out = pa.table(columns, schema=_file_schema(table))
    return _dedup_batch(table, out)


def _check_fill(columns: dict[str, pa.Array], name: str, value: Any) -> pa.Array:
    """Fill nulls of a column with ``value``; a non-null row that differs is an error."""
    column = columns[name]
    if value is None:
        return column
    scalar = pa.scalar(value, type=column.type)
    if column.null_count < len(column):
        differs = pc.not_equal(column, scalar)
        if pc.any(differs).as_py():
            found = pc.filter(column, differs)[0].as_py()
            raise StoreError(f"rows carry {name}={found!r} but {name}={value!r} was passed")
    return pc.fill_null(column, scalar)


def _dedup_batch(table: str, rows: pa.Table) -> pa.Table:
    """Keep one row per key: the highest (attempt, written_at), later rows win ties."""
    keys = [k for k in KEYS[table] if k != "study"]
    groups = rows.group_by(keys, use_threads=False).aggregate([])
    if groups.num_rows == rows.num_rows:
        return rows
    order = pa.array(range(rows.num_rows), pa.int64())
    ranked = rows.append_column("_row", order).sort_by(
        [("attempt", "ascending"), ("written_at", "ascending"), ("_row", "ascending")]
    )
    last = ranked.group_by(keys, use_threads=False).aggregate([("_row", "last")])
    keep = pc.sort_indices(last.column("_row_last"))
    return rows.take(pc.take(last.column("_row_last"), keep))


def _table_schema(table: str) -> pa.Schema:
    """The schema of a table, or a StoreError naming the tables that exist."""
    if table not in TABLES:
        raise StoreError(f"unknown table {table!r}; tables are {sorted(TABLES)}")
    return TABLES[table]


def _file_schema(table: str) -> pa.Schema:
    """What a fragment file holds: the table schema without the partition column."""
    schema = _table_schema(table)
    return schema.remove(schema.get_field_index("study"))


def _check_study(study: str) -> str:
    if not isinstance(study, str) or not _STUDY_NAME.match(study):
        raise StoreError(
            f"bad study name {study!r}: use letters, digits and . _ + - (it becomes a directory name)"
        )
    return study


def _fragment_name(now: dt.datetime, summary: str = "") -> str:
    """A unique fragment name that sorts by write time, then ``summary`` (see
    ``_summary``): ``<time>-<uuid>[_<summary>].parquet``."""
    stem = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:12]}"
    return f"{stem}_{summary}.parquet" if summary else f"{stem}.parquet"


def _merged_name(sources: list[str], now: dt.datetime) -> str:
    """The name of a compacted fragment: right after the latest source it replaces."""
    base = re.split(r"[_~.]", max(sources), maxsplit=1)[0]
    return f"{base}~{_fragment_name(now)}"


def _trial_hash(trial_id: str) -> str:
    return hashlib.blake2b(trial_id.encode(), digest_size=4).hexdigest()


def _summary(table: str, data: pa.Table) -> str:
    """What a fragment of one trial holds, for its name: ``<trial hash>[_<min step>_<max step>]``.

    Readers use it to find, without opening files, the fragments that may share a
    key (same trial, overlapping steps).  Empty when the rows span several trials or
    have null trial ids or steps: such a fragment may share keys with any other.
    """
    trials = pc.unique(data.column("trial_id"))
    if len(trials) != 1 or not trials[0].is_valid:
        return ""
    summary = _trial_hash(trials[0].as_py())
    if "step" in _GROUP_COLUMNS[table]:
        steps = data.column("step")
        if steps.null_count:
            return ""
        low, high = pc.min_max(steps).values()
        summary += f"_{low.as_py()}_{high.as_py()}"
    return summary


def _parse_summary(table: str, name: str) -> tuple[str, int, int] | None:
    """``(trial hash, min step, max step)`` from a fragment name, or None if it has none."""
    if "~" in name:
        return None
    parts = name.removesuffix(".parquet").split("_")
    wanted = 4 if "step" in _GROUP_COLUMNS[table] else 2
    if len(parts) != wanted:
        return None
    try:
        return (parts[1], int(parts[2]), int(parts[3])) if wanted == 4 else (parts[1], 0, 0)
    except ValueError:
        return None


def _maybe_overlapping(frags: list[Fragment]) -> list[Fragment]:
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
        summary = _parse_summary(frag.table, frag.name)
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


def _summary_problem(frag: Fragment, meta: pq.FileMetaData) -> str | None:
    """Whether a fragment's name misstates its trial or steps (judged by footer statistics)."""
    summary = _parse_summary(frag.table, frag.name)
    if summary is None or meta.num_rows == 0:
        return None
    trial_hash, low, high = summary
    trials, steps = set(), []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stats = {group.column(j).path_in_schema: group.column(j).statistics for j in range(group.num_columns)}
        trial = stats.get("trial_id")
        if trial is None or not trial.has_min_max:
            return None
        trials.update((trial.min, trial.max))
        if "step" in _GROUP_COLUMNS[frag.table]:
            step = stats.get("step")
            if step is None or not step.has_min_max:
                return None
            steps.extend((step.min, step.max))
    if len(trials) != 1 or _trial_hash(next(iter(trials))) != trial_hash:
        return "its name says it holds one trial, but its rows hold another or several"
    if steps and (min(steps) < low or max(steps) > high):
        return f"its name says it holds steps {low}..{high}, but it holds {min(steps)}..{max(steps)}"
    return None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ----------------------------------------------------------------------------- store


class Store:
    """A results store at a root URI (see the module docstring for the layout).

    ``create``: make a new store when the root is missing or empty (else a
    StoreError).  ``storage_options``: keyword arguments for the pyarrow filesystem
    (e.g. ``{"endpoint_override": "http://127.0.0.1:9000"}`` for S3).  ``reader``:
    ``"auto"`` reads local stores with DuckDB's own Parquet reader and other
    filesystems through ``pyarrow.dataset``; ``"duckdb"`` or ``"arrow"`` force one.
    """

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        create: bool = True,
        *,
        storage_options: dict[str, Any] | None = None,
        reader: str = "auto",
    ) -> None:
        if reader not in ("auto", "duckdb", "arrow"):
            raise StoreError(f"reader must be 'auto', 'duckdb' or 'arrow', not {reader!r}")
        self.uri = str(uri)
        self.fs, self.root = open_filesystem(self.uri, storage_options)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        if reader == "duckdb" and not self.is_local:
            raise StoreError("reader='duckdb' needs a local store; use 'arrow' or 'auto'")
        self.reader = ("duckdb" if self.is_local else "arrow") if reader == "auto" else reader
        self._object_store = self.fs.type_name in _OBJECT_STORES
        self._made_dirs: set[str] = set()
        # table -> (fragment paths, flagged groups, dirty fragment paths); see _dedup_plan
        self._plans: dict[str, tuple[tuple[str, ...], pa.Table, frozenset[str]]] = {}
        # path -> (size, why it cannot be read) for fragments readers skip
        self._bad: dict[str, tuple[int, str]] = {}
        self.created: str | None = None
        self._open(create)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- opening -------------------------------------------------------------------

    def _open(self, create: bool) -> None:
        """Check the marker (and its schema version), or make a new store."""
        info = self.fs.get_file_info(self.root)
        marker = f"{self.root}/{MARKER}"
        if info.type == pafs.FileType.File:
            raise StoreError(
                f"{self.uri} is a file, not a store; pass a directory (a new or empty one "
                f"to start a store, e.g. --store ./results)"
            )
        if info.type == pafs.FileType.Directory:
            marker_info = self.fs.get_file_info(marker)
            if marker_info.type == pafs.FileType.File:
                self._read_marker(marker)
                return
            entries = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
            # Hidden entries (a temp file: another process creating this store right
            # now) and "_" entries (tool-private, e.g. a sweep's _runs) do not count.
            entries = [e for e in entries if not e.base_name.startswith((".", "_"))]
            if entries:
                names = sorted(e.base_name for e in entries)[:5]
                raise StoreError(
                    f"{self.uri} is not an oodstudy store: it is not empty (holds {names}...) "
                    f"and has no {MARKER}; pass a new or empty directory, or, if this is a "
                    f"store that lost its marker, write "
                    f'{{"schema_version": {SCHEMA_VERSION}}} to {marker}'
                )
        if not create:
            raise StoreError(f"no store at {self.uri}; write results there first (or open with create=True)")
        if not self._object_store:
            self.fs.create_dir(self.root, recursive=True)
        self.created = dt.datetime.now(dt.timezone.utc).isoformat()
        body = json.dumps({"schema_version": SCHEMA_VERSION, "created": self.created}, indent=1)
        try:
            self._put(marker, lambda out: out.write(body.encode()))
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"cannot create a store at {self.uri}: {err}") from None

    def _read_marker(self, marker: str) -> None:
        try:
            with self.fs.open_input_stream(marker) as f:
                meta = json.loads(f.read().decode())
            version = meta["schema_version"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(
                f"{marker} is unreadable ({err}); it should hold "
                f'{{"schema_version": {SCHEMA_VERSION}, "created": ...}}'
            ) from None
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self.uri} has schema version {version}, but this oodstudy "
                f"reads version {SCHEMA_VERSION}; open it with the oodstudy release that "
                f"wrote it, or write new results to a new store"
            )
        self.created = meta.get("created")

    # -- writing -------------------------------------------------------------------

    def append(
        self,
        table: str,
        rows: list[dict[str, Any]] | pd.DataFrame | pa.Table,
        *,
        study: str,
        attempt: int | None = None,
        cell: str | None = None,
    ) -> str:
        """Write rows as one new fragment of ``table`` in ``study``; return its path.

        Rows are coerced to the table schema (see ``coerce_rows``).  Nothing is
        written (and ``""`` returned) when there are no rows.
        """
        _check_study(study)
        now = dt.datetime.now(dt.timezone.utc)
        data = coerce_rows(table, rows, study=study, attempt=attempt, cell=cell, now=now)
        if data.num_rows == 0:
            return ""
        directory = f"{self.root}/{table}/study={study}"
        path = f"{directory}/{_fragment_name(now, _summary(table, data))}"
        self._write_parquet(path, data)
        return path

    def _write_parquet(self, path: str, data: pa.Table, metadata: dict[bytes, bytes] | None = None) -> None:
        """Write a Parquet file so that it appears whole or not at all."""
        if metadata:
            data = data.replace_schema_metadata({**(data.schema.metadata or {}), **metadata})
        self._put(path, lambda out: pq.write_table(data, out))

    def _put(self, path: str, write: Callable[[pa.NativeFile], None]) -> None:
        """Create a file atomically: on object stores the upload becomes visible only
        once complete; elsewhere it is written under a hidden temp name in the same
        directory (``.<name>.<random>.tmp``) and renamed into place."""
        directory, name = path.rsplit("/", 1)
        if self._object_store:
            with self.fs.open_output_stream(path) as out:
                write(out)
            return
        if directory not in self._made_dirs:
            self.fs.create_dir(directory, recursive=True)
            self._made_dirs.add(directory)
        temp = f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self.fs.open_output_stream(temp) as out:
                write(out)
            self.fs.move(temp, path)
        except BaseException:
            self._delete_quietly(temp)
            raise

    def _delete_quietly(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (OSError, pa.ArrowException):
            pass

    # -- listing -------------------------------------------------------------------

    def studies(self) -> list[str]:
        """The names of all studies with a partition in any table."""
        names: set[str] = set()
        for table in TABLES:
            selector = pafs.FileSelector(f"{self.root}/{table}", allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                if info.type == pafs.FileType.Directory and info.base_name.startswith("study="):
                    names.add(info.base_name.removeprefix("study="))
        return sorted(names)

    def fragments(self, table: str, study: str | None = None) -> list[Fragment]:
        """The visible fragments of a table (one study or all), sorted by path.

        Visible means ``<table>/study=<name>/<file>.parquet`` with a file name that does
        not start with ``.`` or ``_``, the files every hive reader picks up.
        """
        _table_schema(table)
        base = f"{self.root}/{table}"
        if study is not None:
            _check_study(study)
            selector = pafs.FileSelector(f"{base}/study={study}", allow_not_found=True)
        else:
            selector = pafs.FileSelector(base, allow_not_found=True, recursive=True)
        found = []
        for info in self.fs.get_file_info(selector):
            parts = info.path[len(base) + 1 :].split("/")
            if (
                info.type == pafs.FileType.File
                and len(parts) == 2
                and parts[0].startswith("study=")
                and parts[1].endswith(".parquet")
                and not parts[1].startswith((".", "_"))
            ):
                found.append(
                    Fragment(info.path, table, parts[0][len("study="):], parts[1], info.size or 0, info.mtime)
                )
        return sorted(found, key=lambda f: f.path)

    # -- reading -------------------------------------------------------------------

    def frame(
        self,
        table: str,
        study: str | None = None,
        where: str | None = None,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """The deduplicated rows of a table as a DataFrame (in no particular order).

        ``study`` reads one study's partition only; ``where`` is a DuckDB boolean SQL
        expression over the table's columns, applied after deduplication;
        ``columns`` selects columns (default: all, in schema order).
        """
        schema = _table_schema(table)
        wanted = list(columns) if columns is not None else schema.names
        unknown = [c for c in wanted if c not in schema.names]
        if unknown:
            raise StoreError(f"unknown column(s) {unknown} for table {table!r}; its columns are {schema.names}")
        select = ", ".join(_ident(c) for c in wanted) or "*"

        def run(con: duckdb.DuckDBPyConnection, frags: dict[str, list[Fragment]]) -> pa.Table:
            query = f"SELECT {select} FROM ({self._dedup_sql(con, table, frags[table])}) AS t"
            if where:
                query += f" WHERE ({where})"
            return con.sql(query).to_arrow_table()

        return _to_pandas(self._run([table], run, study=study))

    def sql(self, query: str) -> pd.DataFrame:
        """Run a DuckDB query over the store and return the result as a DataFrame.

        The tables are views named ``trials``, ``curves``, ``evals`` and
        ``representations`` (deduplicated) and ``<table>_raw`` (every stored row).
        """
        return _to_pandas(self.sql_arrow(query))

    def sql_arrow(self, query: str) -> pa.Table:
        """``sql`` returning the Arrow table (no conversion to pandas)."""
        dedup = [t for t in TABLES if re.search(rf"\b{t}\b", query, re.IGNORECASE)]
        raw = [t for t in TABLES if re.search(rf"\b{t}_raw\b", query, re.IGNORECASE)]
        mentioned = [t for t in TABLES if t in dedup or t in raw]

        def run(con: duckdb.DuckDBPyConnection, frags: dict[str, list[Fragment]]) -> pa.Table:
            for table in raw:
                cols = ", ".join(_ident(c) for c in TABLES[table].names)
                source = self._source_sql(con, table, frags[table], "raw")
                con.execute(f"CREATE TEMP VIEW {table}_raw AS SELECT {cols} FROM ({source}) AS r")
            for table in dedup:
                con.execute(f"CREATE TEMP VIEW {table} AS {self._dedup_sql(con, table, frags[table])}")
            return con.sql(query).to_arrow_table()

        return self._run(mentioned, run)

    def counts(self) -> pd.DataFrame:
        """Per study and table: deduplicated ``rows`` and the number of ``fragments``."""
        out: list[dict[str, Any]] = []
        for table in TABLES:

            def run(con: duckdb.DuckDBPyConnection, frags: dict[str, list[Fragment]]) -> pa.Table:
                query = (
                    f"SELECT study, count(*) AS rows FROM ({self._dedup_sql(con, table, frags[table])}) "
                    f"GROUP BY study"
                )
                return con.sql(query).to_arrow_table()

            rows = {r["study"]: r["rows"] for r in self._run([table], run).to_pylist()}
            per_study: dict[str, int] = {}
            for frag in self.fragments(table):
                per_study[frag.study] = per_study.get(frag.study, 0) + 1
            for name in sorted(per_study):
                out.append({"study": name, "table": table, "rows": rows.get(name, 0), "fragments": per_study[name]})
        frame = pd.DataFrame(out, columns=["study", "table", "rows", "fragments"])
        return frame.astype({"study": "str", "table": "str", "rows": "int64", "fragments": "int64"})

    def _run(
        self,
        tables: list[str],
        fn: Callable[[duckdb.DuckDBPyConnection, dict[str, list[Fragment]]], pa.Table],
        study: str | None = None,
        select: Callable[[list[Fragment]], list[Fragment]] = list,
    ) -> pa.Table:
        """Run ``fn`` on a fresh DuckDB connection over the current fragments.

        Fragments known to be unreadable are left out with a warning.  When a read
        fails, the listing is taken again (a compaction may have replaced files) and
        the footers are checked; bad fragments are remembered, warned about and left
        out, and the query runs again.  An error no fragment explains is raised.
        """
        for _ in range(5):
            listed = {t: select(self.fragments(t, study)) for t in tables}
            frags = {t: self._usable(fs) for t, fs in listed.items()}
            con = _connect()
            try:
                return fn(con, frags)
            except _QUERY_ERRORS:
                raise
            except _READ_ERRORS:
                if self._listing_changed(listed, study):
                    continue
                if self._check_fragments([f for fs in frags.values() for f in fs]):
                    continue
                raise
            finally:
                con.close()
        raise StoreError(f"the store at {self.uri} keeps changing under the reader; try again")

    def _listing_changed(self, listed: dict[str, list[Fragment]], study: str | None) -> bool:
        """Whether any listed fragment is gone (a compaction replaced it meanwhile)."""
        return any(
            not {f.path for f in fs} <= {f.path for f in self.fragments(t, study)} for t, fs in listed.items()
        )

    def _usable(self, frags: list[Fragment]) -> list[Fragment]:
        """Fragments minus the ones known to be unreadable (warning about each)."""
        good = []
        for frag in frags:
            bad = self._bad.get(frag.path)
            if bad is not None and bad[0] == frag.size:
                warnings.warn(f"skipping unreadable fragment {frag.path}: {bad[1]}", stacklevel=3)
                continue
            good.append(frag)
        return good

    def _check_fragments(self, frags: list[Fragment]) -> list[Fragment]:
        """Check the footers of fragments; remember and return the bad ones."""
        found = []
        for frag, why in zip(frags, self._footer_problems(frags)):
            if why is not None:
                self._bad[frag.path] = (frag.size, why)
                found.append(frag)
        return found

    def _footer_problems(self, frags: list[Fragment], check_names: bool = False) -> list[str | None]:
        """For each fragment: why readers cannot use it, or None if its footer is fine.

        ``check_names`` also compares what a fragment's name says it holds (see
        ``_summary``) with the statistics in its footer.
        """

        def check(frag: Fragment) -> str | None:
            try:
                meta = pq.read_metadata(frag.path, filesystem=self.fs)
                schema = meta.schema.to_arrow_schema()
            except FileNotFoundError:
                return None  # removed meanwhile (by a compaction): not a bad fragment
            except (pa.ArrowException, OSError) as err:
                return f"not a readable Parquet file ({err})"
            problem = _schema_problem(frag.table, schema)
            if problem is None and check_names:
                problem = _summary_problem(frag, meta)
            return problem

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(check, frags))

    # -- query building ------------------------------------------------------------

    def _source_sql(self, con: duckdb.DuckDBPyConnection, table: str, frags: list[Fragment], tag: str) -> str:
        """A SQL relation over the given fragments: the table's columns plus ``_frag``,
        the fragment's position in ``frags`` (which is sorted by path)."""
        schema = TABLES[table]
        cols = ", ".join(_ident(c) for c in schema.names)
        if not frags:
            nulls = ", ".join(f"CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS {_ident(f.name)}" for f in schema)
            return f"SELECT {nulls}, CAST(0 AS BIGINT) AS _frag WHERE false"
        if self.reader == "duckdb":
            files = "[" + ", ".join(_quote(f.path) for f in frags) + "]"
            scan = f"read_parquet({files}, hive_partitioning=true, hive_types={{'study': 'VARCHAR'}}"
            if table not in ADDED_COLUMNS:
                return f"SELECT {cols}, CAST(file_index AS BIGINT) AS _frag FROM {scan}, union_by_name=false)"
            # Fragments written before a column joined the schema lack it: unioning by name
            # with an empty relation of the full schema reads it as null there.
            typed = ", ".join(f"CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS {_ident(f.name)}" for f in schema)
            return (
                f"SELECT {cols}, CAST(file_index AS BIGINT) AS _frag FROM (SELECT *, file_index FROM {scan}, "
                f"union_by_name=true) UNION ALL BY NAME SELECT {typed}, CAST(0 AS BIGINT) AS file_index WHERE false) AS u"
            )
        # Strings are read as dictionaries (as Parquet stores them): decoding them to
        # plain strings would cost more than the rest of the scan; DuckDB reads either.
        name = f"_arrow_{table}_{tag}"
        fields = [pa.field(f.name, _DICT_STRING) if f.type == pa.string() else f for f in _file_schema(table)]
        full = pa.schema(fields + [pa.field("study", pa.string()), pa.field("_frag", pa.int64())])
        strings = [f.name for f in fields if f.type == _DICT_STRING]
        dataset = pads.FileSystemDataset.from_paths(
            [f.path for f in frags],
            schema=full,
            format=pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=strings)),
            filesystem=self.fs,
            partitions=[(pads.field("study") == f.study) & (pads.field("_frag") == i) for i, f in enumerate(frags)],
        )
        con.register(name, dataset)
        return f"SELECT {cols}, _frag FROM {name}"

    def _dedup_sql(self, con: duckdb.DuckDBPyConnection, table: str, frags: list[Fragment]) -> str:
        """A SQL relation with one row per key (the current one), the table's columns.

        Rows of clean fragments pass as they are; only the groups that span several
        fragments are ranked with a window function.
        """
        cols = ", ".join(_ident(c) for c in TABLES[table].names)
        flagged, dirty_paths = self._dedup_plan(con, table, frags)
        if flagged.num_rows == 0:
            return f"SELECT {cols} FROM ({self._source_sql(con, table, frags, 'all')}) AS s"
        clean = [f for f in frags if f.path not in dirty_paths]
        dirty = [f for f in frags if f.path in dirty_paths]
        flag_name = f"_flagged_{table}"
        con.register(flag_name, flagged)
        on = " AND ".join(f"d.{_ident(c)} IS NOT DISTINCT FROM g.{_ident(c)}" for c in _GROUP_COLUMNS[table])
        keys = ", ".join(_ident(c) for c in KEYS[table])
        dirty_sql = self._source_sql(con, table, dirty, "dirty")
        parts = []
        if clean:
            parts.append(f"SELECT {cols} FROM ({self._source_sql(con, table, clean, 'clean')}) AS c")
        parts.append(f"SELECT {cols} FROM ({dirty_sql}) AS d ANTI JOIN {flag_name} AS g ON {on}")
        parts.append(
            f"SELECT {cols} FROM (SELECT d.* FROM ({dirty_sql}) AS d SEMI JOIN {flag_name} AS g ON {on}) AS r "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY attempt DESC NULLS LAST, "
            f"written_at DESC NULLS LAST, _frag DESC) = 1"
        )
        return "\nUNION ALL\n".join(parts)

    def _dedup_plan(
        self, con: duckdb.DuckDBPyConnection, table: str, frags: list[Fragment]
    ) -> tuple[pa.Table, frozenset[str]]:
        """Which key groups span several fragments, and which fragments hold them.

        Only fragments whose names say they may overlap another are read (see
        ``_maybe_overlapping``); the answer is cached per table while those
        fragments are the same (fragments are immutable: a path is never rewritten).
        """
        group_cols = _GROUP_COLUMNS[table]
        candidates = _maybe_overlapping(frags)
        paths = tuple(f.path for f in candidates)
        cached = self._plans.get(table)
        if cached is not None and cached[0] == paths:
            return cached[1], cached[2]
        if not candidates:
            flagged = pa.table({c: pa.array([], TABLES[table].field(c).type) for c in group_cols})
            self._plans[table] = (paths, flagged, frozenset())
            return flagged, frozenset()
        # Distinct (fragment, trial, step) first -- the study follows from the fragment,
        # so the scan reads two small columns -- then the groups seen in two fragments.
        inner = [c for c in group_cols if c != "study"]
        inner_sql = ", ".join(_ident(c) for c in inner)
        source = self._source_sql(con, table, candidates, "plan")
        seen = con.sql(f"SELECT DISTINCT _frag, {inner_sql} FROM ({source}) AS s").to_arrow_table()
        studies = pa.array([candidates[i].study for i in seen.column("_frag").to_pylist()], pa.string())
        con.register("_plan_seen", seen.append_column("study", studies))
        group = ", ".join(_ident(c) for c in group_cols)
        on = " AND ".join(f"g.{_ident(c)} IS NOT DISTINCT FROM m.{_ident(c)}" for c in group_cols)
        query = (
            f"WITH m AS (SELECT {group} FROM _plan_seen GROUP BY ALL HAVING count(*) > 1) "
            f"SELECT g.* FROM _plan_seen AS g SEMI JOIN m ON {on}"
        )
        spans = con.sql(query).to_arrow_table()
        con.unregister("_plan_seen")
        flagged = spans.select(group_cols).group_by(group_cols, use_threads=False).aggregate([])
        dirty = frozenset(paths[i] for i in set(spans.column("_frag").to_pylist()))
        self._plans[table] = (paths, flagged, dirty)
        return flagged, dirty

    # -- maintenance ---------------------------------------------------------------

    def compact(self, study: str | None = None, *, max_bytes: int = COMPACT_MAX_BYTES) -> list[str]:
        """Merge each (table, study) partition's small fragments into one; return new paths.

        Small means under ``max_bytes`` (fragments already that big are left alone, so
        running compact during a study costs about what was written since the last
        run).  First finishes any compaction that crashed (deletes the fragments a
        merged fragment says it replaces), then writes one deduplicated fragment whose
        footer records the fragments it replaces, then deletes them.  Unreadable
        fragments are left alone.  Safe to run again, or concurrently, at any time.
        """
        written = []
        names = [study] if study is not None else self.studies()
        for name in names:
            _check_study(name)
            for table in TABLES:
                self._finish_compaction(table, name)
                merged = self._merge_partition(table, name, max_bytes)
                if merged is not None:
                    path, replaced = merged
                    self._delete_replaced(table, name, replaced)
                    written.append(path)
        return written

    def _replaced_by_merged(self, table: str, study: str) -> set[str]:
        """Names of fragments that a merged fragment in the partition says it replaces."""
        replaced: set[str] = set()
        for frag in self.fragments(table, study):
            if "~" not in frag.name:
                continue
            try:
                meta = pq.read_schema(frag.path, filesystem=self.fs).metadata or {}
                replaced.update(json.loads(meta.get(REPLACES_KEY, b"[]")))
            except (pa.ArrowException, OSError, ValueError):
                continue
        return replaced

    def _finish_compaction(self, table: str, study: str) -> None:
        replaced = self._replaced_by_merged(table, study)
        present = {f.name for f in self.fragments(table, study)}
        self._delete_replaced(table, study, sorted(replaced & present))

    def _delete_replaced(self, table: str, study: str, names: Iterable[str]) -> None:
        for name in names:
            self._delete_fragment(f"{self.root}/{table}/study={study}/{name}")

    def _delete_fragment(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    def _merge_partition(self, table: str, study: str, max_bytes: int) -> tuple[str, list[str]] | None:
        """Write one deduplicated fragment holding a partition's small fragments; return
        its path and the names it replaces, or None when there are not two to merge."""

        def small(frags: list[Fragment]) -> list[Fragment]:
            return [f for f in frags if f.size < max_bytes and _OWN_NAME.match(f.name)]

        candidates = small(self.fragments(table, study))
        if len(candidates) < 2:
            return None
        self._check_fragments(candidates)  # never merge (and so delete) a file readers would skip
        used: list[Fragment] = []
        file_cols = ", ".join(_ident(c) for c in _file_schema(table).names)

        def run(con: duckdb.DuckDBPyConnection, frags: dict[str, list[Fragment]]) -> pa.Table:
            used[:] = frags[table]
            query = f"SELECT {file_cols} FROM ({self._dedup_sql(con, table, frags[table])}) AS t"
            return con.sql(query).to_arrow_table()

        data = self._run([table], run, study=study, select=small)
        if len(used) < 2:
            return None
        data = data.cast(_file_schema(table))
        sources = [f.name for f in used]
        now = dt.datetime.now(dt.timezone.utc)
        path = f"{self.root}/{table}/study={study}/{_merged_name(sources, now)}"
        self._write_parquet(path, data, {REPLACES_KEY: json.dumps(sources).encode()})
        return path, sources

    def validate(self) -> list[Problem]:
        """Everything in the store that readers skip or that does not belong there.

        Errors: unreadable Parquet, a wrong schema, foreign files or directories, a
        fragment holding a key twice or whose name misstates its content.  Warnings:
        a temp file older than STALE_TEMP_SECONDS, a Parquet file the store did not
        write (read, but never compacted), fragments a crashed compaction left.
        """
        problems: list[Problem] = []
        fragments: list[Fragment] = []
        now = dt.datetime.now(dt.timezone.utc)
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
            found = self._classify(info, now)
            if isinstance(found, Problem):
                problems.append(found)
            elif isinstance(found, Fragment):
                fragments.append(found)
        good = []
        for frag, why in zip(fragments, self._footer_problems(fragments, check_names=True)):
            if why is None:
                good.append(frag)
            else:
                problems.append(Problem(frag.path, why))
        problems.extend(self._duplicate_key_problems(good))
        for frag in good:
            if not _OWN_NAME.match(frag.name):
                problems.append(Problem(frag.path, "not written by the store: read, but never compacted", "warning"))
        studies = self.studies()
        for table in TABLES:
            for study in studies:
                present = {f.name for f in self.fragments(table, study)}
                for old in sorted(self._replaced_by_merged(table, study) & present):
                    path = f"{self.root}/{table}/study={study}/{old}"
                    message = "already merged by a compaction that did not finish; run `oodstudy store compact`"
                    problems.append(Problem(path, message, "warning"))
        return sorted(problems, key=lambda p: p.path)

    def _classify(self, info: pafs.FileInfo, now: dt.datetime) -> Problem | Fragment | None:
        """What one entry under the root is: a fragment to check, a problem, or fine."""
        parts = info.path[len(self.root) + 1 :].split("/")
        name, depth = parts[-1], len(parts)
        is_file = info.type == pafs.FileType.File
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
        if not parts[1].startswith("study=") or not _STUDY_NAME.match(study):
            return Problem(info.path, "not inside a study=<name> partition") if depth == 2 else None
        if depth == 2:
            return None if not is_file else Problem(info.path, "a file where a study=<name> directory belongs")
        if depth > 3 or not is_file:
            return Problem(info.path, "unexpected nesting inside a partition") if depth == 3 else None
        if name.startswith("_") or not name.endswith(".parquet"):
            return Problem(info.path, "foreign file in a partition (hive readers of the directory may fail on it)")
        return Fragment(info.path, parts[0], study, name, info.size or 0, info.mtime)

    def _duplicate_key_problems(self, frags: list[Fragment]) -> list[Problem]:
        """Fragments that hold a key twice (readers assume a fragment never does)."""
        problems = []
        for table in TABLES:
            mine = [f for f in frags if f.table == table]
            if not mine:
                continue
            keys = ", ".join(_ident(c) for c in KEYS[table])
            con = _connect()
            try:
                query = (
                    f"SELECT DISTINCT _frag FROM ({self._source_sql(con, table, mine, 'check')}) AS s "
                    f"GROUP BY _frag, {keys} HAVING count(*) > 1"
                )
                for (index,) in con.sql(query).fetchall():
                    problems.append(Problem(mine[index].path, "holds the same key more than once"))
            finally:
                con.close()
        return problems


def _connect() -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection: timestamps in UTC, no progress bar."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")
    return con


def _schema_problem(table: str, schema: pa.Schema) -> str | None:
    """Why a fragment's schema does not match its table's, or None when it matches."""
    expected = _file_schema(table)
    added = ADDED_COLUMNS.get(table, [])
    missing = [f.name for f in expected if f.name not in schema.names and f.name not in added]
    extra = [n for n in schema.names if n not in expected.names]
    wrong = [
        f"{f.name} is {schema.field(f.name).type}, expected {f.type}"
        for f in expected
        if f.name in schema.names and not schema.field(f.name).type.equals(f.type)
    ]
    if not (missing or extra or wrong):
        return None
    details = []
    if missing:
        details.append(f"missing columns {missing}")
    if extra:
        details.append(f"unexpected columns {extra}")
    details.extend(wrong)
    return f"wrong schema for table {table!r}: " + "; ".join(details)


def _to_pandas(data: pa.Table) -> pd.DataFrame:
    """Arrow to pandas keeping types: integers stay integers (nullable Int64 where
    there are nulls), strings are plain strings (never categoricals)."""
    fields = []
    for field in data.schema:
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_string_view(kind) or pa.types.is_large_string(kind):
            kind = pa.string()
        fields.append(field.with_type(kind))
    data = data.cast(pa.schema(fields, metadata=data.schema.metadata))
    frame = data.to_pandas(types_mapper=_nullable_integers)
    for i, field in enumerate(data.schema):
        if pa.types.is_integer(field.type) and data.column(i).null_count == 0:
            frame.isetitem(i, frame.iloc[:, i].to_numpy(dtype=field.type.to_pandas_dtype()))
    return frame


def _nullable_integers(kind: pa.DataType) -> Any:
    if pa.types.is_integer(kind):
        return pd.api.types.pandas_dtype(str(kind).capitalize().replace("Uint", "UInt"))
    return None
