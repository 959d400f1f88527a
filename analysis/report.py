"""A self-contained HTML report of one study: ``oodstudy report --store URI --study NAME``.

The report directory holds ``index.html`` (figures embedded as base64 PNG, tables as
HTML; it opens in any browser without a server), every figure as a PNG and every
table as a CSV.  Sections appear only for what the study holds: arithmetic
(breakdown, phase diagrams, length curves, equivalence), in-context learning (error
over k with baselines, model-selection gap, shifts, mixture weight) and
representations (PCA over training, cluster separation).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis import breakdown as bd
from analysis import equivalence, icl, load, methods, plots, representations

# Preferred roles of grid axes in the phase diagrams: x, y, then panels.
X_AXES = ("model.size", "model.n_layer", "model.d_model", "model.pos_encoding")
Y_AXES = ("task.digits", "task.n_points", "task.n_dims", "task.mix_digits", "task.nnz")
FACET_AXES = ("task.mix_weight", "task.op", "model.pos_encoding", "task.sampling")
MAX_HTML_ROWS = 80

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; color: #222; line-height: 1.4; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
p.meta, p.note { color: #666; font-size: 0.9rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
.table { overflow-x: auto; margin: 0.5rem 0 1.2rem 0; }
table { border-collapse: collapse; font-size: 0.8rem; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
nav a { margin-right: 1rem; }
"""


class Page:
    """The report being written: HTML parts in order, PNG and CSV files beside them."""

    def __init__(self, out_dir: Path) -> None:
        self.out = out_dir
        self.parts: list[str] = []
        self.sections: list[tuple[str, str]] = []
        self.files: list[Path] = []

    def section(self, title: str) -> None:
        anchor = title.lower().replace(" ", "-")
        self.sections.append((anchor, title))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')

    def text(self, text: str, kind: str = "note") -> None:
        self.parts.append(f'<p class="{kind}">{html.escape(text)}</p>')

    def table(self, name: str, frame: pd.DataFrame, caption: str, max_rows: int = MAX_HTML_ROWS) -> None:
        path = self.out / f"{name}.csv"
        frame.to_csv(path, index=False)
        self.files.append(path)
        shown = frame.head(max_rows)
        more = f" (first {max_rows} of {len(frame)} rows)" if len(frame) > max_rows else ""
        body = shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3g}", border=0)
        self.parts.append(f'<p><b>{html.escape(caption)}</b>{more} &middot; <a href="{path.name}">{path.name}</a></p>'
                          f'<div class="table">{body}</div>')

    def figure(self, name: str, fig: Figure, caption: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        data = buffer.getvalue()
        path = self.out / f"{name}.png"
        path.write_bytes(data)
        self.files.append(path)
        encoded = base64.b64encode(data).decode("ascii")
        self.parts.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def write(self, title: str, meta: str) -> Path:
        nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.sections)
        head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
                f'<p class="meta">{html.escape(meta)}</p><nav>{nav}</nav>\n')
        doc = head + "\n".join(self.parts) + "\n</body></html>\n"
        path = self.out / "index.html"
        path.write_text(doc, encoding="utf-8")
        return path


def _varying(frame: pd.DataFrame, axes: list[str]) -> list[str]:
    return [a for a in axes if a in frame and frame[a].nunique(dropna=True) > 1]


def choose_axes(table: pd.DataFrame, by: list[str]) -> tuple[str | None, str | None, str | None]:
    """(x, y, facet) for a phase diagram: the varying cell axes, preferred roles first
    (model size on x, training length on y, mixture weight across panels)."""
    varying = _varying(table, by)
    picked: list[str | None] = []
    for preferred in (X_AXES, Y_AXES, FACET_AXES):
        choice = next((a for a in preferred if a in varying and a not in picked), None)
        picked.append(choice)
    rest = [a for a in varying if a not in picked]
    picked = [p if p is not None else (rest.pop(0) if rest else None) for p in picked]
    x, y, facet = picked
    if x is None and y is not None:
        x, y = y, None
    return x, y, facet


def _by(table: pd.DataFrame) -> list[str]:
    """The cell axes of an analysis table: the columns between family and cell."""
    columns = list(table.columns)
    return columns[1:columns.index("cell")] if "cell" in columns else []


def _phase(page: Page, name: str, table: pd.DataFrame, value: str, caption: str,
           limits: tuple[float, float] | None = None) -> None:
    x, y, facet = choose_axes(table, _by(table))
    if x is None:
        return
    page.figure(name, plots.phase_diagram(table, x, y, value=value, facet=facet, limits=limits), caption)


