"""``oodstudy store ls | validate | compact | sql``: look after a results store.

The main CLI adds these with ``add_store_commands(subparsers)`` and runs
``args.func(args)``, which returns the exit code; a store that cannot be used and a
query DuckDB refuses raise, and the CLI's one handler prints them (exit code 2).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from study.errors import QueryError, StoreError
from study.store import DEFAULT_URI  # the store itself (duckdb, pandas) is imported when a command runs

if TYPE_CHECKING:
    from study.store import Store

# Exit codes: 0 fine, 1 validate found errors (2, the store could not be used as asked,
# comes from the CLI's error handler).
EXIT_OK, EXIT_PROBLEMS = 0, 1


def add_store_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``store`` command and its sub-commands to an argparse subparsers object."""
    store = subparsers.add_parser("store", help="inspect, check, compact or query a results store")
    commands = store.add_subparsers(dest="store_command", metavar="{ls,validate,compact,sql}", required=True)

    def command(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--store", default=DEFAULT_URI, help=f"store URI (default {DEFAULT_URI})")
        parser.set_defaults(func=func)
        return parser

    command("ls", "list the studies and their row counts per table", run_ls)
    command("validate", "report unreadable or foreign files; exit 1 if there are errors", run_validate)
    compact = command("compact", "merge each partition's small fragments into one", run_compact)
    compact.add_argument("--study", help="compact only this study")
    sql = command("sql", "run a DuckDB query over the tables trials, curves, evals, representations", run_sql)
    sql.add_argument("query", help='e.g. "SELECT study, count(*) FROM evals GROUP BY study"')
    return store


def _open(args: argparse.Namespace) -> "Store":
    from study.store import Store

    return Store(args.store, create=False)


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
        raise StoreError(f"--study {args.study}: no such study in {store.uri}; pass one of its studies: "
                         f"{', '.join(store.studies()) or 'none'} (see `oodstudy store ls`)")
    written = store.compact(args.study)
    for path in written:
        print(f"wrote {path}")
    print(f"{store.uri}: {len(written)} partitions compacted")
    return EXIT_OK


def run_sql(args: argparse.Namespace) -> int:
    """Print the query's result as a table."""
    import duckdb
    import pandas as pd

    store = _open(args)
    try:
        result = store.sql(args.query)
    except duckdb.Error as err:  # a mistake in the query itself
        raise QueryError(f"{' '.join(str(err).split())}; check the names against the tables trials, curves, "
                         "evals, representations (and <table>_raw): `oodstudy store sql \"DESCRIBE trials\"` "
                         "lists a table's columns") from None
    with pd.option_context("display.max_rows", 500, "display.width", 200):
        print(result.to_string(index=False))
    return EXIT_OK
