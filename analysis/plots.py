"""Figures for a paper, drawn from the analysis tables.

Every function takes DataFrames made by analysis.breakdown / equivalence / icl /
representations and returns a :class:`matplotlib.figure.Figure`.  Figures are built
without pyplot (no global state, no window, nothing to close); save them with
``fig.savefig(path)``.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.load import axis_order, fmt

ID_SHADE = "#e8f1e4"  # background of the in-distribution range
MISSING = "#d9d9d9"  # cells without a value
LABELS = {
    "exact_match": "exact match", "digit_acc": "digit accuracy", "equivalence": "equivalence rate",
    "equivalence_of_wrong": "equivalence share of wrong", "chance": "chance (mod p)", "nmse": "normalized error",
    "model.size": "model size", "task.digits": "training digits", "task.mix_weight": "mixture weight",
    "n_context": "in-context examples k", "length": "operand length", "boundary": "boundary",
    "ood_score": "mean OOD score", "id_score": "ID score",
}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _panels(n: int, ncols: int = 3, width: float = 4.2, height: float = 3.3,
            sharey: bool = True) -> tuple[Figure, list[Any]]:
    n = max(n, 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _groups(frame: pd.DataFrame, column: str | None) -> list[tuple[Any, pd.DataFrame]]:
    """(value, rows) per value of ``column`` in natural order; one group when None."""
    if column is None or column not in frame:
        return [(None, frame)]
    return [(v, frame[frame[column] == v]) for v in axis_order(column, frame[column])]


def _empty(message: str) -> Figure:
    fig = Figure(figsize=(5, 2))
    fig.text(0.5, 0.5, message, ha="center", va="center")
    return fig


# --------------------------------------------------------------------------- arithmetic / breakdown


def phase_diagram(cells: pd.DataFrame, x: str, y: str | None, value: str = "boundary", facet: str | None = None,
                  title: str | None = None, cmap: str = "viridis",
                  limits: tuple[float, float] | None = None) -> Figure:
    """A heat map of ``value`` over two grid axes (one row when ``y`` is None), one
    panel per value of ``facet``.

    ``cells`` is a :func:`analysis.breakdown.breakdown` table for one shift axis.
    With value="boundary", cells that never break are drawn one step past the last
    OOD point evaluated (labelled ">x"), cells without a trial or without ID skill are
    grey.  Several rows per square (other axes varying) are combined by their median,
    and the title says so.  ``limits``: the colour range (default: the data's).
    """
    if cells.empty:
        return _empty("no cells")
    if "shift" in cells and cells["shift"].nunique() > 1:
        raise ValueError(f"one shift axis at a time; filter cells['shift'] to one of {sorted(cells['shift'].unique())}")
    frame = cells.copy()
    title = title or f"{_label(value)} by {_label(x)}" + (f" and {_label(y)}" if y else "")
    if y is None:
        frame["_row"] = ""
        y = "_row"
    label = frame[value].map(lambda v: "" if pd.isna(v) else (fmt(v) if value == "boundary" else f"{v:.2f}"))
    if value == "boundary" and "verdict" in frame:
        holds = frame["verdict"] == "holds"
        frame.loc[holds, value] = frame.loc[holds, "x_max"] + 1
        label[holds] = [f">{fmt(v)}" for v in frame.loc[holds, "x_max"]]
        label[frame["verdict"] == "no_trial"] = "no trial"
        label[frame["verdict"] == "no_id"] = "no ID"
    frame["_label"] = label
    keys = [x, y] + ([facet] if facet else [])
    pooled = frame.groupby(keys, dropna=False)[value].count().gt(1).any()
    finite = frame[value].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    vmin, vmax = limits or ((finite.min(), finite.max()) if len(finite) else (0.0, 1.0))
    fig, axes = _panels(len(_groups(frame, facet)), ncols=3, width=4.0, height=3.4, sharey=False)
    xs, ys = axis_order(x, frame[x]), axis_order(y, frame[y])
    image = None
    for ax, (fv, part) in zip(axes, _groups(frame, facet)):
        grid = np.full((len(ys), len(xs)), np.nan)
        text = [["" for _ in xs] for _ in ys]
        for (xv, yv), g in part.groupby([x, y], dropna=True):
            i, j = ys.index(yv), xs.index(xv)
            grid[i, j] = np.nanmedian(g[value].to_numpy(float)) if g[value].notna().any() else np.nan
            if len(g) == 1:
                text[i][j] = g["_label"].iloc[0]
            elif np.isfinite(grid[i, j]):
                text[i][j] = fmt(round(grid[i, j], 2))
        ax.set_facecolor(MISSING)
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                          aspect="auto")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if text[i][j]:
                    bright = np.isfinite(grid[i, j]) and (grid[i, j] - vmin) / max(vmax - vmin, 1e-12) > 0.6
                    ax.text(j, i, text[i][j], ha="center", va="center", fontsize=9,
                            color="black" if bright or not np.isfinite(grid[i, j]) else "white")
        ax.set_xticks(range(len(xs)), [fmt(v) for v in xs])
        ax.set_yticks(range(len(ys)), [fmt(v) for v in ys])
        ax.set_xlabel(_label(x))
        if y != "_row":
            ax.set_ylabel(_label(y))
        if facet:
            ax.set_title(f"{_label(facet)} = {fmt(fv)}")
    shift = cells["shift"].iloc[0] if "shift" in cells else ""
    bar = fig.colorbar(image, ax=axes, label=f"{_label(value)} ({_label(shift)})" if shift else _label(value),
                       shrink=0.9)
    if value == "boundary":
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    fig.suptitle(title + (" (median over other axes)" if pooled else ""))
    return fig


def length_curves(curve: pd.DataFrame, metric: str = "exact_match", hue: str | None = None,
                  facet: str | None = None, cells: pd.DataFrame | None = None, max_panels: int = 9) -> Figure:
    """Score against operand length: the best trial (line) and the middle half of the
    cell's trials (band), the ID range shaded; one panel per ``facet`` value, one
    line per ``hue`` value (or per cell).  With a breakdown table ``cells``, each
    line's boundary is marked with a cross.

    ``curve`` is a :func:`analysis.breakdown.curves` frame (one shift axis).
    """
    if curve.empty:
        return _empty("no evaluations")
    groups = _groups(curve, facet)[:max_panels]
    fig, axes = _panels(len(groups))
    for ax, (fv, part) in zip(axes, groups):
        id_x = part.loc[part["split"] == "id", "x"]
        if len(id_x):
            edge = id_x.max() + 0.5
            ax.axvspan(part["x"].min() - 0.5, edge, color=ID_SHADE, zorder=0)
            ax.text(edge - 0.1, 0.5, "ID", ha="right", va="center", fontsize=8, color="grey",
                    transform=ax.get_xaxis_transform())
            ax.text(edge + 0.1, 0.5, "OOD", ha="left", va="center", fontsize=8, color="grey",
                    transform=ax.get_xaxis_transform())
        lines = _groups(part, hue) if hue else [(c, part[part["cell"] == c]) for c in dict.fromkeys(part["cell"])]
        for i, (hv, line) in enumerate(lines):
            line = line.sort_values("x")
            colour = f"C{i % 10}"
            name = f"{_label(hue)} = {fmt(hv)}" if hue else (str(hv) or "all trials")
            for cell, one in line.groupby("cell", sort=False):
                ax.fill_between(one["x"], one["q25"], one["q75"], color=colour, alpha=0.18, linewidth=0)
                ax.plot(one["x"], one["best"], "-o", color=colour, ms=3.5, label=name)
                name = None  # one legend entry per hue
                if cells is not None:
                    hit = cells[(cells["cell"] == cell) & cells["boundary"].notna()]
                    for b in hit["boundary"]:
                        y = one.loc[one["x"] == b, "best"]
                        if len(y):
                            ax.plot([b], [y.iloc[0]], "x", color=colour, ms=9, mew=2)
        ax.set_xlabel(_label("length") if part["shift"].iloc[0] == "length" else _label(part["shift"].iloc[0]))
        ax.set_ylabel(_label(metric))
        if facet:
            ax.set_title(f"{_label(facet)} = {fmt(fv)}")
        ax.set_ylim(-0.03, 1.05) if metric != "nmse" else None
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{_label(metric)} against length (line: best trial, band: 25-75% of trials)")
    return fig


def equivalence_bars(table: pd.DataFrame, max_panels: int = 6) -> Figure:
    """Per cell and OOD length: exact match, equivalence rate, chance level (with a
    modulus) and the equivalence share of wrong answers, as grouped bars.

    ``table`` is an :func:`analysis.equivalence.equivalence_table` frame.
    """
    if table.empty:
        return _empty("no OOD evaluations")
    bars = [m for m in ("exact_match", "equivalence", "chance", "equivalence_of_wrong") if table[m].notna().any()]
    cells = list(dict.fromkeys(table["cell"]))[:max_panels]
    fig, axes = _panels(len(cells), width=4.6)
    width = 0.8 / len(bars)
    for ax, cell in zip(axes, cells):
        part = table[table["cell"] == cell].sort_values("x")
        pos = np.arange(len(part))
        for i, metric in enumerate(bars):
            ax.bar(pos + (i - (len(bars) - 1) / 2) * width, part[metric].fillna(0), width, label=_label(metric),
                   color=f"C{i}", hatch="//" if metric == "chance" else None, edgecolor="white")
        ax.set_xticks(pos, [fmt(v) for v in part["x"]])
        ax.set_xlabel("OOD " + _label("length"))
        ax.set_ylim(0, 1.05)
        ax.set_title(cell, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle("beyond the boundary: exact match vs equivalence (best trial per cell)")
    return fig


# --------------------------------------------------------------------------- in-context learning


def nmse_curves(curves: pd.DataFrame, shift: str = "none", shift_value: float | None = None,
                max_panels: int = 6) -> Figure:
    """Normalized error against k for the model (best trial, band: 25-75% of trials)
    and each baseline (dashed), one panel per cell; OOD k shaded off.

    ``curves`` is an :func:`analysis.icl.icl_curves` frame.
    """
    rows = curves[curves["shift"] == shift]
    if shift_value is not None:
        rows = rows[np.isclose(rows["shift_value"].astype(float), shift_value)]
    elif rows["shift_value"].notna().any():
        first = sorted(rows["shift_value"].dropna().unique())[0]
        rows = rows[rows["shift_value"] == first]
    if rows.empty:
        return _empty(f"no in-context rows with shift {shift}")
    cells = list(dict.fromkeys(rows["cell"]))[:max_panels]
    fig, axes = _panels(len(cells))
    for ax, cell in zip(axes, cells):
        part = rows[rows["cell"] == cell]
        ood = part.loc[part["split"] == "ood", "n_context"]
        if len(ood):
            ax.axvspan(ood.min() - 0.5, ood.max() + 0.5, color="#f3e3e3", zorder=0)
        for i, (metric, line) in enumerate(sorted(part.groupby("metric"), key=lambda kv: kv[0] != "nmse")):
            line = line.sort_values("n_context")
            if metric == "nmse":
                ax.fill_between(line["n_context"], line["q25"], line["q75"], color="C0", alpha=0.2, linewidth=0)
                ax.plot(line["n_context"], line["best"], "-", color="C0", lw=2, label="model")
            else:
                ax.plot(line["n_context"], line["best"], "--", color=f"C{i % 9 + 1}", lw=1.2,
                        label=metric.removeprefix("nmse_"))
        ax.set_title(cell, fontsize=9)
        ax.set_xlabel(_label("n_context"))
        ax.set_ylabel(_label("nmse"))
        ax.set_ylim(0, _nmse_top(part.loc[part["metric"] == "nmse", "q75"]))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    what = "" if shift == "none" else f", {shift} = {fmt(rows['shift_value'].iloc[0])}"
    fig.suptitle(f"normalized error against k{what} (model: best trial; dashed: baselines)")
    return fig


def _nmse_top(model: pd.Series) -> float:
    """The top of an error axis: the model's errors and the zero predictor (1.0) in
    view; baselines that blow up (averaging under large x_scale) leave the frame."""
    highest = float(np.nanmax(model.to_numpy(float))) if model.notna().any() else 1.0
    return max(1.2, 1.1 * highest)


def shift_error_curves(errors: pd.DataFrame, max_panels: int = 6) -> Figure:
    """The model's error along each shift axis (one panel per axis, one line per
    cell, best trial; ID points filled, OOD open) with the baselines dashed (mean
    over cells).  ``errors`` is an :func:`analysis.icl.shift_errors` frame."""
    rows = errors[errors["shift"] != "none"]
    if rows.empty:
        return _empty("no shifted evaluations")
    shifts = sorted(rows["shift"].unique())[:max_panels]
    fig, axes = _panels(len(shifts), width=6.5 if len(shifts) == 1 else 4.6, sharey=False)
    for ax, shift in zip(axes, shifts):
        part = rows[rows["shift"] == shift]
        model = part[part["metric"] == "nmse"]
        for i, (cell, line) in enumerate(model.groupby("cell", sort=False)):
            line = line.sort_values("shift_value")
            ax.plot(line["shift_value"], line["best"], "-", color=f"C{i % 10}", label=cell)
            for split, face in (("id", f"C{i % 10}"), ("ood", "white")):
                pts = line[line["split"] == split]
                ax.plot(pts["shift_value"], pts["best"], "o", mfc=face, mec=f"C{i % 10}", ms=5)
        base = part[part["metric"] != "nmse"].groupby(["metric", "shift_value"])["best"].mean().reset_index()
        for j, (metric, line) in enumerate(base.groupby("metric")):
            ax.plot(line["shift_value"], line["best"], "--", color="grey", lw=1,
                    marker=["s", "^", "v", "d", "*"][j % 5], ms=4, label=metric.removeprefix("nmse_"))
        ax.set_xlabel(shift)
        ax.set_ylabel(_label("nmse"))
        ax.set_ylim(0, _nmse_top(model["best"]))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("error along the shift axes\n(best trial; filled: ID, open: OOD; dashed: baselines)", fontsize=10)
    return fig


def selection_gap_curves(gap: pd.DataFrame, shift: str = "none", max_panels: int = 6) -> Figure:
    """The model-selection gap against k: excess error over the best baseline (solid)
    and over the best same-size specialist (dashed), one line per cell.  ``gap`` is an
    :func:`analysis.icl.selection_gap` frame."""
    rows = gap[gap["shift"] == shift]
    if rows.empty:
        return _empty(f"no rows with shift {shift}")
    fig, axes = _panels(1, width=6.0, height=4.0)
    ax = axes[0]
    for i, (cell, line) in enumerate(rows.groupby("cell", sort=False)):
        line = line.sort_values("n_context")
        ax.plot(line["n_context"], line["gap"], "-", color=f"C{i % 10}", label=cell)
        if line["gap_specialist"].notna().any():
            ax.plot(line["n_context"], line["gap_specialist"], "--", color=f"C{i % 10}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel(_label("n_context"))
    ax.set_ylabel("excess normalized error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("model-selection gap (solid: vs best baseline, dashed: vs specialist)")
    return fig


def mixture_effect_curves(mix: pd.DataFrame, mix_axis: str = "task.mix_weight", max_panels: int = 9) -> Figure:
    """Error against the mixture weight: one panel per shift axis (and per value of
    the other cell axes), one line per shift value, best trial per cell.  ``mix`` is
    an :func:`analysis.icl.mixture_effect` frame."""
    if mix.empty:
        return _empty("no mixture axis")
    others = [c for c in mix.columns[1:list(mix.columns).index(mix_axis)]]
    mix = mix.assign(_group=[" | ".join(f"{fmt(r[c])}" for c in others) for r in mix[others].to_dict("records")]
                     if others else "")
    shifts = sorted(mix["shift"].unique(), key=lambda s: (s != "none", s))
    panels = [(g, s) for g in dict.fromkeys(mix["_group"]) for s in shifts][:max_panels]
    fig, axes = _panels(len(panels), ncols=len(shifts), sharey=False)
    for ax, (group, shift) in zip(axes, panels):
        part = mix[(mix["_group"] == group) & (mix["shift"] == shift)]
        for i, ((value, split), line) in enumerate(part.groupby(["shift_value", "split"], dropna=False)):
            line = line.sort_values(mix_axis)
            name = f"unshifted, {split.upper()} k" if shift == "none" else f"{shift} = {fmt(value)}"
            ax.plot(line[mix_axis], line["best"], "-o", ms=4, color=f"C{i % 10}", label=name)
        ax.set_xlabel(_label(mix_axis))
        ax.set_ylabel(_label("nmse"))
        ax.set_title(f"{group} {shift}".strip(), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("error against the pretraining mixture weight (best trial per cell)")
    return fig


def nnz_profile_curves(profile: pd.DataFrame, mix_axis: str = "task.mix_weight") -> Figure:
    """Error against nnz (1: one-sparse .. d: dense prompts), one panel per k, one line
    per cell (median over its trials, band 25-75%), least squares and Lasso dashed
    (median over cells: the same prompt draws).  ``profile`` is an
    :func:`analysis.icl.nnz_profile` frame."""
    if profile.empty:
        return _empty("no nnz evaluations")
    ks = sorted(profile["n_context"].unique())
    fig, axes = _panels(len(ks), width=5.0, height=3.8, sharey=False)
    for ax, k in zip(axes, ks):
        part = profile[profile["n_context"] == k]
        model = part[part["metric"] == "nmse"]
        for i, (cell, line) in enumerate(model.groupby("cell", sort=False)):
            line = line.sort_values("shift_value")
            ax.fill_between(line["shift_value"], line["q25"], line["q75"], color=f"C{i % 10}", alpha=0.15, lw=0)
            ax.plot(line["shift_value"], line["median"], "-o", ms=4, color=f"C{i % 10}", label=cell)
        base = part[part["metric"] != "nmse"].groupby(["metric", "shift_value"])["median"].median().reset_index()
        for j, (metric, line) in enumerate(base.groupby("metric")):
            ax.plot(line["shift_value"], line["median"], "--", color=["black", "grey", "tan"][j % 3], lw=1.2,
                    label=metric.removeprefix("nmse_"))
        ax.set_xlabel("nnz (non-zero coefficients; d = dense)")
        ax.set_ylabel(_label("nmse"))
        ax.set_title(f"k = {k} in-context examples", fontsize=9)
        ax.set_ylim(0, _nmse_top(model["q75"]))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.suptitle("error along nnz, one-sparse to dense prompts (median over seeds; dashed: baselines)")
    return fig


# --------------------------------------------------------------------------- representations


def pca_scatter(points: pd.DataFrame, steps: Iterable[int] | None = None, max_panels: int = 4) -> Figure:
    """The 2-D PCA of the probed hidden state, one panel per step, coloured by the
    residue label (ID points filled, OOD points crosses).  ``points`` holds one
    trial's rows from :func:`analysis.load.points`."""
    if points.empty:
        return _empty("no representation points")
    all_steps = sorted(points["step"].unique())
    if steps is None:  # first, last and evenly spread in between
        idx = np.unique(np.linspace(0, len(all_steps) - 1, min(max_panels, len(all_steps))).round().astype(int))
        steps = [all_steps[i] for i in idx]
    steps = list(steps)
    labels = sorted(points["label"].unique(), key=lambda v: (len(str(v)), str(v)))
    colour = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    fig, axes = _panels(len(steps), ncols=4, width=3.4, height=3.3, sharey=False)
    for ax, step in zip(axes, steps):
        part = points[points["step"] == step]
        for label in labels:
            mine = part[part["label"] == label]
            idp, oodp = mine[mine["split"] != "ood"], mine[mine["split"] == "ood"]
            ax.scatter(idp["pc1"], idp["pc2"], s=12, color=colour[label], label=str(label))
            ax.scatter(oodp["pc1"], oodp["pc2"], s=14, color=colour[label], marker="x", linewidths=0.9)
        ax.set_title(f"step {step}")
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    axes[-1].legend(fontsize=6, title="label", title_fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    trial = points["trial_id"].iloc[0]
    fig.suptitle(f"units-digit state of trial {trial} (dots: ID, crosses: OOD)")
    return fig


def separation_curves(sep: pd.DataFrame, split: str = "all", max_lines: int = 10) -> Figure:
    """The cluster-separation R^2 (between-label share of the PCA variance) over
    training steps, one line per trial.  ``sep`` is an
    :func:`analysis.representations.separation` frame."""
    rows = sep[sep["split"] == split]
    if rows.empty:
        return _empty("no representation points")
    fig, axes = _panels(1, width=6.0, height=3.8)
    ax = axes[0]
    for i, (trial, line) in enumerate(list(rows.groupby("trial_id", sort=True))[:max_lines]):
        line = line.sort_values("step")
        ax.plot(line["step"], line["r2"], "-o", ms=3, color=f"C{i % 10}", label=str(trial))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("between-label share of variance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("blob -> rings -> clusters: label separation over training")
    return fig