def _arithmetic(page: Page, trials: pd.DataFrame, final: pd.DataFrame, threshold: float) -> None:
    page.section("Arithmetic")
    table = bd.breakdown(final, trials, metric="exact_match", threshold=threshold)
    by = _by(table)
    curve = bd.curves(final, "exact_match", by=by)
    page.text(f"Boundary: the first OOD length (max operand length) where the exact match of a cell's best trial "
              f"falls below {threshold:g} x its ID exact match; quantiles over the cell's trials; 'holds' = never "
              f"within the lengths evaluated.")
    page.table("breakdown_exact_match", table, "Breakdown per cell (exact match)")
    _phase(page, "phase_boundary", table, "boundary", "Phase diagram: OOD boundary of the best trial per cell.")
    _phase(page, "phase_ood_score", table, "ood_score", "Phase diagram: mean OOD exact match of the best trial.",
           limits=(0.0, 1.0))
    x, y, facet = choose_axes(table, by)
    page.figure("length_curves", plots.length_curves(curve, hue=x if y else None, facet=y or None, cells=table),
                "Exact match against operand length; crosses mark boundaries, the shaded range is ID.")
    page.table("curves_exact_match", curve, "Exact match per cell and length")
    if "digit_acc" in set(final["metric"]):
        page.table("curves_digit_acc", bd.curves(final, "digit_acc", by=by), "Digit accuracy per cell and length")
    if "equivalence" in set(final["metric"]):
        eq = equivalence.equivalence_table(final, by=by)
        page.figure("equivalence_bars", plots.equivalence_bars(eq),
                    "Exact match vs equivalence rate (answer = f(a mod 10^n, b mod 10^n)) vs chance, OOD lengths.")
        page.table("equivalence", eq, "Equivalence per cell and OOD length")


def _icl(page: Page, trials: pd.DataFrame, final: pd.DataFrame, threshold: float) -> None:
    page.section("In-context learning")
    table = bd.breakdown(final, trials, metric="nmse", threshold=threshold)
    by = _by(table)
    page.text(f"Boundary: the first OOD shift value where the best trial keeps less than {threshold:g} of its ID "
              f"skill (1 - nmse, relative to predicting zero).")
    page.table("breakdown_nmse", table, "Breakdown per cell and shift axis (normalized error)")
    for shift in [s for s in dict.fromkeys(table["shift"])][:4]:
        _phase(page, f"phase_boundary_{shift}", table[table["shift"] == shift], "boundary",
               f"Phase diagram: boundary along {shift} (best trial per cell).")
    curves = icl.icl_curves(final, by=by)
    page.figure("nmse_curves", plots.nmse_curves(curves), "Normalized error against k with the baselines.")
    page.table("icl_curves", curves, "Normalized error per cell, condition and k (model and baselines)")
    gap = icl.selection_gap(final, by=by)
    page.figure("selection_gap", plots.selection_gap_curves(gap), "Excess error over the best baseline and specialist.")
    page.table("selection_gap", gap, "Model-selection gap per cell and condition")
    errors = icl.shift_errors(final, by=by)
    page.figure("shift_errors", plots.shift_error_curves(errors), "Error along the shift axes (mean over k).")
    page.table("shift_errors", errors, "Error per cell and shift value (mean over k)")
    mix = icl.mixture_effect(errors)
    if not mix.empty and mix[icl.MIX_AXIS].nunique() > 1:
        page.figure("mixture_effect", plots.mixture_effect_curves(mix), "Error against the pretraining mixture weight.")
        page.table("mixture_effect", mix, "Error per mixture weight and shift")


def _representations(page: Page, store: Any, study: str, final: pd.DataFrame) -> None:
    points = load.points(store, study, kind=None)
    if points.empty:
        return
    page.section("Representations")
    sep = representations.separation(points)
    page.figure("separation", plots.separation_curves(sep), "Label separation of the PCA points over training.")
    page.table("separation", sep, "Cluster separation per trial, step and split")
    scores = bd.trial_scores(final, "exact_match") if "exact_match" in set(final["metric"]) else None
    candidates = list(dict.fromkeys(points["trial_id"]))
    trial = candidates[0]
    if scores is not None and not scores.empty:
        ranked = scores[scores["trial_id"].isin(candidates)].drop_duplicates("trial_id")
        if not ranked.empty:
            trial = ranked.sort_values(["id_score", "trial_id"], ascending=[False, True])["trial_id"].iloc[0]
    mine = points[points["trial_id"] == trial]
    for kind, part in mine.groupby("kind"):
        page.figure(f"pca_{kind}", plots.pca_scatter(part), f"PCA ({kind}) of trial {trial} over training.")


def build_report(store_uri: Any, study: str, out_dir: str | Path, threshold: float = 0.5) -> Path:
    """Write the report of ``study`` into ``out_dir``; return the path of index.html.

    Raises ``study.config.ConfigError`` listing the store's studies when ``study`` is
    not one of them.
    """
    store = load.open_store(store_uri)
    load.check_study(store, study)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = Page(out)
    trials = load.trials(store, study)
    final = load.final_evals(store, study, trials_frame=trials)
    metrics = set(final["metric"]) if len(final) else set()

    page.section("Overview")
    status = trials["status"].value_counts().rename_axis("status").reset_index(name="trials")
    page.table("status", status, "Trials by status")
    axes = load.grid_axes(trials).assign(values=lambda f: f["values"].map(lambda v: ", ".join(map(str, v))))
    page.table("grid_axes", axes, "Grid axes")
    page.table("grid_points", load.grid_points(trials), "Grid points (cells with their seeds, as swept)")
    page.table("trials", trials, "Trials")
    if "exact_match" in metrics:
        _arithmetic(page, trials, final, threshold)
        methods.report_section(page, trials, final, threshold)
    if "nmse" in metrics:
        _icl(page, trials, final, threshold)
    _representations(page, store, study, final)
    if not metrics:
        page.text("No evaluations in the store yet.")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"store {getattr(store, 'uri', store_uri)} · {len(trials)} trials · written {stamp}"
    return page.write(f"OOD study report: {study}", meta)
