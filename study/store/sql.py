"""SQL over the store's fragments: literals, the DuckDB connection, the dedup plan.

:class:`Planner` turns a list of fragments into DuckDB relations: the raw rows of a
table (``source_sql``) and its current rows, one per key (``dedup_sql``), which ranks
only the key groups that really span several fragments (``dedup_plan``).
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any, Callable, Iterator, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from study.errors import QueryError
from study.store.fragments import Fragment, maybe_overlapping
from study.store.limits import MEMORY_LIMIT, QueryLimits
from study.store.schema import ADDED_COLUMNS, GROUP_COLUMNS, KEYS, TABLES, file_schema

# Query errors that are the query's own fault and never a sign of a bad fragment.
QUERY_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException, duckdb.PermissionException)
# The statements a read-only query may be (EXPLAIN shows a SELECT's plan, EXPLAIN ANALYZE runs it).
READ_ONLY_STATEMENTS = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
READ_ONLY_RULE = (
    "store sql is read-only: give one SELECT over the tables trials, curves, evals, representations "
    '(or <table>_raw), e.g. "SELECT study, count(*) FROM trials GROUP BY study"'
)
READ_ERRORS = (duckdb.Error, pa.ArrowException, OSError)

T = TypeVar("T")
DICT_STRING = pa.dictionary(pa.int32(), pa.string())
DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal: strings quoted (quotes doubled), numbers as written."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    return repr(float(value)) if isinstance(value, float) else str(value)


def sql_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def connect() -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection: timestamps in UTC, no progress bar."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")
    return con


def check_read_only(query: str) -> None:
    """Refuse (QueryError) anything but exactly one SELECT or EXPLAIN statement, as DuckDB's
    own parser classifies it; a syntax error is refused the same way."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as err:
        raise QueryError(f"{' '.join(str(err).split())}; {READ_ONLY_RULE}") from None
    if not statements:
        raise QueryError(f"the query is empty; {READ_ONLY_RULE}")
    if len(statements) > 1:
        raise QueryError(f"{len(statements)} statements given, one is run; {READ_ONLY_RULE}")
    kind = statements[0].type
    if kind not in READ_ONLY_STATEMENTS:
        raise QueryError(f"{kind.name} statements are refused; {READ_ONLY_RULE}")


def lock_down(con: duckdb.DuckDBPyConnection, readable: list[str], limits: QueryLimits = QueryLimits()) -> None:
    """Make a connection read-only over the store with DuckDB's own settings: the memory
    and thread ``limits`` (with no spilling to disk), no file or network access except
    reading the ``readable`` fragment paths (allowed_paths), no extension loading, and the
    configuration locked so that a query cannot undo it."""
    try:
        con.execute("SET memory_limit = ?", [limits.memory_limit])
    except duckdb.Error as err:
        raise QueryError(
            f"--memory-limit {limits.memory_limit!r}: not a size DuckDB reads "
            f"({' '.join(str(err).split())}); give one such as {MEMORY_LIMIT} or 500MB"
        ) from None
    con.execute("SET threads = ?", [limits.threads])
    con.execute("SET temp_directory = ''")  # a query over the limit is refused, never spilled to disk
    con.execute("SET allowed_paths = ?", [readable])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")


def run_limited(
    con: duckdb.DuckDBPyConnection,
    query: str,
    limits: QueryLimits,
    fetch: Callable[[duckdb.DuckDBPyRelation], T],
) -> T:
    """``fetch(con.sql(query))`` on a locked-down connection, interrupted after
    ``limits.timeout_s``; a query that reaches its time or memory limit is refused
    (QueryError naming the limit and the flag that changes it).

    The query runs in a worker thread while this one waits: DuckDB has no statement
    timeout, and it notices a Ctrl-C only when its query ends (then as its own error), so
    the waiting thread interrupts the connection on either and raises the limit as a
    QueryError, the Ctrl-C as KeyboardInterrupt.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()  # not Thread.join: a join cut short by Ctrl-C may call the thread ended

    def work() -> None:
        try:
            outcome["rows"] = fetch(con.sql(query))
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err
        finally:
            done.set()

    threading.Thread(target=work, name="oodstudy-query", daemon=True).start()
    try:
        timed_out = not done.wait(limits.timeout_s)
    except KeyboardInterrupt:
        stop(con, done)
        raise
    if timed_out:
        stop(con, done)
    if "rows" in outcome:
        return outcome["rows"]
    err = outcome["error"]
    if timed_out and is_interrupt(err):
        raise QueryError(
            f"the query ran past its time limit of {limits.timeout_s:g} s and was stopped; "
            "give it longer with --timeout SECONDS, or narrow it (WHERE, LIMIT)"
        ) from None
    if isinstance(err, duckdb.OutOfMemoryException) or "Out of Memory Error" in str(err):
        raise QueryError(
            f"the query needs more than its memory limit of {limits.memory_limit} and was "
            "stopped; raise it with --memory-limit (e.g. --memory-limit 8GB), or narrow the "
            "query (WHERE, LIMIT, fewer columns)"
        ) from None
    raise err


def stop(con: duckdb.DuckDBPyConnection, done: threading.Event) -> None:
    """Interrupt the query running on ``con`` until ``done`` says it ended: again every tenth
    of a second, as DuckDB refuses an interrupt while the query is still being bound
    ("connection is busy") and an interrupt between two calls is lost."""
    while not done.is_set():
        with contextlib.suppress(duckdb.Error):
            con.interrupt()
        done.wait(0.1)


def arrow_table(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """All of a relation's rows as one Arrow table."""
    return relation.to_arrow_table()


