"""``oodstudy run | resume | status | submit | jobs | trial | report | store ...``"""

from __future__ import annotations

import argparse
import sys

from study.errors import Interrupted, OodstudyError

# Exit code of every command refused for bad input (a config, a store, a query).
EXIT_ERROR = 2
# Exit code after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The ``oodstudy`` parser: one sub-command group per module of this package."""
    from study.cli import jobs, report, store, sweep, trial

    parser = argparse.ArgumentParser(prog="oodstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    trial.add_trial_command(sub)
    sweep.add_sweep_commands(sub)
    jobs.add_jobs_commands(sub)
    store.add_store_commands(sub)
    report.add_report_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the command; return its exit code.

    The one error handler of the CLI: every :class:`~study.errors.OodstudyError`,
    whichever command raised it, is printed as one line ``oodstudy: <message>`` on
    stderr and exits with code 2; Ctrl-C prints one line and exits with code 130.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OodstudyError as err:
        print(f"oodstudy: {one_line(str(err))}", file=sys.stderr)
        return EXIT_ERROR
    except Interrupted as err:
        print(f"\noodstudy: {one_line(str(err))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"\noodstudy: interrupted (Ctrl-C) during `{args.command}`; what was written before stays as "
              "it was (the store only ever gains whole fragments)", file=sys.stderr)
        return EXIT_INTERRUPTED


def one_line(message: str) -> str:
    """A message on one line: its lines joined by "; "."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())
