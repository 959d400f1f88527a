"""``oodstudy report``: a self-contained HTML report of one study (see
:func:`analysis.report.build_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from study.errors import ConfigError


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis import load
    from analysis.report import build_report

    store = load.open_store(args.store)
    study = args.study
    if study is None:
        names = store.studies()
        if len(names) != 1:
            raise ConfigError(f"name a study with --study; the store {args.store} has: {', '.join(names) or 'none'}")
        study = names[0]
    path = build_report(store, study, args.out or Path("reports") / study, threshold=args.threshold)
    print(path)
    return 0


def add_report_command(subparsers: Any) -> None:
    """Add ``report --store URI --study NAME --out DIR`` to the CLI's subparsers."""
    p = subparsers.add_parser("report", help="write an HTML report (figures, tables, CSVs) of a study")
    p.add_argument("--store", default="./results", help="store directory or URI (default ./results)")
    p.add_argument("--study", default=None, help="study name (default: the store's only study)")
    p.add_argument("--out", default=None, help="output directory (default reports/<study>)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="boundary: score below this share of the ID score (default 0.5)")
    p.set_defaults(func=_cmd_report)
