"""``oodstudy run | resume | status | submit | jobs | trial | report | store ...``"""

from __future__ import annotations

import argparse
import sys

from study.errors import Interrupted, OodstudyError, TrialsFailed
from study.interrupt import leave_ray, stop_on_sigterm

# Exit code of a study that ran to its end with planned trials failed.
EXIT_TRIALS_FAILED = 1
# Exit code of every command refused for bad input (a config, a store, a query).
EXIT_ERROR = 2
# Exit code after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The ``oodstudy`` parser: one sub-command group per module of this package."""
    from study.cli import jobs, report, store, sweep, trial

    parser = argparse.ArgumentParser(
        prog="oodstudy",
        description="Map where transformers' out-of-distribution generalization breaks down: run one trial, "
                    "run a sweep on Ray Tune (embedded local Ray or a cluster), watch it, and read its store.",
        epilog="Start with: oodstudy run search_spaces/quickstart.yaml   (then: oodstudy report --store ./results)",
    )
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
    stderr and exits with code 2; a study whose planned trials failed exits with code 1
    after its summary; Ctrl-C, and SIGTERM alike, print one line and exit with code 130.
    """
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    ray = sys.modules.get("ray")
    ray_before = ray is not None and ray.is_initialized()  # a caller's Ray is the caller's to shut down
    try:
        return int(args.func(args) or 0)
    except OodstudyError as err:
        print(f"oodstudy: {one_line(str(err))}", file=sys.stderr)
        return EXIT_ERROR
    except TrialsFailed as err:
        print(f"oodstudy: {one_line(str(err))}", file=sys.stderr)
        return EXIT_TRIALS_FAILED
    except Interrupted as err:
        print(f"\noodstudy: {one_line(str(err))}", file=sys.stderr)
        if not ray_before:
            leave_ray(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"\noodstudy: interrupted (Ctrl-C or SIGTERM) during `{args.command}`; what was written before stays as "
              "it was (the store only ever gains whole fragments)", file=sys.stderr)
        if not ray_before:
            leave_ray(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED


def one_line(message: str) -> str:
    """A message on one line: its lines joined by "; "."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())
