"""``oodstudy plan SPEC``: what a study will launch and what it will cost, before it runs.

Counts (grid points, members, packs, Tune trials), the memory of one trial against the
device's, and a time estimate from a short calibration of one pack per trial shape
(:mod:`study.tune.plan`).  No Ray is started; ``--address`` attaches to a cluster only to
read its nodes.  A spec ``run`` refuses is refused here the same way (one ``oodstudy:``
line, exit 2); what ``run`` would refuse *on this machine* (too few CPUs, no GPU, a trial
larger than the memory) is a line of the plan, since the plan is how one finds out.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter

from study.config import SweepSpec, load_sweep_spec
from study.tune import plan
from study.errors import ConfigError
from study.memory import available_bytes, estimate_trial_memory, gib


def add_plan_command(sub) -> None:
    p = sub.add_parser("plan", help="count a spec's trials and estimate its time and memory, without running it")
    p.add_argument("spec", help="search_spaces/<name>.yaml")
    p.add_argument("--store", help="results store URI (overrides the spec's; checked as run checks it)")
    p.add_argument("--address", help="a Ray cluster (auto, host:6379, ray://host:10001): plan for its nodes")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set train.steps=500 or --set grid.model.size=[nano]",
    )
    # timed calibration steps per shape (tests use a few; warm-up steps scale with it)
    p.add_argument("--calibrate-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_plan)


def cluster_machine(spec: SweepSpec, address: str) -> tuple[plan.Machine, str | None]:
    """The alive nodes of the cluster at ``address`` (ray.nodes()), and what ``run`` would
    refuse there (:func:`~study.tune.runner.check_resources_on_cluster`), if anything; a
    Ray this call attached to is left again."""
    import ray

    from study.tune.runner import check_resources_on_cluster, connect_ray

    was = ray.is_initialized()
    connect_ray(address)
    try:
        nodes = [
            {k: float(v) for k, v in n.get("Resources", {}).items() if k in ("CPU", "GPU", "memory")}
            for n in ray.nodes()
            if n.get("Alive")
        ]
        try:
            check_resources_on_cluster(spec)
            refusal = None
        except ConfigError as err:
            refusal = str(err)
    finally:
        if not was:
            ray.shutdown()
    machine = plan.Machine(
        f"the cluster at {address} ({len(nodes)} node{'s' * (len(nodes) != 1)})",
        sum(n.get("CPU", 0) for n in nodes),
        sum(n.get("GPU", 0) for n in nodes),
        nodes,
    )
    return machine, refusal


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _cmd_plan(args) -> int:
    from study.cli.sweep import set_by_option
    from study.store import Store
    from study.tune.runner import check_address, check_optuna_storage, with_absolute_paths

    overrides = list(args.set or [])
    set_by_option(overrides, "store", args.store, "--store")
    spec = with_absolute_paths(load_sweep_spec(args.spec, overrides))  # run's validation, word for word
    check_optuna_storage(spec)
    Store.check_target(spec.store)
    if args.address is not None:
        check_address(args.address)
    if args.calibrate_steps is not None and args.calibrate_steps < 1:
        raise ConfigError(f"--calibrate-steps {args.calibrate_steps}: give at least 1")
    import torch

    from study.tune.autopack import resolve_pack_size

    out = print
    notes: list[str] = []
    if spec.pack.size == "auto":
        if spec.resources.gpus > 0 and not torch.cuda.is_available():
            notes.append("pack.size auto is measured on the trials' GPU, which this machine lacks: costed at K=1")
            spec = spec.with_pack_size(1)
        else:
            steps = args.calibrate_steps
            spec = resolve_pack_size(spec, **({} if steps is None else {"warmup": 1, "timed": steps}))
            out("")
    count = plan.counts(spec)
    out(f"plan of study {spec.name} ({args.spec})")
    axes = " x ".join(f"{axis} {len(values)}" for axis, values in spec.grid.items()) or "no grid axes"
    out(
        f"  grid points  {count.grid_points}  ({axes}; {count.cells} cell{'s' * (count.cells != 1)} "
        "without the seed axis)"
    )

    # ---- what the study launches
    if spec.threshold is not None:
        search = spec.threshold
        cells_trials = plan.threshold_trials(spec)
        out(
            f"  threshold search along {search.axis}: no fixed count; at most {search.budget} members per cell "
            f"(budget) x {count.cells} cells = {count.members} members, {search.seeds_per_point} seeds per point"
        )
        per_point = math.ceil(search.seeds_per_point / spec.pack_size)
        packs = (
            f"{per_point} pack{'s' * (per_point != 1)} of up to {spec.pack_size} per point"
            if spec.pack_size > 1
            else "none (pack.size 1)"
        )
        out(f"  packs        {packs}")
        out(f"  Tune trials  at most {count.trials} (an upper bound: a cell stops once its threshold is narrow enough)")
        all_trials = [t for cell in cells_trials for end in cell for t in end]
    else:
        trials = plan.planned_trials(spec)
        quota = spec.tune.trials_per_grid_point
        out(
            f"  members      {count.members}  ({count.grid_points} grid points x {quota} "
            f"trial{'s' * (quota != 1)} per grid point)"
        )
        if spec.pack_size > 1:
            sizes = Counter(t.members for t in trials)
            made = ", ".join(f"{n} of {k}" for k, n in sorted(sizes.items(), reverse=True))
            out(f"  packs        {len(trials)}  (pack.size {spec.pack_size}: {made} members)")
        else:
            out("  packs        none  (pack.size 1: each member is its own Tune trial)")
        out(f"  Tune trials  {count.trials}")
        all_trials = trials
        neutral = {name for name in spec.tune.params if name in plan.COST_NEUTRAL}
        costly = sorted(set(spec.tune.params) - neutral)
        if costly:
            notes.append(
                f"tuned axes {costly} change a trial's cost; trials are costed at their first corner "
                f"({plan.first_params(spec)})"
            )

    # ---- where it runs
    refusal = None
    if args.address is not None:
        machine, refusal = cluster_machine(spec, args.address)
    else:
        machine = plan.local_machine()
        from study.tune.runner import check_resources_locally

        try:
            check_resources_locally(spec)
        except ConfigError as err:
            refusal = str(err)
    n_slots = plan.slots(spec, machine)
    res = spec.resources
    gpu_text = f", {res.gpus:g} GPU" if res.gpus else ""
    out(
        f"  resources    {res.cpus:g} CPU{gpu_text} per trial; {machine.where}: {machine.cpus:g} CPUs, "
        f"{machine.gpus:g} GPUs; max_concurrent {spec.max_concurrent or 'unset'} -> {n_slots} trial"
        f"{'s' * (n_slots != 1)} at a time"
    )

    # ---- memory
    shapes = plan.group_shapes(all_trials)
    estimates = {key: estimate_trial_memory(s.cfg) for key, s in shapes.items()}
    biggest = max(estimates.values(), key=lambda e: e.total)
    gpu_trials = res.gpus > 0
    if args.address is not None:
        if gpu_trials:
            budget, where = None, "the GPUs' memory (not in the cluster's resources; checked on each node at run)"
        else:
            memory = max((n.get("memory", 0) for n in machine.nodes), default=0)
            budget, where = (int(memory), "the memory of the cluster's largest node") if memory else (None, "?")
    elif gpu_trials and not torch.cuda.is_available():
        budget, where = None, "a GPU's memory (this machine has no CUDA device to compare with)"
    else:
        budget, where = available_bytes("cuda" if gpu_trials else "cpu", res.gpus)
    fits = budget is None or all(e.total <= budget for e in estimates.values())
    verdict = "" if budget is None else (f" of {gib(budget)}, {where}: {'fits' if fits else 'does NOT fit'}")
    out(
        f"  memory       {gib(biggest.total)} per trial (largest part: {biggest.largest()}, "
        f"{gib(biggest.parts[biggest.largest()])}){verdict or '; compare with ' + where}"
    )
    if refusal:
        notes.append(f"`oodstudy run` on {machine.where} would refuse this spec: {refusal}")

    # ---- calibration
    calibrate = True
    if gpu_trials and not torch.cuda.is_available():
        calibrate = False
        notes.append(
            f"no calibration: the trials take a GPU (resources.gpus={res.gpus:g}) and this machine has "
            "none, and a CPU step rate says nothing of a GPU's; run `oodstudy plan` on a GPU machine "
            "for the time"
        )
    elif not fits:
        calibrate = False
        notes.append("no calibration: a trial does not fit the memory here")
    threads = plan.trial_threads(spec)
    if args.calibrate_steps is not None:
        timed, warmup = args.calibrate_steps, max(1, min(plan.WARMUP_STEPS, args.calibrate_steps // 4))
    else:
        timed, warmup = plan.TIMED_STEPS, plan.WARMUP_STEPS
    ordered = list(shapes.values())
    labels = plan.shape_labels(ordered)
    if calibrate:
        device = "cuda" if gpu_trials else "cpu"
        load = plan.load_average()
        out(
            f"\ncalibration: one pack per shape, {warmup} warm-up + {timed} timed steps and one timed evaluation, "
            f"{threads} torch thread{'s' * (threads != 1)}, on {device}, at niceness {plan.ray_worker_niceness()} as Ray "
            f"runs trials (load average {load}, {plan.local_machine().cpus:g} CPUs here)"
        )
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        here = plan.local_machine().cpus
        if device == "cpu" and busy > here - 0.5:
            notes.append(
                f"this machine was busy during the calibration (load average {busy:.1f} on {here:g} CPUs): "
                "the rates are what one trial got then; trials running side by side with that other work "
                "get less, so expect longer (measured: 2-2.5x on a load of 5-20, README)"
            )
        for shape in ordered:
            cfg = shape.cfg
            dev = cfg.train.device if cfg.train.device != "auto" else device
            shape.calibration = plan.calibrate(cfg, threads=threads, device=dev, warmup=warmup, timed=timed)

    # ---- the table
    out("")
    header = ("shape", "trials", "steps", "s/step", "eval s", "est. per trial")
    rows = []
    for label, shape in zip(labels, ordered):
        steps = sorted({t.cfg.train.steps for t in shape.trials})
        evals = sorted({plan.evaluations(t.cfg) for t in shape.trials})
        c = shape.calibration
        if c is None:
            rate = ev = per = "-"
        else:
            seconds = [shape.seconds(t) for t in shape.trials]
            rate, ev = f"{c.step_s:.4f}", f"{c.eval_s:.2f}"
            lo, hi = min(seconds), max(seconds)
            per = _minutes(lo) if hi - lo < 0.5 else f"{_minutes(lo)} - {_minutes(hi)}"
        n = shape.count
        trials_text = f"<= {n}" if spec.threshold is not None else str(n)
        step_text = str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
        step_text += f" ({evals[0] if len(evals) == 1 else f'{evals[0]}-{evals[-1]}'} evals)"
        rows.append((label, trials_text, step_text, rate, ev, per))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        out("  " + "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths))))

    # ---- the total
    out("")
    slots_text = (
        f"{machine.where} ({machine.cpus:g} CPUs{f', {machine.gpus:g} GPUs' if machine.gpus else ''}, "
        f"{n_slots} trial{'s' * (n_slots != 1)} at a time)"
    )
    if not calibrate:
        out(f"total: not estimated (no calibration); {count.trials} Tune trials on {slots_text}")
    elif n_slots < 1:
        out(f"total: not estimated: no trial fits {machine.where} (see the note below)")
    else:
        shape_of = {id(t): s for s in ordered for t in s.trials}
        if spec.threshold is not None:
            queue = []
            for cell in cells_trials:  # per cell, the costliest axis end, its whole budget
                costs = [[shape_of[id(t)].seconds(t) for t in end] for end in cell]
                queue.append(max(costs, key=sum))
            in_flight = count.cells * math.ceil(spec.threshold.seeds_per_point / spec.pack_size)
            seconds = [s for cell in queue for s in cell]
            total = plan.schedule_seconds(seconds, min(n_slots, in_flight))
            bound = "at most "
        else:
            seconds = [shape_of[id(t)].seconds(t) for t in all_trials]
            total = plan.schedule_seconds(seconds, n_slots)
            bound = "about "
        train_s = sum(
            shape_of[id(t)].calibrated().step_s * t.cfg.train.steps for t in all_trials if spec.threshold is None
        )
        eval_s = sum(
            shape_of[id(t)].calibrated().eval_s * plan.evaluations(t.cfg) for t in all_trials if spec.threshold is None
        )
        extra = (
            f"; of the trials' time {train_s / max(sum(seconds), 1e-9):.0%} training steps, "
            f"{eval_s / max(sum(seconds), 1e-9):.0%} evaluation"
            if spec.threshold is None
            else " (every cell spends its whole budget at the costliest axis end)"
        )
        gpu_hours = f", {sum(seconds) * res.gpus / 3600:.2f} GPU-hours" if gpu_trials else ""
        out(f"total: {bound}{_minutes(total)} on {slots_text}{gpu_hours}{extra}")
        if spec.early_stopping.type == "asha":
            n_evals = max(plan.evaluations(t.cfg) for t in all_trials)
            share = plan.asha_kept_share(spec, n_evals)
            es = spec.early_stopping
            out(
                f"early stopping (asha, grace_period {es.grace_period}, reduction_factor {es.reduction_factor:g}, "
                f"rungs at evaluations {plan.asha_rungs(spec, n_evals)} of {n_evals}): saves at most "
                f"{1 - share:.0%} of the training (if each rung stops all but 1/{es.reduction_factor:g} of a grid "
                f"point's trials; with few trials per grid point it stops fewer), about "
                f"{_minutes(total * share)} instead; not subtracted above"
            )
        out("  (not included: starting Ray and each trial's worker process, a few seconds each)")
    for note in notes:
        out(f"note: {note}")
    return 0