@contextlib.contextmanager
def ctrl_c_as_keyboard_interrupt() -> Iterator[None]:
    """Raise a Ctrl-C during a DuckDB query, which DuckDB reports as its own error (see
    ``is_interrupt``), as the KeyboardInterrupt it was."""
    try:
        yield
    except (duckdb.Error, pa.ArrowException, OSError, RuntimeError) as err:
        if is_interrupt(err):
            raise KeyboardInterrupt from None
        raise


def is_interrupt(err: BaseException) -> bool:
    """Whether an error is DuckDB's report of an interrupted query: ``connection.interrupt()``
    or a Ctrl-C, which DuckDB turns into its own error (InterruptException, a RuntimeError
    "Query interrupted", or, while Arrow reads the result, an error holding DuckDB's message)."""
    text = str(err)
    return isinstance(err, duckdb.InterruptException) or "Query interrupted" in text or "INTERRUPT Error" in text


def tables_in(query: str) -> tuple[list[str], list[str]]:
    """The tables a query may read: ``(deduplicated, raw)``, in schema order.

    A table counts when its name (``evals``) or its raw name (``evals_raw``) occurs as
    a word anywhere in the query.  Matching words over-includes (a table named inside
    a string literal gets a view it does not use), which costs one unused view and
    never a wrong result.  DuckDB's own ``get_table_names`` would be exact, but it
    binds the query and so fails on the very views that are not yet created.
    """
    dedup = [t for t in TABLES if re.search(rf"\b{t}\b", query, re.IGNORECASE)]
    raw = [t for t in TABLES if re.search(rf"\b{t}_raw\b", query, re.IGNORECASE)]
    return dedup, raw


