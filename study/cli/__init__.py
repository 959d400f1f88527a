"""``oodstudy run | resume | status | trial | report | store ...``"""

from __future__ import annotations

import argparse
import sys

from study.errors import OodstudyError

# Exit code of every command refused for bad input (a config, a store, a query).
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The ``oodstudy`` parser: one sub-command group per module of this package."""
    from study.cli import report, store, sweep, trial

    parser = argparse.ArgumentParser(prog="oodstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    trial.add_trial_command(sub)
    sweep.add_sweep_commands(sub)
    store.add_store_commands(sub)
    report.add_report_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the command; return its exit code.

    The one error handler of the CLI: every :class:`~study.errors.OodstudyError`,
    whichever command raised it, is printed as ``oodstudy: <message>`` on stderr and
    exits with code 2.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OodstudyError as err:
        print(f"oodstudy: {err}", file=sys.stderr)
        return EXIT_ERROR
