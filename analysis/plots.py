"""Figures for a paper, drawn from the analysis tables.

Every function takes DataFrames made by analysis.breakdown / equivalence / icl /
representations and returns a :class:`matplotlib.figure.Figure`.  Figures are built
without pyplot (no global state, no window, nothing to close); save them with
``fig.savefig(path)``.
"""

from __future__ import annotations

import textwrap
from typing import Any, Iterable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from analysis.load import axis_order, cell_axes, cell_label, fmt

ID_SHADE = "#e8f1e4"  # background of the in-distribution range
MISSING = "#d9d9d9"  # cells without a value
LABELS = {
    "exact_match": "exact match",
    "digit_acc": "digit accuracy",
    "equivalence": "equivalence rate",
    "equivalence_of_wrong": "equivalence share of wrong",
    "chance": "chance (mod p)",
    "nmse": "normalized error",
    "model.size": "model size",
    "task.digits": "training digits",
    "task.mix_weight": "mixture weight",
    "n_context": "in-context examples k",
    "length": "operand length",
    "boundary": "boundary",
    "ood_score": "mean OOD score",
    "id_score": "ID score",
    "structure": "units-digit probe accuracy",
    "repr_equivalence": "representation equivalence",
}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _title(fig: Figure, text: str, fontsize: float = 11.0) -> None:
    """A figure title wrapped to the figure's width, so that it is never cut off."""
    chars = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))  # ~0.55 em per character
    fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def _panels(
    n: int, ncols: int = 3, width: float = 4.2, height: float = 3.3, sharey: bool = True
) -> tuple[Figure, list[Any]]:
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


def drawn_texts(fig: Figure, dpi: float = 110.0) -> list[tuple[str, Any]]:
    """Every text drawn when ``fig`` is saved at ``dpi`` (as ``savefig`` draws it, layout engine
    included): (text, its extent in pixels).  Recorded from the renderer, so only what is
    drawn counts (tick labels outside the view limits, empty and hidden texts do not)."""
    old = fig.dpi
    try:
        fig.set_dpi(dpi)
        renderer = FigureCanvasAgg(fig).get_renderer()
        seen: dict[int, Any] = {}
        draw_text = renderer.draw_text

        def record(gc, x, y, s, prop, angle, ismath=False, mtext=None):  # noqa: ANN001
            if mtext is not None and s.strip():
                seen.setdefault(id(mtext), mtext)
            return draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

        renderer.draw_text = record
        fig.draw(renderer)
        return [(t.get_text(), t.get_window_extent(renderer)) for t in seen.values()]
    finally:
        fig.set_dpi(old)


def clipped_texts(
    fig: Figure, dpi: float = 110.0, tolerance: float = 1.0, texts: list[tuple[str, Any]] | None = None
) -> list[str]:
    """The texts of ``fig`` that reach outside the figure when it is saved at ``dpi``
    (cut off in the PNG), each as ``'text' (x0..x1, y0..y1 px of W x H)``; [] when all fit.
    ``tolerance``: pixels a text may overhang (antialiasing); ``texts``: what
    :func:`drawn_texts` returned for ``fig`` at ``dpi`` (drawn again when None)."""
    width, height = fig.get_figwidth() * dpi, fig.get_figheight() * dpi
    out = []
    for text, box in drawn_texts(fig, dpi) if texts is None else texts:
        if box.x0 < -tolerance or box.y0 < -tolerance or box.x1 > width + tolerance or box.y1 > height + tolerance:
            out.append(
                f"{text!r} ({box.x0:.0f}..{box.x1:.0f}, {box.y0:.0f}..{box.y1:.0f} px of {width:.0f} x {height:.0f})"
            )
    return out


