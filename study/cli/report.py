"""``oodstudy report``: a self-contained HTML report of one study (see
:func:`analysis.report.build_report`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from study.errors import ConfigError


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis import load
    from analysis.report import build_report

    if not 0 < args.threshold <= 1:  # false for nan too
        raise ConfigError(
            f"--threshold {args.threshold:g}: the boundary is a share of the ID score, in (0, 1]; "
            "pass a fraction such as 0.5"
        )
    store = load.open_store(args.store)
    study = args.study
    if study is None:
        names = store.studies()
        if len(names) != 1:
            raise ConfigError(f"name a study with --study; the store {args.store} has: {', '.join(names) or 'none'}")
        study = names[0]
    if study not in store.studies():  # before --out is made
        raise ConfigError(
            f"study {study!r} is not in the store {args.store}; studies there: "
            f"{', '.join(store.studies()) or 'none'}; name one with --study"
        )
    from study.store import check_intact

    check_intact(store, study)  # a study that lost a fragment would be reported as less than it is
    out = Path(args.out or Path("report") / study)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".oodstudy-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"--out {out}: cannot write there ({err.strerror or err}); pass a directory you can write to"
        ) from None
    try:
        path = build_report(
            store, study, out, threshold=args.threshold, claim_table=claims_now(store, study, args.store)
        )
    except OSError as err:
        raise ConfigError(
            f"--out {out}: writing the report failed ({err.strerror or err}) at "
            f"{err.filename or out}; check the free space and permissions there"
        ) from None
    print(path)
    return 0


def claims_now(store: Any, study: str, uri: str):
    """The study's claims checked on the store as it is now (without writing), or None when
    the study's spec copy is unreadable there (the report then shows the stored ones)."""
    from study.cli.check import study_claims
    from study.tune.runner import read_spec_copy

    try:
        spec = read_spec_copy(study, uri)
    except (ConfigError, OSError, ValueError):  # no spec copy under <store>/_runs: a store written elsewhere
        return None
    return study_claims(spec, write=False) if spec.expect else None


def add_report_command(subparsers: Any) -> None:
    """Add ``report --store URI --study NAME --out DIR`` to the CLI's subparsers."""
    p = subparsers.add_parser("report", help="write an HTML report (figures, tables, CSVs) of a study")
    p.add_argument("--store", default="./results", help="store directory or URI (default ./results)")
    p.add_argument("--study", default=None, help="study name (default: the store's only study)")
    p.add_argument("--out", default=None, help="output directory (default report/<study>, as the end of `run` prints)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="boundary: score below this share of the ID score, in (0, 1] (default 0.5)",
    )
    p.set_defaults(func=_cmd_report)
