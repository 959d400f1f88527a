"""``oodstudy run | resume | status``: run a sweep spec on Ray Tune, finish an
interrupted study, show a study's progress.  The end-of-run summary is the one place
where the service's CLI calls the analysis package."""

from __future__ import annotations

import time

from study.config import SweepSpec, load_sweep_spec
from study.errors import Interrupted
from study.tune.progress import is_live, progress_lines, read_progress
from study.tune.runner import read_spec_copy, run_sweep, storage_path
from study.tune.status import cell_status, is_finished, study_status


def _print_summary(spec: SweepSpec) -> None:
    """The end-of-run tables, both one row per cell (seeds pooled): trials per status,
    then the study's breakdown."""
    from analysis.summary import summary_text
    from analysis.load import study_frames
    from study.store import Store

    print("trials per cell (seeds pooled):")
    print(cell_status(study_status(spec), spec.tune.mode).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    trials, final = study_frames(Store(spec.store, create=False), spec.name)
    print(summary_text(spec.name, trials, final))


def _run_to_end(spec: SweepSpec, **kwargs) -> None:
    """Run (or resume) the sweep.  After Ctrl-C (Tune stops the trials and saves the
    experiment; a second Ctrl-C stops at once) raise :class:`Interrupted` saying how far
    the study got, what the store holds and how to finish."""
    try:
        run_sweep(spec, **kwargs)
    except KeyboardInterrupt:
        table = study_status(spec)
        planned, pending = int(table["planned"].sum()), int((table["pending"] + table["running"]).sum())
        raise Interrupted(
            f"interrupted: study {spec.name} has {planned - pending}/{planned} trials finished "
            f"({int(table['completed'].sum())} completed); the store {spec.store} holds every row written up "
            f"to each trial's last checkpoint (check it with: oodstudy store validate --store {spec.store}); "
            f"finish the study with: oodstudy resume {spec.name} --store {spec.store}"
        ) from None


def _cmd_run(args) -> int:
    overrides = list(args.set or [])
    if args.store:
        overrides.append(f"store={args.store}")
    if args.name:
        overrides.append(f"name={args.name}")
    spec = load_sweep_spec(args.spec, overrides)
    _run_to_end(spec, address=args.address, tune_table=args.tune_table)
    _print_summary(spec)
    print(f"\nresults in {spec.store} (study {spec.name}); analyse with: "
          f"oodstudy report --store {spec.store} --study {spec.name} --out report/{spec.name}")
    return 0


def _cmd_resume(args) -> int:
    spec = read_spec_copy(args.name, args.store, args.storage_path)
    table = study_status(spec)
    if is_finished(table):
        ended = ", ".join(f"{int(table[s].sum())} {s}" for s in ("completed", "failed", "diverged", "pruned")
                          if table[s].sum())
        print(f"study {spec.name} is finished ({ended}: every planned trial has ended); nothing to do. "
              f"See it with: oodstudy report --store {spec.store} --study {spec.name}")
        return 0
    _run_to_end(spec, address=args.address, resume=True, tune_table=args.tune_table)
    _print_summary(spec)
    return 0


def _cmd_status(args) -> int:
    spec = read_spec_copy(args.name, args.store, args.storage_path)
    state = read_progress(storage_path(spec), spec.name)
    live = state if is_live(state) else None
    table = study_status(spec, live=live)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    done = int((table["planned"] - table["pending"] - table["running"]).sum())
    print(f"\n{done}/{int(table['planned'].sum())} trials finished")
    if live is not None:
        age = time.time() - float(live["updated"])
        print(f"\nrunning now (progress of {age:.0f} s ago):")
        print("\n".join(progress_lines(live)))
    elif state is not None and not state.get("finished") and not is_finished(table):
        age = (time.time() - float(state["updated"])) / 60
        print(f"\nno driver has reported progress for {age:.0f} min: the run stopped; "
              f"finish it with: oodstudy resume {spec.name} --store {spec.store}")
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
