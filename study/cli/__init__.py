"""``oodstudy run | resume | status | submit | jobs | trial | plan | report | check | store ...``"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import sys

from study.errors import ConfigError, Interrupted, OodstudyError, TrialsFailed
from study.interrupt import leave_ray, reset_ctrl_c, stop_on_sigterm

# Exit code of a study that ran to its end with planned trials failed.
EXIT_TRIALS_FAILED = 1
# Exit code of every command refused for bad input (a config, a store, a query).
EXIT_ERROR = 2
# Exit code after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
# Exit code when the reader of stdout went away (128 + SIGPIPE, as `seq 1 1000000 | head` ends).
EXIT_BROKEN_PIPE = 141


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors go through the one error handler: a bad command line
    raises a ConfigError (printed as one ``oodstudy:`` line, exit 2) instead of printing the
    usage and exiting; an unknown option that names a config key points at ``--set``.
    ``--help`` prints and exits as ever."""

    def error(self, message: str):
        raise ConfigError(usage_error(self.prog, message))

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:  # a command's own parser: what is left is not its own
            raise ConfigError(unknown_arguments(self.prog, extras, list(args or [])))
        return namespace, extras


def usage_error(prog: str, message: str) -> str:
    """argparse's complaint on one line, with a close choice where it names one and the fix."""
    command = prog.removeprefix("oodstudy").strip()
    chose = re.match(r"argument (\S+): invalid choice: '(.*?)' \(choose from (.*)\)$", message)
    hint = ""
    if chose:
        choices = re.findall(r"'([^']*)'", chose.group(3))
        close = difflib.get_close_matches(chose.group(2), choices, n=1)
        message = f"{chose.group(2)!r} is not a command{' of ' + command if command else ''}"
        hint = f"did you mean {close[0]!r}? " if close else f"use one of {', '.join(choices)}; "
    return f"{command + ': ' if command else ''}{message}; {hint}check the usage with: {prog} --help"


# The commands whose config keys an unknown option may name, and the keys each takes with --set.
SET_KEYS = {"run": "spec", "submit": "spec", "resume": "spec", "trial": "trial"}


def option_keys(command: str, option: str) -> list[str]:
    """The config keys that ``--option`` names (``--max-concurrent`` -> max_concurrent,
    ``--train-steps`` and ``--steps`` -> train.steps) for ``command``; none for other commands."""
    from study.config import SweepSpec, _known_keys, trial_value_keys

    if command not in SET_KEYS:
        return []
    keys = sorted(trial_value_keys())
    if SET_KEYS[command] == "spec":
        keys += [
            k
            for k in _known_keys(SweepSpec)
            if k.split(".")[0] not in ("base", "grid", "pack")
            and k not in ("tune", "early_stopping", "resources", "tune.params")
        ]
    name = option.lstrip("-").replace("-", "_").replace(".", "_")
    exact = [k for k in keys if k.replace(".", "_") == name]
    return exact or [k for k in keys if k.rsplit(".", 1)[-1] == name]


