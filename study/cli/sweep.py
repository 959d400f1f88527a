"""``oodstudy run | resume | status``: run a sweep spec on Ray Tune, finish an
interrupted study, show a study's progress.  The end-of-run summary is the one place
where the service's CLI calls the analysis package."""

from __future__ import annotations

from study.config import SweepSpec, load_sweep_spec
from study.tune.runner import read_spec_copy, run_sweep
from study.tune.status import study_status


def _print_summary(spec: SweepSpec) -> None:
    """The end-of-run tables: progress per grid point, then the study's breakdown."""
    from analysis.breakdown import summary_text
    from analysis.load import study_frames
    from study.store import Store

    print(study_status(spec).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    trials, final = study_frames(Store(spec.store, create=False), spec.name)
    print(summary_text(spec.name, trials, final))


def _cmd_run(args) -> int:
    overrides = list(args.set or [])
    if args.store:
        overrides.append(f"store={args.store}")
    if args.name:
        overrides.append(f"name={args.name}")
    spec = load_sweep_spec(args.spec, overrides)
    run_sweep(spec, address=args.address, tune_table=args.tune_table)
    _print_summary(spec)
    print(f"\nresults in {spec.store} (study {spec.name}); analyse with: "
          f"oodstudy report --store {spec.store} --study {spec.name} --out report/{spec.name}")
    return 0


def _cmd_resume(args) -> int:
    spec = read_spec_copy(args.name, args.store, args.storage_path)
    run_sweep(spec, address=args.address, resume=True, tune_table=args.tune_table)
    _print_summary(spec)
    return 0


def _cmd_status(args) -> int:
    spec = read_spec_copy(args.name, args.store, args.storage_path)
    table = study_status(spec)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    done = int((table["planned"] - table["pending"] - table["running"]).sum())
    print(f"\n{done}/{int(table['planned'].sum())} trials finished")
    return 0


def add_sweep_commands(sub) -> None:
    p = sub.add_parser("run", help="run a sweep spec on Ray Tune (embedded local Ray unless --address)")
    p.add_argument("spec", help="search_spaces/<name>.yaml")
    p.add_argument("--store", help="results store URI (overrides the spec's)")
    p.add_argument("--name", help="study name (overrides the spec's)")
    p.add_argument("--address", help="Ray cluster address: auto, ray://host:10001, ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override, e.g. --set train.steps=500 or --set grid.model.size=[nano]")
    p.add_argument("--tune-table", action="store_true", help="also print Ray Tune's status table")
    p.set_defaults(func=_cmd_run)

    for name, func, text in (("resume", _cmd_resume, "finish an interrupted study"),
                             ("status", _cmd_status, "cells done/running/pending and best score per cell")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help="study name")
        p.add_argument("--store", default="./results", help="results store URI")
        p.add_argument("--storage-path", help="Ray Tune run directory if not <store>/_runs")
        if name == "resume":
            p.add_argument("--address", help="Ray cluster address")
            p.add_argument("--tune-table", action="store_true")
        p.set_defaults(func=func)