def _step_axis(ax: Any) -> None:
    """Training steps on the x axis: integer ticks, written out (4000, not 4e3 or an offset)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    plain = ScalarFormatter(useOffset=False)
    plain.set_scientific(False)
    ax.xaxis.set_major_formatter(plain)


def _empty(message: str) -> Figure:
    fig = Figure(figsize=(5, 2))
    fig.text(0.5, 0.5, message, ha="center", va="center")
    return fig


# --------------------------------------------------------------------------- arithmetic / breakdown


def text_color(face: tuple[float, ...] | None) -> str:
    """Black or white, whichever reads on a square of colour ``face`` (RGBA; None: the grey
    of a missing square): by the square's luminance (ITU-R BT.601 weights), so that it
    holds for any colour map, reversed ones included."""
    if face is None:
        return "black"
    r, g, b = face[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def phase_diagram(
    cells: pd.DataFrame,
    x: str,
    y: str | None,
    value: str = "boundary",
    facet: str | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    limits: tuple[float, float] | None = None,
    name: str | None = None,
    bar_label: str | None = None,
) -> Figure:
    """A heat map of ``value`` over two grid axes (one row when ``y`` is None), one
    panel per value of ``facet``.

    ``cells`` is a :func:`analysis.breakdown.breakdown` table for one shift axis.
    With value="boundary", cells that never break are drawn one step past the last
    OOD point evaluated (labelled ">x"), cells without a trial or without ID skill are
    grey.  Several rows per square (other axes varying) are combined by their median,
    and the title says so.  ``limits``: the colour range (default: the data's).
    ``name``: the value's name in the title (default: its label); ``bar_label``: what the
    colour encodes (default: the value's label; for the boundary, with the shift axis it is
    measured along).
    """
    if cells.empty:
        return _empty("no cells")
    if "shift" in cells and cells["shift"].nunique() > 1:
        raise ValueError(f"one shift axis at a time; filter cells['shift'] to one of {sorted(cells['shift'].unique())}")
    frame = cells.copy()
    shift = cells["shift"].iloc[0] if "shift" in cells else ""
    along = f" along {_label(shift)}" if value == "boundary" and shift else ""
    title = title or f"{name or _label(value)}{along} by {_label(x)}" + (f" and {_label(y)}" if y else "")
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
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if text[i][j]:
                    face = image.cmap(image.norm(grid[i, j])) if np.isfinite(grid[i, j]) else None
                    ax.text(j, i, text[i][j], ha="center", va="center", fontsize=9, color=text_color(face))
        ax.set_xticks(range(len(xs)), [fmt(v) for v in xs])
        ax.set_yticks(range(len(ys)), [fmt(v) for v in ys])
        ax.set_xlabel(_label(x))
        if y != "_row":
            ax.set_ylabel(_label(y))
        if facet:
            ax.set_title(f"{_label(facet)} = {fmt(fv)}")
    if bar_label is None:  # the boundary is a point on the shift axis; any other value is its own unit
        bar_label = f"{_label(value)} ({_label(shift)})" if value == "boundary" and shift else _label(value)
    assert image is not None  # cells is not empty, so every panel drew its squares
    bar = fig.colorbar(image, ax=axes, label=bar_label, shrink=0.9)
    if value == "boundary":
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    _title(fig, title + (" (median over other axes)" if pooled else ""))
    return fig


def length_curves(
    curve: pd.DataFrame,
    metric: str = "exact_match",
    hue: str | None = None,
    facet: str | None = None,
    cells: pd.DataFrame | None = None,
    max_panels: int = 9,
) -> Figure:
    """Score against operand length: the best trial (line) and the middle half of the
    cell's trials (band), the ID range shaded; one panel per ``facet`` value, one
    line per ``hue`` value (or per cell).  With a breakdown table ``cells``, each
    line's boundary is marked with a cross.

    ``curve`` is a :func:`analysis.breakdown.curves` frame (one shift axis).
    """
    if curve.empty:
        return _empty("no evaluations")
    if facet is None and _id_ranges_differ(curve):  # shade each cell's own ID range
        facet, hue = "cell", None
    groups = _groups(curve, facet)[:max_panels]
    fig, axes = _panels(len(groups), width=4.2 if len(groups) > 1 else 6.4)
    for ax, (fv, part) in zip(axes, groups):
        id_x = part.loc[part["split"] == "id", "x"]
        if len(id_x):
            edge = id_x.max() + 0.5
            ax.axvspan(part["x"].min() - 0.5, edge, color=ID_SHADE, zorder=0)
            ax.text(
                edge - 0.1,
                0.5,
                "ID",
                ha="right",
                va="center",
                fontsize=8,
                color="grey",
                transform=ax.get_xaxis_transform(),
            )
            ax.text(
                edge + 0.1,
                0.5,
                "OOD",
                ha="left",
                va="center",
                fontsize=8,
                color="grey",
                transform=ax.get_xaxis_transform(),
            )
        lines = _groups(part, hue) if hue else [(c, part[part["cell"] == c]) for c in dict.fromkeys(part["cell"])]
        for i, (hv, line) in enumerate(lines):
            line = line.sort_values("x")
            colour = f"C{i % 10}"
            name: str | None = f"{_label(hue)} = {fmt(hv)}" if hue else (str(hv) or "all trials")
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
        if facet == "cell":
            ax.set_title(str(fv), fontsize=9)
        elif facet:
            ax.set_title(f"{_label(facet)} = {fmt(fv)}")
        ax.set_ylim(-0.03, 1.05) if metric != "nmse" else None
        ax.grid(alpha=0.3)
        if facet != "cell" or len(lines) > 1:
            ax.legend(fontsize=7, loc="best")
    _title(fig, f"{_label(metric)} against length (line: best trial, band: 25-75% of trials)")
    return fig


def _id_ranges_differ(curve: pd.DataFrame) -> bool:
    """Do the cells of a curves frame have different ID ranges (e.g. trained on 2 vs 3 digits)?"""
    edges = curve[curve["split"] == "id"].groupby("cell")["x"].max()
    return edges.nunique() > 1


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
            values = part[metric]
            drawn = ax.bar(
                pos + (i - (len(bars) - 1) / 2) * width,
                values.fillna(0),
                width,
                label=_label(metric),
                color=f"C{i}",
                hatch="//" if metric == "chance" else None,
                edgecolor="white",
            )
            ax.bar_label(drawn, labels=[_bar_text(v) for v in values], fontsize=6, padding=1, rotation=90)
        ax.set_xticks(pos, [fmt(v) for v in part["x"]])
        ax.set_xlabel("OOD " + _label("length"))
        ax.set_ylim(0, 1.25)  # room above a full bar for its label
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
        ax.set_title(cell, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(bars), fontsize=8)
    _title(fig, "beyond the boundary: exact match vs equivalence (best trial per cell)")
    return fig


def _short_cell(cell: str) -> str:
    """``model.size=nano|task.digits=3`` -> ``size=nano`` over ``digits=3`` (a tick label)."""
    return "\n".join(_short_axis(part) for part in cell.split("|")) if cell else "all"


def _short_axis(part: str) -> str:
    """``task.mix_weight=0.5`` -> ``mix_weight=0.5``."""
    key, _, value = part.partition("=")
    return f"{key.rsplit('.', 1)[-1]}={value}"


def _bar_text(value: float) -> str:
    """A bar's label: its value in percent (a zero bar says 0), n/a when missing."""
    return "n/a" if pd.isna(value) else f"{100 * value:.0f}"


def finding_bars(findings: pd.DataFrame) -> Figure:
    """The finding of an arithmetic study at a glance: per cell the ID exact match, the
    exact match from the boundary on and the equivalence rate there, as labelled bars;
    medians over the cell's seeds, where its seeds break under its name.  ``findings`` is an
    :func:`analysis.summary.arithmetic_findings` frame."""
    findings = findings[findings["verdict"] != "no_trial"]
    if findings.empty:
        return _empty("no cells with evaluations")
    bars = [
        ("id_score", "ID exact match", "C2"),
        ("exact_match_beyond", "exact match from the boundary on", "C3"),
        ("equivalence_beyond", "equivalence rate there", "C0"),
    ]
    n = len(findings)
    fig = Figure(figsize=(max(6.4, 1.6 * n + 2.0), 4.0), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(bars)
    pos = np.arange(n)
    for i, (column, label, colour) in enumerate(bars):
        values = findings[column]
        drawn = ax.bar(pos + (i - 1) * width, values.fillna(0), width, label=label, color=colour)
        ax.bar_label(drawn, labels=[_bar_text(v) for v in values], fontsize=8, padding=1)
    names = []
    for row in findings.to_dict("records"):
        names.append(
            f"{_short_cell(row['cell'])}\n{row['seeds'] if row['verdict'] in ('breaks', 'holds') else 'no ID skill'}"
        )
    ax.set_xticks(pos, names, fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=len(bars), fontsize=8)
    _title(
        fig,
        "per cell: learned in distribution, lost beyond the boundary, and what the answers are there "
        "(medians over seeds, bars in %)",
    )
    return fig


def gap_bars(findings: pd.DataFrame) -> Figure:
    """The finding of an in-context study at a glance: per cell the model-selection gap
    (excess normalized error over the best baseline) with ID and with OOD numbers of
    examples, as labelled bars.  ``findings`` is an :func:`analysis.summary.icl_findings` frame."""
    if findings.empty:
        return _empty("no unshifted in-context evaluations")
    n = len(findings)
    fig = Figure(figsize=(max(6.4, 1.4 * n + 2.0), 4.0), layout="constrained")
    ax = fig.subplots()
    pos = np.arange(n)
    for i, (column, label) in enumerate((("gap_id", "ID k"), ("gap_ood", "OOD k"))):
        values = findings[column]
        drawn = ax.bar(pos + (i - 0.5) * 0.4, values.fillna(0), 0.4, label=label, color=f"C{i}")
        ax.bar_label(drawn, labels=["n/a" if pd.isna(v) else f"{v:+.2f}" for v in values], fontsize=8, padding=1)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(pos, [_short_cell(c) for c in findings["cell"]], fontsize=8)
    low, high = (
        float(np.nanmin(findings[["gap_id", "gap_ood"]].to_numpy(float))),
        float(np.nanmax(findings[["gap_id", "gap_ood"]].to_numpy(float))),
    )
    span = max(high - min(low, 0.0), 0.05)
    ax.set_ylim(min(low, 0.0) - 0.15 * span, max(high, 0.0) + 0.2 * span)
    ax.set_ylabel("excess normalized error")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    _title(fig, "per cell: the model's error minus the best baseline's (0 = as good as the best baseline)")
    return fig


# --------------------------------------------------------------------------- in-context learning


def nmse_curves(
    curves: pd.DataFrame, shift: str = "none", shift_value: float | None = None, max_panels: int = 6
) -> Figure:
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
                ax.plot(
                    line["n_context"],
                    line["best"],
                    "--",
                    color=f"C{i % 9 + 1}",
                    lw=1.2,
                    label=metric.removeprefix("nmse_"),
                )
        ax.set_title(cell, fontsize=9)
        ax.set_xlabel(_label("n_context"))
        ax.set_ylabel(_label("nmse"))
        ax.set_ylim(0, _nmse_top(part.loc[part["metric"] == "nmse", "q75"]))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    what = "" if shift == "none" else f", {shift} = {fmt(rows['shift_value'].iloc[0])}"
    _title(fig, f"normalized error against k{what} (model: best trial; dashed: baselines)")
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
            ax.plot(
                line["shift_value"],
                line["best"],
                "--",
                color="grey",
                lw=1,
                marker=["s", "^", "v", "d", "*"][j % 5],
                ms=4,
                label=metric.removeprefix("nmse_"),
            )
        ax.set_xlabel(shift)
        ax.set_ylabel(_label("nmse"))
        ax.set_ylim(0, _nmse_top(model["best"]))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _title(fig, "error along the shift axes (best trial; filled: ID, open: OOD; dashed: baselines)", fontsize=10)
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
    ax.set_title("model-selection gap\n(solid: vs best baseline, dashed: vs specialist)", fontsize=10)
    return fig


def mixture_effect_curves(mix: pd.DataFrame, mix_axis: str = "task.mix_weight", max_panels: int = 9) -> Figure:
    """Error against the mixture weight: one panel per shift axis (and per value of
    the other cell axes), one line per shift value, best trial per cell.  ``mix`` is
    an :func:`analysis.icl.mixture_effect` frame."""
    if mix.empty:
        return _empty("no mixture axis")
    others = [c for c in mix.columns[1 : list(mix.columns).index(mix_axis)]]
    mix = mix.assign(
        _group=[" | ".join(f"{fmt(r[c])}" for c in others) for r in mix[others].to_dict("records")] if others else ""
    )
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
    _title(fig, "error against the pretraining mixture weight (best trial per cell)")
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
            ax.plot(
                line["shift_value"],
                line["median"],
                "--",
                color=["black", "grey", "tan"][j % 3],
                lw=1.2,
                label=metric.removeprefix("nmse_"),
            )
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
        ax.set_title(f"step {int(step)}")
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    axes[-1].legend(fontsize=6, title="label", title_fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    trial = points["trial_id"].iloc[0]
    _title(
        fig, f"hidden state of the units digit, trial {trial}: first two principal components (dots: ID, crosses: OOD)"
    )
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
    _step_axis(ax)
    ax.set_ylabel("between-label share of variance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(
        "how cleanly the hidden states separate the units digit,\nover training (1 = one tight cluster per digit)",
        fontsize=10,
    )
    return fig


def structure_curves(
    curves: pd.DataFrame, score: str = "structure score", max_panels: int = 6, max_lines: int = 8
) -> Figure:
    """The ID structure score (solid) next to the ID accuracy (dashed) over training, one
    panel per cell, one colour per trial (the line styles in a legend under the panels).
    ``curves`` is an
    :func:`analysis.representations.structure_vs_accuracy` frame."""
    if curves.empty or curves["structure"].isna().all():
        return _empty("no structure scores")
    by = cell_axes(curves)  # panels: cells without the seed axes, so a panel holds a cell's seeds
    group = pd.Series([cell_label(r, by) for r in curves[by].to_dict("records")] if by else "", index=curves.index)
    cells = list(dict.fromkeys(group))[:max_panels]
    fig, axes = _panels(len(cells), ncols=3, width=4.4, height=3.3)
    for ax, cell in zip(axes, cells):
        part = curves[group == cell]
        for i, (trial, line) in enumerate(list(part.groupby("trial_id", sort=True))[:max_lines]):
            line = line.sort_values("step")
            s, a = line.dropna(subset=["structure"]), line.dropna(subset=["accuracy"])
            ax.plot(s["step"], s["structure"], "-o", ms=3, color=f"C{i % 10}", label=str(trial))
            ax.plot(a["step"], a["accuracy"], "--", color=f"C{i % 10}", alpha=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(cell or "all trials", fontsize=9)
        ax.set_xlabel("training step")
        _step_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, title="trial", title_fontsize=6)
    axes[0].set_ylabel("accuracy")
    styles = [
        Line2D([], [], color="grey", ls="-", marker="o", ms=3, label=f"{score} (held-out ID inputs)"),
        Line2D([], [], color="grey", ls="--", label="ID exact match"),
    ]
    fig.legend(handles=styles, loc="outside lower center", ncols=2, fontsize=8)
    _title(fig, f"does structure come first? {score} vs ID accuracy over training")
    return fig


def structure_lengths(table: pd.DataFrame, score: str = "structure score", max_lines: int = 10) -> Figure:
    """A structure score against the operand length at the end of training: median over each
    cell's trials with the interquartile band, the ID points (the training length) circled.
    ``table`` is an :func:`analysis.representations.structure_by_length` frame."""
    if table.empty:
        return _empty("no structure scores")
    fig, axes = _panels(1, width=6.0, height=3.8)
    ax = axes[0]
    circled = False  # the x label explains the circles only where some are drawn
    for i, (cell, line) in enumerate(list(table.groupby("cell", sort=False))[:max_lines]):
        line = line.sort_values("length")
        ax.plot(line["length"], line["median"], "-o", ms=4, color=f"C{i % 10}", label=str(cell) or "all")
        ax.fill_between(line["length"], line["q25"], line["q75"], color=f"C{i % 10}", alpha=0.15)
        ids = line[line["split"] == "id"]
        ax.scatter(ids["length"], ids["median"], s=60, facecolors="none", edgecolors=f"C{i % 10}")
        circled = circled or len(ids) > 0
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("operand length" + (" (circled: the training length)" if circled else ""))
    ax.set_ylabel(score)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{score} against operand length (final step)")
    return fig


def coefficient_curves(curves: pd.DataFrame, max_panels: int = 6) -> Figure:
    """The in-context coefficient probe's R^2 against k, one panel per cell, one line per
    shift condition.  ``curves`` is an :func:`analysis.representations.coefficient_curves` frame."""
    if curves.empty:
        return _empty("no coefficient probes")
    cells = list(dict.fromkeys(curves["cell"].fillna("")))[:max_panels]
    fig, axes = _panels(len(cells), ncols=3, width=4.4, height=3.3)
    for ax, cell in zip(axes, cells):
        part = curves[curves["cell"].fillna("") == cell]
        for i, ((shift, value), line) in enumerate(part.groupby(["shift", "shift_value"], sort=True, dropna=False)):
            line = line.sort_values("k")
            name = "ID" if shift == "none" else f"{shift}={fmt(value)}"
            style = "-" if (line["split"] == "id").all() else "--"
            ax.plot(line["k"], line["median"], style, color=f"C{i % 10}", label=name)
        ax.set_ylim(-0.5, 1.02)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(cell or "all trials", fontsize=9)
        ax.set_xlabel("in-context examples k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("R^2 of the coefficients (dashed: OOD)")
    fig.suptitle("linear probe from the state at x_k to the prompt's coefficients")
    return fig


def attention_heatmap(table: pd.DataFrame, title: str = "attention alignment") -> Figure:
    """A heat map per (split, operand length): rows block x head, columns answer digit i,
    colour the share of attention from the position that predicts digit i onto the operand
    digits of place i (0..1).  ``table`` is an :func:`analysis.representations.attention_map`
    frame of one trial."""
    if table.empty:
        return _empty("no attention scores")
    panels = list(table.groupby(["split", "length"], sort=True))
    fig, axes = _panels(len(panels), ncols=3, width=3.6, height=3.6, sharey=False)
    image = None
    for ax, ((split, length), part) in zip(axes, panels):
        grid = part.pivot_table(index=["layer", "head"], columns="position", values="value", aggfunc="mean")
        image = ax.imshow(grid.to_numpy(), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [str(int(p)) for p in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"L{int(l)} H{int(h)}" for l, h in grid.index], fontsize=7)
        for (r, c), v in np.ndenumerate(grid.to_numpy()):
            if np.isfinite(v):
                ax.text(
                    c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color=text_color(image.cmap(image.norm(v)))
                )
        ax.set_xlabel("answer digit i (0 = units)")
        ax.set_title(f"{split.upper()}, operand length {int(length)}", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="share of attention on the operand digits of place i")
    _title(fig, title)
    return fig


# --------------------------------------------------------------------------- threshold search


def _axis_units(ax: Any, which: str, values: list[str] | None) -> None:
    """An axis in the search's units: the values of an ordered list at their indices, else
    numbers written out (4000, not 4e3 or an offset)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    if values is not None:
        (ax.set_xticks if which == "x" else ax.set_yticks)(range(len(values)), values)
        if which == "x" and max(len(v) for v in values) * len(values) > 24:
            ax.tick_params(axis="x", labelrotation=30)
        return
    plain = ScalarFormatter(useOffset=False)
    plain.set_scientific(False)
    axis.set_major_formatter(plain)


def threshold_curves(
    curves: pd.DataFrame,
    seeds: pd.DataFrame,
    table: pd.DataFrame,
    values: list[str] | None = None,
    ncols: int = 3,
    title: str | None = None,
) -> Figure:
    """P(success) along the search axis, one panel per cell of a threshold search: the fitted
    curve (``curves``: cell, position, p_success, :func:`analysis.thresholds.curves`), each
    seed's outcome as a dot at 1 (success) or 0 (failure), jittered so that a point's seeds
    do not hide each other (``seeds``: cell, position, success), the threshold estimate as a
    line and its credible interval as a band, and the target probability dotted (``table``:
    the ``thresholds`` rows: cell, axis, criterion, target, estimate, low, high, level,
    stopped).  ``values``: the tick labels of an ordered list axis (positions are indices)."""
    if table.empty:
        return _empty("no threshold search")
    first = table.iloc[0]
    cells = list(table["cell"])
    fig, axes = _panels(len(cells), ncols=ncols, width=4.4 if len(cells) > 1 else 6.4, height=3.2, sharey=True)
    jitter = np.random.default_rng(0)
    for ax, row in zip(axes, table.to_dict("records")):
        line = curves[curves["cell"] == row["cell"]] if len(curves) else curves
        dots = seeds[seeds["cell"] == row["cell"]] if len(seeds) else seeds
        ax.axvspan(row["low"], row["high"], color="C1", alpha=0.18, lw=0)
        ax.axvline(row["estimate"], color="C1", lw=1.6)
        ax.axhline(row["target"], color="0.45", ls=":", lw=1)
        if len(line):
            ax.plot(line["position"], line["p_success"], color="C0", lw=1.8)
        if len(dots):
            ok = dots["success"].to_numpy(bool)
            y = np.where(ok, 1.0 - jitter.uniform(0, 0.06, len(dots)), jitter.uniform(0, 0.06, len(dots)))
            ax.scatter(dots["position"], y, s=14, c=np.where(ok, "C2", "C3"), alpha=0.75, lw=0, zorder=3)
        ends = [*line["position"], *dots["position"], row["low"], row["high"]]
        pad = 0.02 * ((max(ends) - min(ends)) or 1.0)
        ax.set_xlim(min(ends) - pad, max(ends) + pad)
        ax.set_ylim(-0.08, 1.08)
        _axis_units(ax, "x", values)
        ax.set_xlabel(_label(str(row["axis"])))
        ax.grid(alpha=0.3)
        if row["cell"] not in ("all", ""):
            ax.set_title(textwrap.fill(str(row["cell"]).replace("|", " | "), 48), fontsize=8)
    for ax in axes[:: min(ncols, len(cells))]:
        ax.set_ylabel(f"P({first['criterion']})")
    handles = [
        Line2D([], [], color="C0", lw=1.8, label="fitted P(success)"),
        Line2D([], [], ls="", marker="o", color="C2", label="seed succeeded"),
        Line2D([], [], ls="", marker="o", color="C3", label="seed failed"),
        Line2D([], [], color="C1", lw=1.6, label="threshold"),
        Line2D([], [], color="C1", lw=6, alpha=0.3, label=f"{100 * first['level']:.0f}% interval"),
        Line2D([], [], color="0.45", ls=":", label=f"target P = {first['target']:g}"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    _title(
        fig,
        title
        or f"P({first['criterion']}) along {first['axis']} per cell: the searcher's fit, each "
        f"seed's outcome, the threshold where P = {first['target']:g} and its interval",
    )
    return fig


def threshold_phase(
    cells: pd.DataFrame, x: str, hue: str | None = None, facet: str | None = None, values: list[str] | None = None
) -> Figure:
    """The threshold against the other grid axes: the estimate per cell along ``x`` with its
    credible interval as an error bar, one line per value of ``hue``, one panel per value of
    ``facet``; hollow markers where the search stopped short of its tolerance (budget) or
    is still searching.  ``cells``: :func:`analysis.thresholds.cell_axes`'s frame.
    ``values``: the tick labels of an ordered list axis (the threshold in index units)."""
    if cells.empty:
        return _empty("no cells")
    first = cells.iloc[0]
    numeric = pd.api.types.is_numeric_dtype(cells[x])
    order = axis_order(x, cells[x])
    panels = _groups(cells, facet)
    fig, axes = _panels(len(panels), ncols=3, width=4.6 if len(panels) > 1 else 6.4, height=3.6, sharey=True)
    for ax, (fv, part) in zip(axes, panels):
        lines = _groups(part, hue)
        for i, (hv, line) in enumerate(lines):
            line = line.assign(_x=line[x].map(lambda v: v if numeric else order.index(v))).sort_values("_x")
            color = f"C{i % 10}"
            ax.errorbar(
                line["_x"],
                line["estimate"],
                yerr=[line["estimate"] - line["low"], line["high"] - line["estimate"]],
                color=color,
                lw=1.4,
                capsize=3,
                label=None if hv is None or hue is None else f"{_label(hue)} = {fmt(hv)}",
            )
            done = (line["stopped"] == "converged").to_numpy()
            ax.scatter(
                line["_x"],
                line["estimate"],
                s=36,
                zorder=3,
                color=color,
                facecolors=np.where(done, color, "white").tolist(),
                edgecolors=color,
            )
        if not numeric:
            ax.set_xticks(range(len(order)), [fmt(v) for v in order])
        else:
            _axis_units(ax, "x", None)
            if len(order) <= 10:  # few cells: each at its own tick
                ax.set_xticks([float(v) for v in order], [fmt(v) for v in order])
        _axis_units(ax, "y", values)
        ax.set_xlabel(_label(x))
        ax.grid(alpha=0.3)
        if facet:
            ax.set_title(f"{_label(facet)} = {fmt(fv)}", fontsize=9)
        if hue:
            ax.legend(fontsize=7)
    axes[0].set_ylabel(f"threshold of {_label(str(first['axis']))}")
    _title(
        fig,
        f"threshold of {first['axis']} where P({first['criterion']}) = {first['target']:g}, by {_label(x)}"
        + (f" and {_label(hue)}" if hue else "")
        + f" ({100 * first['level']:.0f}% intervals; hollow: not converged)",
    )
    return fig
