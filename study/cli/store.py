"""``oodstudy store ls | validate | compact | sql``: look after a results store.

The main CLI adds these with ``add_store_commands(subparsers)`` and runs
``args.func(args)``, which returns the exit code; a store that cannot be used and a
query DuckDB refuses raise, and the CLI's one handler prints them (exit code 2).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.errors import QueryError, StoreError
from study.store import DEFAULT_URI  # the store itself (duckdb, pandas) is imported when a command runs
from study.store.limits import MAX_ROWS, MEMORY_LIMIT, THREADS, TIMEOUT_S, QueryLimits

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from study.store import Store

# Exit codes: 0 fine, 1 validate found errors (2, the store could not be used as asked,
# comes from the CLI's error handler).
EXIT_OK, EXIT_PROBLEMS = 0, 1
# The formats `store sql --out FILE` writes, by FILE's suffix.
OUT_FORMATS = (".csv", ".parquet")
# Rows per batch read from DuckDB (what `store sql` holds of a result beyond the rows it prints).
BATCH_ROWS = 65536


def add_store_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``store`` command and its sub-commands to an argparse subparsers object."""
    store = subparsers.add_parser("store", help="inspect, check, compact or query a results store")
    commands = store.add_subparsers(dest="store_command", metavar="{ls,validate,repair,compact,sql}", required=True)

    def command(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--store", default=DEFAULT_URI, help=f"store URI (default {DEFAULT_URI})")
        parser.set_defaults(func=func)
        return parser

    command("ls", "list the studies and their row counts per table", run_ls)
    command("validate", "report unreadable or foreign files; exit 1 if there are errors", run_validate)
    repair = command(
        "repair", "move a study's unreadable fragments aside and rebuild the trials rows they lost", run_repair
    )
    repair.add_argument("--study", required=True, help="the study to repair")
    repair.add_argument("--storage-path", help="Ray Tune run directory if not <store>/_runs (for the study's spec)")
    compact = command("compact", "merge each partition's small fragments into one", run_compact)
    compact.add_argument("--study", help="compact only this study")
    sql = command("sql", "run a DuckDB query over the tables trials, curves, evals, representations", run_sql)
    sql.add_argument("query", help='e.g. "SELECT study, count(*) FROM evals GROUP BY study"')
    sql.add_argument(
        "--memory-limit", default=MEMORY_LIMIT, metavar="SIZE", help=f"DuckDB's memory limit (default {MEMORY_LIMIT})"
    )
    sql.add_argument("--threads", type=int, default=THREADS, metavar="N", help=f"DuckDB's threads (default {THREADS})")
    sql.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_S,
        metavar="SECONDS",
        help=f"stop the query after this many seconds (default {TIMEOUT_S:g})",
    )
    sql.add_argument(
        "--max-rows", type=int, default=MAX_ROWS, metavar="N", help=f"rows printed at most (default {MAX_ROWS})"
    )
    sql.add_argument("--out", metavar="FILE", help="write all rows to FILE (.csv or .parquet) instead of printing them")
    return store


def _open(args: argparse.Namespace) -> "Store":
    from study.store import Store

    return Store(args.store, create=False)


def run_repair(args: argparse.Namespace) -> int:
    """Move the study's unreadable fragments to ``_damaged/`` and rebuild its trials rows
    from the rows that remain (see :mod:`study.store.repair`); print what was done."""
    from study.config import ConfigError
    from study.store import repair_study
    from study.tune.runner import read_spec_copy

    store = _open(args)
    if args.study not in store.studies():
        raise StoreError(
            f"--study {args.study}: no such study in {store.uri}; pass one of its studies: "
            f"{', '.join(store.studies()) or 'none'} (see `oodstudy store ls`)"
        )
    try:
        spec = read_spec_copy(args.study, args.store, args.storage_path)
    except ConfigError:
        spec = None  # a study without its spec (e.g. `trial --store`): statuses are rebuilt conservatively
    print(repair_study(store, args.study, spec))
    return EXIT_OK


def run_ls(args: argparse.Namespace) -> int:
    """Print one line per study: deduplicated rows per table and the fragment count."""
    store = _open(args)
    counts = store.counts()
    if counts.empty:
        print(f"{store.uri}: no studies yet")
        return EXIT_OK
    rows = counts.pivot(index="study", columns="table", values="rows").fillna(0).astype("int64")
    rows["fragments"] = counts.groupby("study")["fragments"].sum()
    rows.columns.name = None
    print(f"{store.uri}: {len(rows)} studies (rows per table after deduplication)")
    print(rows.reset_index().to_string(index=False))
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    """Print every problem; exit 1 if any is an error (warnings alone exit 0)."""
    store = _open(args)
    problems = store.validate()
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{store.uri}: {errors} errors, {warnings} warnings")
    return EXIT_PROBLEMS if errors else EXIT_OK


def run_compact(args: argparse.Namespace) -> int:
    """Merge fragments and print what was written."""
    store = _open(args)
    if args.study is not None and args.study not in store.studies():
        raise StoreError(
            f"--study {args.study}: no such study in {store.uri}; pass one of its studies: "
            f"{', '.join(store.studies()) or 'none'} (see `oodstudy store ls`)"
        )
    written = store.compact(args.study)
    for path in written:
        print(f"wrote {path}")
    print(f"{store.uri}: {len(written)} partitions compacted")
    return EXIT_OK