class Planner:
    """Builds the SQL relations of a store's tables over given fragments.

    ``reader``: ``"duckdb"`` reads the files with DuckDB's Parquet reader (local
    stores), ``"arrow"`` through ``pyarrow.dataset`` on ``fs``.  The dedup plan of a
    table is cached while its candidate fragments stay the same.
    """

    def __init__(self, fs: pafs.FileSystem, reader: str) -> None:
        self.fs, self.reader = fs, reader
        # table -> (fragment paths, flagged groups, dirty fragment paths); see dedup_plan
        self.plans: dict[str, tuple[tuple[str, ...], pa.Table, frozenset[str]]] = {}

    def source_sql(self, con: duckdb.DuckDBPyConnection, table: str, frags: list[Fragment], tag: str) -> str:
        """A SQL relation over the given fragments: the table's columns plus ``_frag``,
        the fragment's position in ``frags`` (which is sorted by path)."""
        schema = TABLES[table]
        cols = ", ".join(sql_ident(c) for c in schema.names)
        if not frags:
            nulls = ", ".join(f"CAST(NULL AS {DUCKDB_TYPES[f.type]}) AS {sql_ident(f.name)}" for f in schema)
            return f"SELECT {nulls}, CAST(0 AS BIGINT) AS _frag WHERE false"
        if self.reader == "duckdb":
            files = "[" + ", ".join(sql_literal(f.path) for f in frags) + "]"
            scan = f"read_parquet({files}, hive_partitioning=true, hive_types={{'study': 'VARCHAR'}}"
            if table not in ADDED_COLUMNS:
                return f"SELECT {cols}, CAST(file_index AS BIGINT) AS _frag FROM {scan}, union_by_name=false)"
            # Fragments written before a column joined the schema lack it: unioning by name
            # with an empty relation of the full schema reads it as null there.
            typed = ", ".join(f"CAST(NULL AS {DUCKDB_TYPES[f.type]}) AS {sql_ident(f.name)}" for f in schema)
            return (
                f"SELECT {cols}, CAST(file_index AS BIGINT) AS _frag FROM (SELECT *, file_index FROM {scan}, "
                f"union_by_name=true) UNION ALL BY NAME SELECT {typed}, CAST(0 AS BIGINT) AS file_index WHERE false) AS u"
            )
        # Strings are read as dictionaries (as Parquet stores them): decoding them to
        # plain strings would cost more than the rest of the scan; DuckDB reads either.
        name = f"_arrow_{table}_{tag}"
        fields = [pa.field(f.name, DICT_STRING) if f.type == pa.string() else f for f in file_schema(table)]
        full = pa.schema(fields + [pa.field("study", pa.string()), pa.field("_frag", pa.int64())])
        strings = [f.name for f in fields if f.type == DICT_STRING]
        dataset = pads.FileSystemDataset.from_paths(
            [f.path for f in frags],
            schema=full,
            format=pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=strings)),
            filesystem=self.fs,
            partitions=[(pads.field("study") == f.study) & (pads.field("_frag") == i) for i, f in enumerate(frags)],
        )
        con.register(name, dataset)
        return f"SELECT {cols}, _frag FROM {name}"

    def dedup_sql(self, con: duckdb.DuckDBPyConnection, table: str, frags: list[Fragment]) -> str:
        """A SQL relation with one row per key (the current one), the table's columns.

        Rows of clean fragments pass as they are; only the groups that span several
        fragments are ranked with a window function.
        """
        cols = ", ".join(sql_ident(c) for c in TABLES[table].names)
        flagged, dirty_paths = self.dedup_plan(con, table, frags)
        if flagged.num_rows == 0:
            return f"SELECT {cols} FROM ({self.source_sql(con, table, frags, 'all')}) AS s"
        clean = [f for f in frags if f.path not in dirty_paths]
        dirty = [f for f in frags if f.path in dirty_paths]
        flag_name = f"_flagged_{table}"
        con.register(flag_name, flagged)
        on = " AND ".join(f"d.{sql_ident(c)} IS NOT DISTINCT FROM g.{sql_ident(c)}" for c in GROUP_COLUMNS[table])
        keys = ", ".join(sql_ident(c) for c in KEYS[table])
        dirty_sql = self.source_sql(con, table, dirty, "dirty")
        parts = []
        if clean:
            parts.append(f"SELECT {cols} FROM ({self.source_sql(con, table, clean, 'clean')}) AS c")
        parts.append(f"SELECT {cols} FROM ({dirty_sql}) AS d ANTI JOIN {flag_name} AS g ON {on}")
        parts.append(
            f"SELECT {cols} FROM (SELECT d.* FROM ({dirty_sql}) AS d SEMI JOIN {flag_name} AS g ON {on}) AS r "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY attempt DESC NULLS LAST, "
            f"written_at DESC NULLS LAST, _frag DESC) = 1"
        )
        return "\nUNION ALL\n".join(parts)

    def dedup_plan(
        self, con: duckdb.DuckDBPyConnection, table: str, frags: list[Fragment]
    ) -> tuple[pa.Table, frozenset[str]]:
        """Which key groups span several fragments, and which fragments hold them.

        Only fragments whose names say they may overlap another are read (see
        ``maybe_overlapping``); the answer is cached per table while those
        fragments are the same (fragments are immutable: a path is never rewritten).
        """
        group_cols = GROUP_COLUMNS[table]
        candidates = maybe_overlapping(frags)
        paths = tuple(f.path for f in candidates)
        cached = self.plans.get(table)
        if cached is not None and cached[0] == paths:
            return cached[1], cached[2]
        if not candidates:
            flagged = pa.table({c: pa.array([], TABLES[table].field(c).type) for c in group_cols})
            self.plans[table] = (paths, flagged, frozenset())
            return flagged, frozenset()
        # Distinct (fragment, trial, step) first -- the study follows from the fragment,
        # so the scan reads two small columns -- then the groups seen in two fragments.
        inner = [c for c in group_cols if c != "study"]
        inner_sql = ", ".join(sql_ident(c) for c in inner)
        source = self.source_sql(con, table, candidates, "plan")
        seen = con.sql(f"SELECT DISTINCT _frag, {inner_sql} FROM ({source}) AS s").to_arrow_table()
        studies = pa.array([candidates[i].study for i in seen.column("_frag").to_pylist()], pa.string())
        con.register("_plan_seen", seen.append_column("study", studies))
        group = ", ".join(sql_ident(c) for c in group_cols)
        on = " AND ".join(f"g.{sql_ident(c)} IS NOT DISTINCT FROM m.{sql_ident(c)}" for c in group_cols)
        query = (
            f"WITH m AS (SELECT {group} FROM _plan_seen GROUP BY ALL HAVING count(*) > 1) "
            f"SELECT g.* FROM _plan_seen AS g SEMI JOIN m ON {on}"
        )
        spans = con.sql(query).to_arrow_table()
        con.unregister("_plan_seen")
        flagged = spans.select(group_cols).group_by(group_cols, use_threads=False).aggregate([])
        dirty = frozenset(paths[i] for i in set(spans.column("_frag").to_pylist()))
        self.plans[table] = (paths, flagged, dirty)
        return flagged, dirty