def unknown_arguments(prog: str, extras: list[str], given: list[str]) -> str:
    """What to say of arguments a command does not take: an option that names a config key
    is a ``--set`` (with the value that followed it in ``given``, the command's arguments),
    anything else a slip to check against ``--help``."""
    from study.config import clipped

    command = prog.removeprefix("oodstudy").strip()
    for i, arg in enumerate(extras):
        option, _, inline = arg.partition("=")
        keys = option_keys(command, option) if option.startswith("--") else []
        if not keys:
            continue
        at = given.index(arg) + 1 if arg in given else len(given)  # argparse may have taken it as a positional
        follows = given[at] if at < len(given) and not given[at].startswith("--") else ""
        value = inline or follows or "VALUE"
        example = f"--set {shlex.quote(f'{keys[0]}={value}')}"
        more = f" (or {', '.join(keys[1:3])})" if len(keys) > 1 else ""
        if command == "resume":
            return (
                f"{clipped(option)} is not an option of resume: a study resumes with the spec it ran with; to "
                f"change {keys[0]}{more}, run the spec again under a new --name with {example}"
            )
        what = "spec keys" if SET_KEYS[command] == "spec" else "config keys"
        return f"{clipped(option)} is not an option of {command}; set {what} with --set, e.g. {example}{more}"
    unknown = clipped(" ".join(extras))
    return (
        f"{command + ': ' if command else ''}{unknown}: not an {'option' if extras[0].startswith('-') else 'argument'}"
        f" of {command or 'oodstudy'}; check the spelling, or list its options with: {prog} --help"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``oodstudy`` parser: one sub-command group per module of this package."""
    from study.cli import check, jobs, plan, report, store, sweep, trial

    parser = Parser(
        prog="oodstudy",
        description="Map where transformers' out-of-distribution generalization breaks down: run one trial, "
        "run a sweep on Ray Tune (embedded local Ray or a cluster), watch it, and read its store.",
        epilog="Start with: oodstudy run search_spaces/quickstart.yaml   (then: oodstudy report --store ./results)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    trial.add_trial_command(sub)
    sweep.add_sweep_commands(sub)
    plan.add_plan_command(sub)
    jobs.add_jobs_commands(sub)
    store.add_store_commands(sub)
    report.add_report_command(sub)
    check.add_check_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the command; return its exit code.

    The one error handler of the CLI: every :class:`~study.errors.OodstudyError`,
    whichever command raised it, is printed as one line ``oodstudy: <message>`` on
    stderr and exits with code 2; a study whose planned trials failed exits with code 1
    after its summary; Ctrl-C, and SIGTERM alike, print one line and exit with code 130.
    A command line argparse refuses (an unknown option, a missing argument) is such an
    error too (:class:`Parser`); ``--help`` prints and exits 0 as argparse does.
    """
    command = None
    try:
        args = build_parser().parse_args(argv)
        check_options(args)
    except OodstudyError as err:  # a command line the parser refuses
        print(f"oodstudy: {one_line(str(err))}", file=sys.stderr)
        return EXIT_ERROR
    command = args.command
    reset_ctrl_c()
    stop_on_sigterm()
    ray = sys.modules.get("ray")
    ray_before = ray is not None and ray.is_initialized()  # a caller's Ray is the caller's to shut down
    try:
        return int(args.func(args) or 0)
    except OodstudyError as err:
        return last_line(f"oodstudy: {one_line(str(err))}", EXIT_ERROR, ray_before)
    except TrialsFailed as err:
        return last_line(f"oodstudy: {one_line(str(err))}", EXIT_TRIALS_FAILED, ray_before)
    except Interrupted as err:
        return last_line(f"\noodstudy: {one_line(str(err))}", EXIT_INTERRUPTED, ray_before)
    except KeyboardInterrupt:
        return last_line(
            f"\noodstudy: interrupted (Ctrl-C or SIGTERM) during `{command}`; what was written before "
            "stays as it was (the store only ever gains whole fragments)",
            EXIT_INTERRUPTED,
            ray_before,
        )
    except BrokenPipeError:  # the reader of stdout left (`| head`): stop quietly, as a shell tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not raise again
        return EXIT_BROKEN_PIPE


def last_line(line: str, code: int, ray_before: bool) -> int:
    """Print the command's closing line last: a Ray this command started is stopped first
    (its trials' uncollected errors, already summed up in the line, are not printed again at
    exit); when stopping it hangs (its GCS gone), the process ends right after the line."""
    stopped = ray_before or leave_ray()
    print(line, file=sys.stderr, flush=True)
    if not stopped:
        sys.stdout.flush()
        os._exit(code)
    return code


def check_options(args) -> None:
    """Option values refused before the command reads anything, in the option's own words:
    ``run --name 'my study'`` is about --name, not the spec file it would override."""
    from study.config import check_study_name, shown

    name = getattr(args, "name", None)
    if args.command in ("run", "submit") and isinstance(name, str) and name.strip():
        try:
            check_study_name(name, option="--name")
        except ConfigError as err:
            raise ConfigError(f"--name {shown(name)}: {err}") from None


def one_line(message: str) -> str:
    """A message on one line: its lines joined by "; "."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())
