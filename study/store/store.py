"""The :class:`Store`: open (the marker), append (atomic fragments), list, and read
(``frame``, ``sql``, ``counts``) with deduplication; compaction and validation live in
:mod:`study.store.maintenance`.  See :mod:`study.store` for the layout."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import uuid
import warnings
from typing import Any, Callable

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.errors import QueryError, StoreError
from study.store import maintenance
from study.store.fragments import Fragment, fragment_name, fragment_summary, summary_problem
from study.store.maintenance import COMPACT_MAX_BYTES, Problem
from study.store.rows import coerce_rows, schema_problem, to_pandas
from study.store.limits import QueryLimits
from study.store.schema import MARKER, SCHEMA_VERSION, TABLES, check_study, table_schema
from study.store.sql import (
    QUERY_ERRORS,
    READ_ERRORS,
    READ_ONLY_RULE,
    Planner,
    arrow_table,
    check_read_only,
    connect,
    lock_down,
    run_limited,
    sql_ident,
    tables_in,
)
from study.store.uri import DEFAULT_URI, OBJECT_STORES, open_filesystem


def temp_name(name: str) -> str:
    """The temp name a file is written under before its rename: ``.<name>.<random>.tmp``.

    Hidden (a leading dot: pyarrow, pandas, polars and Spark skip it when reading a
    directory) and not ending in ``.parquet`` (a ``**/*.parquet`` glob skips it); the
    store's own listing skips it, and ``validate`` reports an old one as a leftover.
    """
    return f".{name}.{uuid.uuid4().hex[:8]}.tmp"


def entry_refused(directory: str) -> OSError | None:
    """Whether this process can create an entry in a local ``directory``: None if it can,
    else the error (a hidden probe directory is made and removed)."""
    probe = os.path.join(directory, f".oodstudy-probe-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as err:
        return err
    return None


# What to check when a store's filesystem refuses or does not answer.
REACH_HINT = "check the path (or bucket and endpoint), its permissions, the network and the credentials"


def io_cause(err: BaseException) -> str:
    """The cause of an I/O error in a few words: ``Permission denied``, the AWS error, ..."""
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())[:300]


class Store:
    """A results store at a root URI (see :mod:`study.store` for the layout).

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
        self._object_store = self.fs.type_name in OBJECT_STORES
        self._made_dirs: set[str] = set()
        self.planner = Planner(self.fs, self.reader)
        # path -> (size, why it cannot be read) for fragments readers skip
        self._bad: dict[str, tuple[int, str]] = {}
        self.created: str | None = None
        try:
            self._open(create)
        except (OSError, pa.ArrowException) as err:  # permission denied, no network, no credentials
            raise StoreError(
                f"cannot {'open or create' if create else 'open'} a store at {self.uri}: {io_cause(err)}; {REACH_HINT}"
            ) from None

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- opening -------------------------------------------------------------------

    @staticmethod
    def check_target(uri: str, storage_options: dict[str, Any] | None = None) -> None:
        """Refuse (StoreError) a URI where ``Store(uri)`` could not open or create a store,
        creating nothing: an existing store must open (and, when local, take new entries);
        a missing or empty local directory must sit in a directory this process can create
        entries in; a remote root must answer (credentials, network)."""
        fs, root = open_filesystem(str(uri), storage_options)
        try:
            info = fs.get_file_info(root)
            if info.type == pafs.FileType.File or fs.get_file_info(f"{root}/{MARKER}").type == pafs.FileType.File:
                Store(uri, create=False, storage_options=storage_options)
                refused = entry_refused(root) if isinstance(fs, pafs.LocalFileSystem) else None
                if refused is not None:  # an existing store must take new entries
                    raise StoreError(
                        f"cannot write to the store at {uri} ({io_cause(refused)}); pass a store "
                        "you can write to, or make this one writable"
                    )
                return
            if info.type == pafs.FileType.Directory:
                entries = fs.get_file_info(pafs.FileSelector(root, recursive=False))
                if any(not e.base_name.startswith((".", "_")) for e in entries):
                    Store(uri, create=False, storage_options=storage_options)  # refuses: not a store
            if not isinstance(fs, pafs.LocalFileSystem):
                return
            parent = root if info.type == pafs.FileType.Directory else os.path.dirname(root)
            while not os.path.exists(parent):
                parent = os.path.dirname(parent)
            if not os.path.isdir(parent):
                raise StoreError(
                    f"cannot create a store at {uri}: {parent} is a file, not a directory; "
                    "pass a path under a directory"
                )
            refused = entry_refused(parent)
            if refused is not None:
                raise StoreError(
                    f"cannot create a store at {uri}: {parent} refuses new entries "
                    f"({io_cause(refused)}); pass a path you can write to"
                )
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"cannot reach the store at {uri}: {io_cause(err)}; {REACH_HINT}") from None

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
            # Another process may have created this store between the marker check
            # and the listing: it writes the marker before any table, so a table seen
            # here means the marker is there now, if a creator wrote that table.
            if entries and self.fs.get_file_info(marker).type == pafs.FileType.File:
                self._read_marker(marker)
                return
            if entries:
                names = sorted(e.base_name for e in entries)[:5]
                raise StoreError(
                    f"{self.uri} is not an oodstudy store: it is not empty (holds {names}...) "
                    f"and has no {MARKER}; pass a new or empty directory, or, if this is a "
                    f"store that lost its marker, write "
                    f'{{"schema_version": {SCHEMA_VERSION}}} to {marker}'
                )
        if not create:
            raise StoreError(
                f"no store at {self.uri}; pass the --store a run wrote (e.g. --store ./results), "
                "or run a study there first"
            )
        if not self._object_store:
            self.fs.create_dir(self.root, recursive=True)
        self.created = dt.datetime.now(dt.timezone.utc).isoformat()
        body = json.dumps({"schema_version": SCHEMA_VERSION, "created": self.created}, indent=1)
        try:
            self._put(marker, lambda out: out.write(body.encode()))
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"cannot create a store at {self.uri}: {err}") from None
        if not self._object_store:  # two creators at once: the last rename is the store's
            self._read_marker(marker)

    def _read_marker(self, marker: str) -> None:
        try:
            with self.fs.open_input_stream(marker) as f:
                meta = json.loads(f.read().decode())
            version = meta["schema_version"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(
                f'{marker} is unreadable ({err}); it should hold {{"schema_version": {SCHEMA_VERSION}, "created": ...}}'
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
        check_study(study)
        now = dt.datetime.now(dt.timezone.utc)
        data = coerce_rows(table, rows, study=study, attempt=attempt, cell=cell, now=now)
        if data.num_rows == 0:
            return ""
        directory = f"{self.root}/{table}/study={study}"
        path = f"{directory}/{fragment_name(now, fragment_summary(table, data))}"
        self.write_parquet(path, data)
        return path

    def write_parquet(self, path: str, data: pa.Table, metadata: dict[bytes, bytes] | None = None) -> None:
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
        temp = f"{directory}/{temp_name(name)}"
        try:
            with self.fs.open_output_stream(temp) as out:
                write(out)
            self.fs.move(temp, path)
        except BaseException:
            self.delete_file(temp, quiet=True)
            raise

    def delete_file(self, path: str, *, quiet: bool = False) -> None:
        """Delete a file; a file already gone is fine.  ``quiet`` also ignores any other
        failure (for cleaning up after a write that failed: its error is what counts)."""
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except (OSError, pa.ArrowException):
            if not quiet:
                raise

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
        table_schema(table)
        base = f"{self.root}/{table}"
        if study is not None:
            check_study(study)
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
                    Fragment(info.path, table, parts[0][len("study=") :], parts[1], info.size or 0, info.mtime)
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
        schema = table_schema(table)
        wanted = list(columns) if columns is not None else schema.names
        unknown = [c for c in wanted if c not in schema.names]
        if unknown:
            raise StoreError(f"unknown column(s) {unknown} for table {table!r}; its columns are {schema.names}")
        select = ", ".join(sql_ident(c) for c in wanted) or "*"

        def run(con: duckdb.DuckDBPyConnection, frags: dict[str, list[Fragment]]) -> pa.Table:
            query = f"SELECT {select} FROM ({self.planner.dedup_sql(con, table, frags[table])}) AS t"
            if where:
                query += f" WHERE ({where})"
            return con.sql(query).to_arrow_table()

        return to_pandas(self.read([table], run, study=study))

    def sql(self, query: str, *, trusted: bool = False, limits: QueryLimits = QueryLimits()) -> pd.DataFrame:
        """Run one DuckDB ``SELECT`` over the store and return the result as a DataFrame.

        The tables are views named ``trials``, ``curves``, ``evals`` and
        ``representations`` (deduplicated) and ``<table>_raw`` (every stored row).

        The query is read-only (see :func:`study.store.sql.check_read_only`): one
        ``SELECT`` (or ``EXPLAIN``) statement, on a connection whose external access
        DuckDB limits to the store's own fragments and whose configuration is locked,
        so it can neither write files, nor read files outside the store, nor attach
        databases; ``limits`` bound its memory, threads and time (see
        :class:`study.store.limits.QueryLimits`); a refused query raises QueryError.
        ``trusted=True`` (for code you trust, never for a query from outside) runs any
        DuckDB SQL on a plain connection, without limits.
        """
        return to_pandas(self.sql_arrow(query, trusted=trusted, limits=limits))

    def sql_arrow(
        self,
        query: str,
        *,
        trusted: bool = False,
        limits: QueryLimits = QueryLimits(),
        fetch: Callable[[duckdb.DuckDBPyRelation], Any] = arrow_table,
    ) -> Any:
        """``sql`` returning the Arrow table (no conversion to pandas), or what ``fetch``
        makes of the query's DuckDB relation (e.g. rows read in batches)."""
        if not trusted:
            check_read_only(query)
        dedup, raw = tables_in(query)
        mentioned = [t for t in TABLES if t in dedup or t in raw]

        def run(con: duckdb.DuckDBPyConnection, frags: dict[str, list[Fragment]]) -> Any:
            for table in raw:
                cols = ", ".join(sql_ident(c) for c in TABLES[table].names)
                source = self.planner.source_sql(con, table, frags[table], "raw")
                con.execute(f"CREATE TEMP VIEW {table}_raw AS SELECT {cols} FROM ({source}) AS r")
            for table in dedup:
                con.execute(f"CREATE TEMP VIEW {table} AS {self.planner.dedup_sql(con, table, frags[table])}")
            if not trusted:
                readable = [f.path for t in mentioned for f in frags[t]] if self.reader == "duckdb" else []
                lock_down(con, readable, limits)
            try:
                return fetch(con.sql(query)) if trusted else run_limited(con, query, limits, fetch)
            except duckdb.PermissionException as err:
                raise QueryError(f"refused: {' '.join(str(err).split())}; {READ_ONLY_RULE}") from None

        return self.read(mentioned, run)

    def counts(self) -> pd.DataFrame:
        """Per study and table: deduplicated ``rows`` and the number of ``fragments``."""
        out: list[dict[str, Any]] = []
        for table in TABLES:

            def run(con: duckdb.DuckDBPyConnection, frags: dict[str, list[Fragment]]) -> pa.Table:
                query = (
                    f"SELECT study, count(*) AS rows FROM ({self.planner.dedup_sql(con, table, frags[table])}) "
                    f"GROUP BY study"
                )
                return con.sql(query).to_arrow_table()

            rows = {r["study"]: r["rows"] for r in self.read([table], run).to_pylist()}
            per_study: dict[str, int] = {}
            for frag in self.fragments(table):
                per_study[frag.study] = per_study.get(frag.study, 0) + 1
            for name in sorted(per_study):
                out.append({"study": name, "table": table, "rows": rows.get(name, 0), "fragments": per_study[name]})
        frame = pd.DataFrame(out, columns=["study", "table", "rows", "fragments"])
        return frame.astype({"study": "str", "table": "str", "rows": "int64", "fragments": "int64"})

    def read(
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
            con = connect()
            try:
                return fn(con, frags)
            except QUERY_ERRORS:
                raise
            except READ_ERRORS:
                if self._listing_changed(listed, study):
                    continue
                if self.check_fragments([f for fs in frags.values() for f in fs]):
                    continue
                raise
            finally:
                con.close()
        raise StoreError(f"the store at {self.uri} keeps changing under the reader; try again")

    def _listing_changed(self, listed: dict[str, list[Fragment]], study: str | None) -> bool:
        """Whether any listed fragment is gone (a compaction replaced it meanwhile)."""
        return any(not {f.path for f in fs} <= {f.path for f in self.fragments(t, study)} for t, fs in listed.items())

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

    def check_fragments(self, frags: list[Fragment]) -> list[Fragment]:
        """Check the footers of fragments; remember and return the bad ones."""
        found = []
        for frag, why in zip(frags, self.footer_problems(frags)):
            if why is not None:
                self._bad[frag.path] = (frag.size, why)
                found.append(frag)
        return found

    def footer_problems(self, frags: list[Fragment], check_names: bool = False) -> list[str | None]:
        """For each fragment: why readers cannot use it, or None if its footer is fine.

        ``check_names`` also compares what a fragment's name says it holds (see
        ``fragment_summary``) with the statistics in its footer.
        """

        def check(frag: Fragment) -> str | None:
            try:
                meta = pq.read_metadata(frag.path, filesystem=self.fs)
                schema = meta.schema.to_arrow_schema()
            except FileNotFoundError:
                return None  # removed meanwhile (by a compaction): not a bad fragment
            except (pa.ArrowException, OSError) as err:
                return f"not a readable Parquet file ({err})"
            problem = schema_problem(frag.table, schema)
            if problem is None and check_names:
                problem = summary_problem(frag, meta)
            return problem

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(check, frags))

    # -- maintenance ---------------------------------------------------------------

    def compact(self, study: str | None = None, *, max_bytes: int = COMPACT_MAX_BYTES) -> list[str]:
        """Merge each (table, study) partition's small fragments into one; return new
        paths (see :func:`study.store.maintenance.compact`)."""
        return maintenance.compact(self, study, max_bytes=max_bytes)

    def validate(self) -> list[Problem]:
        """Everything in the store that readers skip or that does not belong there (see
        :func:`study.store.maintenance.validate`)."""
        return maintenance.validate(self)
