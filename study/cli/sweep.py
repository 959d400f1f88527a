"""``oodstudy run | resume | status``: run a sweep spec on Ray Tune, finish an
interrupted study, show a study's progress.  The end-of-run summary is the one place
where the service's CLI calls the analysis package."""

from __future__ import annotations

import time
from shlex import quote

from study.config import SweepSpec, load_sweep_spec
from study.errors import ConfigError, Interrupted, OodstudyError, StoreError, TrialsFailed
from study.store.lease import StudyLease
from study.tune.recovery import disk_full_at
from study.tune.progress import is_live, progress_lines, read_progress
from study.tune.runner import read_spec_copy, run_sweep, storage_path, with_absolute_paths
from study.tune.status import cell_status, is_finished, study_status


def _print_summary(spec: SweepSpec) -> None:
    """The end-of-run tables, both one row per cell (seeds pooled): trials per status,
    then the study's breakdown; then the spec's claims, checked."""
    from analysis.load import study_frames
    from analysis.summary import summary_text
    from study.cli.check import print_claims
    from study.store import Store

    if spec.threshold is not None:
        print_threshold_summary(spec)
        return
    print("trials per cell (seeds pooled):")
    print(
        cell_status(study_status(spec, stopped=True), spec.tune.mode).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"
        )
    )
    print()
    trials, final = study_frames(Store(spec.store, create=False), spec.name)
    print(summary_text(spec.name, trials, final))
    print_claims(spec)


def print_threshold_summary(spec: SweepSpec) -> None:
    """A threshold study's end: trials per cell by status, then one line per cell with the
    threshold, its interval, the trials used and why the search stopped."""
    from analysis.summary import threshold_sentences
    from study.store import Store

    table = study_status(spec, stopped=True)
    print("trials per cell of the threshold search:")
    print(table.drop(columns=["estimate", "low", "high"]).to_string(index=False))
    print()
    rows = Store(spec.store, create=False).frame("thresholds", study=spec.name).sort_values("cell")
    print(f"study {spec.name}")
    print("\n".join(threshold_sentences(rows)) or "no threshold rows yet")


def _run_to_end(spec: SweepSpec, **kwargs) -> None:
    """Run (or resume) the sweep.  After Ctrl-C (Tune stops the trials and saves the
    experiment; a second Ctrl-C stops at once) raise :class:`Interrupted` saying how far
    the study got, what the store holds and how to finish."""
    try:
        run_sweep(spec, **kwargs)
    except OodstudyError:
        raise
    except Exception as err:  # a full disk surfaces from Tune, Ray or pyarrow as many kinds of error
        line = disk_full_at(err, [spec.store, storage_path(spec)])
        if line is None:
            raise
        raise StoreError(
            f"{line}; the store holds every row up to each trial's last checkpoint; free space there, then "
            f"finish the study with: oodstudy resume {quote(spec.name)} --store {quote(spec.store)}"
        ) from None
    except KeyboardInterrupt:
        table = study_status(spec, stopped=True)
        if spec.threshold is not None:
            stopped = int((table["search"] != "searching").sum())
            raise Interrupted(
                f"interrupted: threshold study {spec.name} has {int(table['trials'].sum())} trials so far "
                f"({int(table['completed'].sum())} completed), {stopped}/{len(table)} cells' searches stopped; the "
                f"store {spec.store} holds every row written up to each trial's last checkpoint; finish the study "
                f"with: oodstudy resume {quote(spec.name)} --store {quote(spec.store)}"
            ) from None
        planned, pending = int(table["planned"].sum()), int((table["pending"] + table["running"]).sum())
        raise Interrupted(
            f"interrupted: study {spec.name} has {planned - pending}/{planned} trials finished "
            f"({int(table['completed'].sum())} completed); the store {spec.store} holds every row written up "
            f"to each trial's last checkpoint (check it with: oodstudy store validate --store {quote(spec.store)}); "
            f"finish the study with: oodstudy resume {quote(spec.name)} --store {quote(spec.store)}"
        ) from None


def check_no_failed_trials(spec: SweepSpec) -> None:
    """A study that ended with planned trials failed (each after its retries) is not a
    success: raise :class:`TrialsFailed`, counting them and saying where their errors are."""
    table = study_status(spec)
    failed = int(table["failed"].sum())
    planned = (
        f"{int(table['trials'].sum())} trials"
        if spec.threshold is not None
        else f"{int(table['planned'].sum())} planned trials"
    )
    if failed:
        query = "SELECT trial_id, cell, error FROM trials WHERE status = 'failed'"
        raise TrialsFailed(
            f"{failed} of {planned} of study {spec.name} failed (after "
            f'{spec.max_failures} retries each); read their errors with: oodstudy store sql "{query}" '
            f"--store {quote(spec.store)}, or in Ray Tune's trial logs under {storage_path(spec)}/{spec.name}"
        )


def set_by_option(overrides: list[str], key: str, value: str | None, option: str) -> None:
    """``--store X`` / ``--name X`` as ``--set key=X``; an empty value is refused, never ignored."""
    if value is None:
        return
    if not value.strip():
        raise ConfigError(
            f"{option} is empty; pass a {key} (e.g. {option} {'./results' if key == 'store' else 'my-study'}) "
            "or drop the option to use the spec's"
        )
    overrides.append(f"{key}={value}")