def run_sql(args: argparse.Namespace) -> int:
    """Print the query's result as a table, at most ``--max-rows`` rows (a line on stderr
    counts the rest), or write all its rows to ``--out FILE``."""
    import duckdb

    from study.store.rows import to_pandas

    limits = QueryLimits(args.memory_limit, args.threads, args.timeout)
    _check_sql_flags(args, limits)
    store = _open(args)
    out = Path(args.out) if args.out else None
    try:
        head, total = store.sql_arrow(args.query, limits=limits, fetch=lambda rel: _take_rows(rel, args.max_rows, out))
    except duckdb.Error as err:  # a mistake in the query itself
        raise QueryError(query_mistake(str(err))) from None
    if out is not None:
        print(f"wrote {total:,} rows to {out}")
        return EXIT_OK
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(to_pandas(head).to_string(index=False))
    if total > head.num_rows:
        print(
            f"oodstudy: {total - head.num_rows:,} more rows left out (--max-rows {args.max_rows:,}); write all "
            f"{total:,} with --out FILE.csv or --out FILE.parquet, or narrow the query (WHERE, LIMIT)",
            file=sys.stderr,
        )
    return EXIT_OK


def _check_sql_flags(args: argparse.Namespace, limits: QueryLimits) -> None:
    """Refuse (QueryError) a limit or --out that cannot work; --memory-limit is read by DuckDB
    itself (see study.store.sql.lock_down)."""
    if not (math.isfinite(limits.timeout_s) and limits.timeout_s > 0):
        raise QueryError(
            f"--timeout {limits.timeout_s:g}: give the seconds a query may run, a number > 0 (default {TIMEOUT_S:g})"
        )
    cpus = os.cpu_count() or 1
    if not 1 <= limits.threads <= cpus:
        raise QueryError(f"--threads {limits.threads}: give 1 to {cpus} (this machine's CPUs; default {THREADS})")
    if args.max_rows < 0:
        raise QueryError(
            f"--max-rows {args.max_rows}: give the rows to print, 0 or more (default {MAX_ROWS}); "
            "--out FILE writes them all"
        )
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() not in OUT_FORMATS:
            raise QueryError(f"--out {args.out}: name a .csv or .parquet file (its suffix picks the format)")
        if not out.parent.is_dir():
            raise QueryError(f"--out {args.out}: no directory {out.parent}; give a file in an existing directory")


def _take_rows(relation: "duckdb.DuckDBPyRelation", max_rows: int, out: Path | None) -> "tuple[pa.Table, int]":
    """Read a query's rows in batches: the first ``max_rows`` of them and the count of all, or,
    with ``out``, all of them written to that file (csv or parquet by its suffix; a file left
    half-written by a failure is removed)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    reader = relation.to_arrow_reader(BATCH_ROWS)
    head: list[pa.RecordBatch] = []
    kept = total = 0
    writer: Any = None
    try:
        if out is not None:
            make = pacsv.CSVWriter if out.suffix.lower() == ".csv" else pq.ParquetWriter
            writer = _writing(out, lambda: make(str(out), reader.schema))
        for batch in reader:
            total += batch.num_rows
            if writer is not None:
                _writing(out, lambda: writer.write_batch(batch))
            elif kept < max_rows:
                head.append(batch.slice(0, max_rows - kept))
                kept += head[-1].num_rows
        if writer is not None:
            _writing(out, writer.close)
    except BaseException:
        if out is not None:
            if writer is not None:
                writer.close()
            out.unlink(missing_ok=True)
        raise
    return pa.Table.from_batches(head, schema=reader.schema), total


def _writing(out: Path | None, step: Any) -> Any:
    """``step()``, a step of writing ``--out``; its failure is one QueryError line."""
    import pyarrow as pa

    try:
        return step()
    except (OSError, pa.ArrowException) as err:
        raise QueryError(
            f"--out {out}: cannot write it ({' '.join(str(err).split())}); give a file you can "
            "write, .parquet for columns CSV cannot hold (lists, structs)"
        ) from None


def query_mistake(message: str) -> str:
    """DuckDB's complaint about a query, with the store's own tables named: a table that does
    not exist gets the closest table of the store (not DuckDB's guess among its catalog, e.g.
    "pg_tables" for "trial")."""
    import difflib

    from study.store.schema import TABLES

    tables = [*TABLES, *(f"{t}_raw" for t in TABLES)]
    text = " ".join(message.split())
    missing = re.search(r"Table with name (\S+) does not exist!", text)
    if missing:
        close = difflib.get_close_matches(missing.group(1).lower(), tables, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}? " if close else ""
        return (
            f"no table {missing.group(1)} in the store; {hint}its tables are {', '.join(TABLES)} "
            "(and <table>_raw, every attempt of each row)"
        )
    return (
        f"{text}; check the names against the tables {', '.join(TABLES)} (and <table>_raw): "
        '`oodstudy store sql "DESCRIBE trials"` lists a table\'s columns'
    )