def _cmd_run(args) -> int:
    overrides = list(args.set or [])
    set_by_option(overrides, "store", args.store, "--store")
    set_by_option(overrides, "name", args.name, "--name")
    spec = with_absolute_paths(load_sweep_spec(args.spec, overrides))
    _run_to_end(spec, address=args.address, tune_table=args.tune_table)
    _print_summary(spec)
    print(
        f"\nresults in {spec.store} (study {spec.name}); analyse with: "
        f"oodstudy report --store {quote(spec.store)} --study {quote(spec.name)} --out {quote('report/' + spec.name)}"
    )
    check_no_failed_trials(spec)
    return 0


def check_store_intact(spec: SweepSpec) -> None:
    """A study whose store lost a fragment would read as less done than it is: say so (one
    line naming ``store validate`` and ``store repair``) before reading it as if whole."""
    from study.store import Store, check_intact

    try:
        store = Store(spec.store, create=False)
    except StoreError:
        return  # no store yet: nothing was written
    check_intact(store, spec.name)


def _cmd_resume(args) -> int:
    spec = read_spec_copy(args.name, args.store, args.storage_path)
    check_store_intact(spec)
    table = study_status(spec)
    if is_finished(table):
        ended = ", ".join(
            f"{int(table[s].sum())} {s}" for s in ("completed", "failed", "diverged", "pruned") if table[s].sum()
        )
        what = (
            "every cell's threshold search stopped" if spec.threshold is not None else "every planned trial has ended"
        )
        print(
            f"study {spec.name} is finished ({ended}: {what}); nothing to do. "
            f"See it with: oodstudy report --store {quote(spec.store)} --study {quote(spec.name)}"
        )
        check_no_failed_trials(spec)
        return 0
    _run_to_end(spec, address=args.address, resume=True, tune_table=args.tune_table)
    _print_summary(spec)
    check_no_failed_trials(spec)
    return 0


def only_study(store_uri: str) -> str:
    """The name of the store's one study (``status`` without a name); else a ConfigError listing them."""
    from study.store import Store

    studies = Store(store_uri, create=False).studies()
    if len(studies) != 1:
        listed = ", ".join(studies[:10]) or "none"
        raise ConfigError(
            f"the store {store_uri} holds {len(studies)} studies ({listed}); "
            f"name one: oodstudy status NAME --store {quote(store_uri)}"
        )
    return studies[0]


def _cmd_status(args) -> int:
    name = args.name if args.name is not None else only_study(args.store)
    spec = read_spec_copy(name, args.store, args.storage_path)
    check_store_intact(spec)
    state = read_progress(storage_path(spec), spec.name)
    owner = StudyLease(spec.store, spec.name).read()
    # a progress file is live while it is fresh, unless its driver's lease shows that driver gone
    live = state if is_live(state) and (owner is None or owner.is_alive()) else None
    table = study_status(spec, live=live, stopped=live is None and not (owner is not None and owner.is_alive()))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if spec.threshold is not None:
        stopped = int((table["search"] != "searching").sum())
        print(
            f"\nthreshold search: {int(table['trials'].sum()) - int(table['running'].sum())} trials so far, budget "
            f"{spec.threshold.budget} per cell; {stopped}/{len(table)} cells stopped"
        )
    else:
        done = int((table["planned"] - table["pending"] - table["running"]).sum())
        print(f"\n{done}/{int(table['planned'].sum())} trials finished")
    if live is not None:
        age = time.time() - float(live["updated"])
        print(f"\nrunning now (progress of {age:.0f} s ago):")
        print("\n".join(progress_lines(live)))
    elif owner is not None and owner.is_alive():
        print(f"\nowned by a running driver, {owner.describe()}, which has not reported progress yet")
    elif state is not None and not state.get("finished") and not is_finished(table):
        age = (time.time() - float(state["updated"])) / 60
        gone = (
            f"its driver ({owner.describe()}) is gone"
            if owner is not None
            else f"no driver has reported progress for {age:.0f} min"
        )
        print(
            f"\n{gone}: the run stopped; finish it with: oodstudy resume {quote(spec.name)} --store {quote(spec.store)}"
        )
    return 0


def add_sweep_commands(sub) -> None:
    p = sub.add_parser("run", help="run a sweep spec on Ray Tune (embedded local Ray unless --address)")
    p.add_argument(
        "spec",
        help="search_spaces/<name>.yaml, or env:NAME for the spec's YAML text in environment variable NAME "
        "(how `submit` sends a spec with a job)",
    )
    p.add_argument("--store", help="results store URI (overrides the spec's)")
    p.add_argument("--name", help="study name (overrides the spec's)")
    p.add_argument("--address", help="Ray cluster address: auto, ray://host:10001, ...")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set train.steps=500 or --set grid.model.size=[nano]",
    )
    p.add_argument("--tune-table", action="store_true", help="also print Ray Tune's status table")
    p.set_defaults(func=_cmd_run)

    for name, func, text in (
        ("resume", _cmd_resume, "finish an interrupted study"),
        (
            "status",
            _cmd_status,
            "trials done/running/pending and the best score per grid point (per cell of a threshold search)",
        ),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "name",
            nargs="?" if name == "status" else None,
            help="study name" + (" (default: the store's only study)" if name == "status" else ""),
        )
        p.add_argument("--store", default="./results", help="results store URI")
        p.add_argument("--storage-path", help="Ray Tune run directory if not <store>/_runs")
        if name == "resume":
            p.add_argument("--address", help="Ray cluster address: auto, host:6379 or ray://host:10001")
            p.add_argument("--tune-table", action="store_true", help="also print Ray Tune's status table")
        p.set_defaults(func=func)
