"""A self-contained HTML report of one study: ``oodstudy report --store URI --study NAME``.

The report directory holds ``index.html`` (figures embedded as base64 PNG, tables as
HTML; it opens in any browser without a server), every figure as a PNG and every
table as a CSV.  Sections appear only for what the study holds: arithmetic
(breakdown, phase diagrams, length curves, equivalence), in-context learning (error
over k with baselines, model-selection gap, shifts, mixture weight) and
representations (PCA over training, cluster separation).  It opens with a summary:
the finding per cell in numbers (:mod:`analysis.summary`) and one figure; a threshold
study then has its threshold search (:mod:`analysis.thresholds`): one line per cell,
P(success) along the axis per cell and the threshold against the other grid axes.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import breakdown as bd
from analysis import equivalence, icl, load, methods, plots, representations, summary
from analysis import claims
from analysis import thresholds as th
from study.tasks import FAMILIES

# Preferred roles of grid axes in the phase diagrams: x, y, then panels.
X_AXES = ("model.size", "model.n_layer", "model.d_model", "model.pos_encoding")
Y_AXES = ("task.digits", "task.n_points", "task.n_dims", "task.mix_digits", "task.nnz")
FACET_AXES = ("task.mix_weight", "task.op", "model.pos_encoding", "task.sampling")
MAX_HTML_ROWS = 80
# the breakdown's columns over a cell's seeds (the headline table), then its best seed's (a table of its own)
SEED_COLUMNS = (
    "cell",
    "shift",
    "n_usable",
    "n_trials",
    "id_median",
    "id_min",
    "id_max",
    "n_learned",
    "n_break",
    "break_median",
    "break_min",
    "break_max",
    "holds_to_max",
    "ood_median",
    "n_nonmonotone",
)
BEST_COLUMNS = (
    "cell",
    "shift",
    "best_trial",
    "id_score",
    "boundary",
    "verdict",
    "ood_score",
    "x_max",
    "holds_to",
    "monotone",
    "recovers_at",
)
THRESHOLDS_FIRST = ("cell", "estimate", "low", "high", "level", "stopped", "trials", "seeds_per_point", "budget")
CURVE_PANELS = 12  # cells per figure of P(success) along the threshold axis
CURVE_FIGURES = 4  # figures of them at most; the CSVs hold every cell
TRIALS_FIRST = ("trial_id", "cell", "status", "score", "steps", "n_params", "device")
STEP_COLUMN = re.compile(r"(^|_)steps?$")  # training steps: integers in the CSV and the page

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; color: #222; line-height: 1.4; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
p.meta, p.note { color: #666; font-size: 0.9rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
.table { overflow-x: auto; max-width: 100%; margin: 0.5rem 0 1.2rem 0; }
table { border-collapse: collapse; font-size: 0.8rem; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; white-space: normal; vertical-align: bottom; max-width: 7rem; }
td { background: #fff; } tr:nth-child(even) td { background: #fafafa; }
th:first-child, td:first-child { position: sticky; left: 0; text-align: left; }
th:first-child { background: #f4f4f4; }
p.summary { font-size: 1.05rem; max-width: 60rem; }
ul.summary li { margin: 0.2rem 0; }
nav { display: flex; flex-wrap: wrap; gap: 0 1rem; }
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

    def table(
        self,
        name: str,
        frame: pd.DataFrame,
        caption: str,
        max_rows: int = MAX_HTML_ROWS,
        first: tuple[str, ...] = (),
        hide: tuple[str, ...] = (),
        inline: bool = True,
    ) -> None:
        """A table as CSV (every column) and, when ``inline``, as HTML with the ``first``
        columns leading (the first one stays in view while the table scrolls), without
        the ``hide`` columns and the columns empty in every row (the CSV has them), with
        long texts shortened and numbers never in scientific notation from 1000 on (steps
        are integers in both)."""
        frame = _integer_steps(frame)
        path = self.out / f"{name}.csv"
        frame.to_csv(path, index=False)
        self.files.append(path)
        link = f'<a href="{path.name}">{path.name}</a>'
        if not inline:
            self.parts.append(f"<p><b>{html.escape(caption)}</b> ({len(frame)} rows): {link}</p>")
            return
        empty = {c for c in frame.columns if _is_empty(frame[c])}
        lead = [c for c in first if c in frame and c not in empty]
        rest = [c for c in frame.columns if c not in lead and c not in hide and c not in empty]
        shown = frame[lead + rest].head(max_rows)
        hidden = len(frame.columns) - len(shown.columns)
        blank = ", ".join(str(c) for c in frame.columns if c in empty)
        link += (f" (with {hidden} more columns" + (f"; empty here: {blank}" if blank else "") + ")") if hidden else ""
        shown = shown.apply(_html_column)
        shown.columns = [
            str(c).replace("_", "_\u200b").replace(".", ".\u200b") for c in shown.columns
        ]  # headers may wrap
        more = f" (first {max_rows} of {len(frame)} rows)" if len(frame) > max_rows else ""
        body = shown.to_html(index=False, na_rep="", float_format=_number, border=0)
        self.parts.append(f'<p><b>{html.escape(caption)}</b>{more} &middot; {link}</p><div class="table">{body}</div>')

    def html(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, name: str, fig: Figure, caption: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        data = buffer.getvalue()
        path = self.out / f"{name}.png"
        path.write_bytes(data)
        self.files.append(path)
        encoded = base64.b64encode(data).decode("ascii")
        self.parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def write(self, title: str, meta: str) -> Path:
        nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.sections)
        head = (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="meta">{html.escape(meta)}</p><nav>{nav}</nav>\n'
        )
        doc = head + "\n".join(self.parts) + "\n</body></html>\n"
        path = self.out / "index.html"
        path.write_text(doc, encoding="utf-8")
        return path


def _integer_steps(frame: pd.DataFrame) -> pd.DataFrame:
    """Step columns (step, steps, *_step) that hold whole numbers as nullable integers, so that
    4000 reads 4000 (not 4e+03 or 4000.0) in the page and in the CSV."""
    columns = {}
    for c in frame.columns:
        column = frame[c]
        if STEP_COLUMN.search(str(c)) and pd.api.types.is_float_dtype(column):
            values = column.dropna().to_numpy(float)
            if np.isfinite(values).all() and (values == np.round(values)).all():
                columns[c] = "Int64"
    return frame.astype(columns) if columns else frame


def _is_empty(column: pd.Series) -> bool:
    """No value in any row: missing, or blank text (e.g. chance for addition without a modulus)."""
    values = column.dropna()
    return values.empty or bool(values.map(lambda v: isinstance(v, str) and not v.strip()).all())


def _number(value: float) -> str:
    """A float for the HTML table: 3 significant digits, whole numbers and numbers from 1000 on
    written out (4000, not 4e+03)."""
    if not np.isfinite(value):
        return str(value)
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _html_column(column: pd.Series) -> pd.Series:
    """A column as the HTML table shows it: floats as they are (formatted by to_html),
    anything else with missing values blank and long texts shortened."""
    if pd.api.types.is_float_dtype(column):
        return column
    return column.astype(object).where(column.notna(), "").map(_shorten)


def _shorten(value: Any, limit: int = 32) -> Any:
    """Long texts (configs, error tails) shortened for the HTML table; the CSV keeps them."""
    if isinstance(value, str) and len(value) > limit and "|" not in value:
        return value[: limit - 1] + "\u2026"
    return value.replace("|", "|\u200b") if isinstance(value, str) else value  # cell labels may wrap


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
    return columns[1 : columns.index("cell")] if "cell" in columns else []


def _breakdown_tables(page: Page, name: str, table: pd.DataFrame, by: list[str], caption: str) -> None:
    """The breakdown of one trial per seed as two tables that fit a page: first the seed
    distribution per cell (medians, ranges, how many seeds break or hold), then the best
    seed per cell (the CSV of the first holds every column)."""
    page.table(
        name,
        table,
        caption + ": the seeds of each cell (each read at its best trial)",
        first=SEED_COLUMNS,
        hide=tuple(c for c in table.columns if c not in SEED_COLUMNS),
    )
    page.table(
        name + "_best_seed",
        table[[c for c in BEST_COLUMNS if c in table]],
        caption + ": the best seed of each cell by ID score",
    )


def _phase(
    page: Page,
    name: str,
    table: pd.DataFrame,
    value: str,
    caption: str,
    limits: tuple[float, float] | None = None,
    what: str | None = None,
    bar_label: str | None = None,
) -> None:
    """A phase diagram of ``value``; ``what`` names it in the title (default: the value's label),
    ``bar_label`` says what the colour encodes."""
    x, y, facet = choose_axes(table, _by(table))
    if x is None:
        return
    page.figure(
        name,
        plots.phase_diagram(table, x, y, value=value, facet=facet, limits=limits, name=what, bar_label=bar_label),
        caption,
    )


def _arithmetic(page: Page, trials: pd.DataFrame, final: pd.DataFrame, threshold: float) -> None:
    """The arithmetic section, then the methods section (index hints, position schemes)."""
    _arithmetic_tables(page, trials, final, threshold)
    methods.report_section(page, trials, final, threshold)


def _arithmetic_tables(page: Page, trials: pd.DataFrame, final: pd.DataFrame, threshold: float) -> None:
    page.section("Arithmetic")
    final, trials = bd.seed_best(final, trials, "exact_match")  # one trial per seed: the cell's distribution
    table = bd.breakdown(final, trials, metric="exact_match", threshold=threshold)
    by = _by(table)
    curve = bd.curves(final, "exact_match", by=by)
    page.text(
        f"Boundary: the first OOD length (max operand length) where a seed's exact match falls below "
        f"{threshold:g} x its ID exact match; medians and ranges over the cell's seeds, each read at its best "
        f"trial; 'holds' = never within the lengths evaluated."
    )
    _breakdown_tables(page, "breakdown_exact_match", table, by, "Breakdown per cell (exact match)")
    _phase(page, "phase_boundary", table, "boundary", "Phase diagram: OOD boundary of the best seed per cell.")
    _phase(
        page,
        "phase_ood_score",
        table,
        "ood_score",
        "Phase diagram: mean OOD exact match of the best seed.",
        limits=(0.0, 1.0),
        what="mean OOD exact match",
        bar_label="mean OOD exact match",
    )
    x, y, facet = choose_axes(table, by)
    crosses = "; crosses mark boundaries" if table["boundary"].notna().any() else ""
    page.figure(
        "length_curves",
        plots.length_curves(curve, hue=x if y else None, facet=y or None, cells=table),
        f"Exact match against operand length{crosses}; the shaded range is ID.",
    )
    page.table(
        "curves_exact_match",
        curve,
        "Exact match per cell and length",
        first=("cell", "x", "split", "best"),
        hide=("family", *by),
    )
    if "digit_acc" in set(final["metric"]):
        page.table(
            "curves_digit_acc",
            bd.curves(final, "digit_acc", by=by),
            "Digit accuracy per cell and length",
            first=("cell", "x", "split", "best"),
            hide=("family", *by),
        )
    if "equivalence" in set(final["metric"]):
        eq = equivalence.equivalence_table(final, by=by)
        chance = " vs chance" if eq["chance"].notna().any() else ""  # chance exists under a modulus only
        page.figure(
            "equivalence_bars",
            plots.equivalence_bars(eq),
            f"Exact match vs equivalence rate (answer = f(a mod 10^n, b mod 10^n)){chance}, OOD lengths.",
        )
        page.table(
            "equivalence",
            eq,
            "Equivalence per cell and OOD length",
            first=("cell", "x", "exact_match", "equivalence", "chance", "equivalence_of_wrong", "n"),
            hide=("family", "shift", "split", *by),
        )


def _icl(page: Page, trials: pd.DataFrame, final: pd.DataFrame, threshold: float) -> None:
    page.section("In-context learning")
    final, trials = bd.seed_best(final, trials, "nmse")  # one trial per seed: the cell's distribution
    table = bd.breakdown(final, trials, metric="nmse", threshold=threshold)
    by = _by(table)
    page.text(
        f"Boundary: the first OOD shift value where the best trial keeps less than {threshold:g} of its ID "
        f"skill (1 - nmse, relative to predicting zero)."
    )
    _breakdown_tables(page, "breakdown_nmse", table, by, "Breakdown per cell and shift axis (normalized error)")
    for shift in [s for s in dict.fromkeys(table["shift"])][:4]:
        _phase(
            page,
            f"phase_boundary_{shift}",
            table[table["shift"] == shift],
            "boundary",
            f"Phase diagram: boundary along {shift} (best trial per cell).",
        )
    curves = icl.icl_curves(final, by=by)
    page.figure("nmse_curves", plots.nmse_curves(curves), "Normalized error against k with the baselines.")
    page.table(
        "icl_curves", curves, "Normalized error per cell, condition and k (model and baselines)", hide=("family", *by)
    )
    gap = icl.selection_gap(final, by=by)
    page.figure("selection_gap", plots.selection_gap_curves(gap), "Excess error over the best baseline and specialist.")
    page.table(
        "selection_gap",
        gap,
        "Model-selection gap per cell and condition",
        hide=("family", *by),
        first=(
            "cell",
            "shift",
            "shift_value",
            "n_context",
            "split",
            "gap",
            "nmse",
            "nmse_baseline",
            "best_baseline",
            "gap_specialist",
        ),
    )
    errors = icl.shift_errors(final, by=by)
    page.figure("shift_errors", plots.shift_error_curves(errors), "Error along the shift axes (mean over k).")
    page.table("shift_errors", errors, "Error per cell and shift value (mean over k)", hide=("family", *by))
    mix = icl.mixture_effect(errors)
    if not mix.empty and mix[icl.MIX_AXIS].nunique() > 1:
        page.figure("mixture_effect", plots.mixture_effect_curves(mix), "Error against the pretraining mixture weight.")
        page.table("mixture_effect", mix, "Error per mixture weight and shift")
    _icl_selection(page, final, by)


def _icl_selection(page: Page, final: pd.DataFrame, by: list[str]) -> None:
    """Dense vs sparse mixtures: error against k on one-sparse and dense prompts, error
    against nnz at k = d and 2d, and the selection gap as a mixture weight x nnz map."""
    d = icl.dense_dim(final)
    if d is None:
        return
    page.section("In-context model selection along nnz")
    page.text(
        f"Prompts from one-sparse (nnz = 1) to dense (nnz = d = {d}); the model against least squares "
        f"(best on dense prompts) and Lasso (best on sparse ones), on the same prompts."
    )
    curves = icl.icl_curves(final, by=by)
    for nnz, what in ((1, "one-sparse"), (d, "dense")):
        if not ((curves["shift"] == icl.NNZ) & (curves["shift_value"] == nnz)).any():
            continue
        page.figure(
            f"nmse_curves_nnz{nnz}",
            plots.nmse_curves(curves, shift=icl.NNZ, shift_value=nnz),
            f"Normalized error against k on {what} prompts (nnz = {nnz}), per cell, with the baselines.",
        )
    profile = icl.nnz_profile(final, by=by)
    if profile.empty:
        return
    page.figure("nnz_profile", plots.nnz_profile_curves(profile), f"Error against nnz at k = {d} and k = {2 * d}.")
    page.table("nnz_profile", profile, f"Error per cell, nnz and k (k = {d}, {2 * d}), model and baselines")
    phase = icl.selection_phase(final, by=by)
    if icl.MIX_AXIS in by and not phase.empty:
        cells = phase.rename(columns={"shift_value": "nnz"})
        page.figure(
            "selection_phase",
            plots.phase_diagram(
                cells,
                x="nnz",
                y=icl.MIX_AXIS,
                value="gap_median",
                facet="n_context",
                cmap="magma_r",
                title="selection gap (model minus the better baseline) by nnz and mixture weight",
            ),
            "Selection gap (model error minus the better baseline's, median over seeds) by mixture weight "
            "and nnz, at k = d and 2d: near 0 where the model selects the right algorithm.",
        )
    page.table("selection_phase", phase, "Selection gap per cell, nnz and k")


def _representations(page: Page, store: Any, study: str, final: pd.DataFrame) -> None:
    points = load.points(store, study, kind=None)
    if points.empty:
        return
    page.section("What the hidden states encode")
    page.text(
        "Each trial's hidden state at the answer's units digit, projected on its first two principal "
        "components at several training steps and coloured by the digit it should produce. A share of "
        "variance near 1 means one tight cluster per digit."
    )
    sep = representations.separation(points)
    page.figure("separation", plots.separation_curves(sep), "Label separation of the PCA points over training.")
    page.table("separation", sep, "Cluster separation per trial, step and split", inline=False)
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


def _summary(page: Page, trials: pd.DataFrame, final: pd.DataFrame, metrics: set[str], threshold: float) -> None:
    """The report's opening: the finding in numbers, one paragraph and one figure per family."""
    page.section("Summary")
    counts = trials["status"].value_counts()
    done = ", ".join(f"{n} {status}" for status, n in counts.items())
    page.text(f"{len(trials)} trials: {done}.", kind="summary")
    for name in families_present(metrics):
        FAMILY_SECTIONS[name][0](page, trials, final, threshold)


def _arithmetic_summary(page: Page, trials: pd.DataFrame, final: pd.DataFrame, threshold: float) -> None:
    """Arithmetic's summary: the finding per cell in sentences and one figure, seeds first."""
    seed_final, seed_trials = bd.seed_best(final, trials, "exact_match")
    table = bd.breakdown(seed_final, seed_trials, metric="exact_match", threshold=threshold)
    findings = summary.arithmetic_findings(table, summary.seed_beyond(seed_final, threshold), seed_final)
    page.text(
        f"Arithmetic, the seeds of each cell (each read at its best trial): medians over seeds with their "
        f"range, and where each seed breaks; a seed's boundary is the first OOD operand length where its "
        f"exact match falls below {threshold:g} x its ID exact match. The best seed comes last.",
        kind="summary",
    )
    page.html(
        '<ul class="summary">'
        + "".join(f"<li>{html.escape(t)}</li>" for t in summary.arithmetic_sentences(findings, threshold))
        + "</ul>"
    )
    page.figure(
        "summary_arithmetic",
        plots.finding_bars(findings),
        "ID exact match, exact match from the boundary on, and the equivalence rate there, per cell "
        "(medians over seeds).",
    )


def _icl_summary(page: Page, trials: pd.DataFrame, final: pd.DataFrame, threshold: float) -> None:
    """In-context regression's summary: the model-selection gap per cell in sentences and one figure, seeds first."""
    findings = summary.icl_findings(icl.selection_gap(bd.seed_best(final, trials, "nmse")[0], by=None))
    page.text(
        "In-context regression, the seeds of each cell (each read at its best trial): the model-selection "
        "gap (the model's normalized error minus the best baseline's on the same prompts; negative is "
        "better than every baseline), median over seeds.",
        kind="summary",
    )
    page.html(
        '<ul class="summary">'
        + "".join(f"<li>{html.escape(t)}</li>" for t in summary.icl_sentences(findings))
        + "</ul>"
    )
    page.figure("summary_icl", plots.gap_bars(findings), "Model-selection gap per cell, ID and OOD k.")


def _attention(page: Page, scores: pd.DataFrame, final: pd.DataFrame) -> None:
    """The attention alignment of one trial (the best by ID exact match among those probed) as a heat map."""
    candidates = list(dict.fromkeys(scores.loc[scores["kind"] == "attention_alignment", "trial_id"]))
    trial = candidates[0]
    if "metric" in final and "exact_match" in set(final["metric"]):
        ranked = bd.trial_scores(final, "exact_match")
        ranked = ranked[ranked["trial_id"].isin(candidates)].drop_duplicates("trial_id")
        if not ranked.empty:
            trial = ranked.sort_values(["id_score", "trial_id"], ascending=[False, True])["trial_id"].iloc[0]
    aligned = representations.attention_map(scores, trial)
    page.text(
        "Attention alignment: for each block (L) and head (H), the share of attention that the position "
        "predicting answer digit i sends to the operand digits of place i (both operands; the carry's "
        "source, place i - 1, does not count), on the probe inputs with the true answer fed in. Uniform "
        "attention scores about 2 / (prompt length); a head that reads its own place scores 1."
    )
    page.figure(
        "attention_alignment",
        plots.attention_heatmap(aligned, f"attention alignment of trial {trial} (step {int(aligned['step'].max())})"),
        f"Attention alignment of trial {trial}, ID inputs and each OOD operand length.",
    )
    argmax = representations.attention_map(scores, trial, "attention_argmax")
    table = aligned.rename(columns={"value": "alignment"}).merge(
        argmax.rename(columns={"value": "most_attended_place"}),
        on=["trial_id", "step", "layer", "head", "position", "split", "length"],
        how="left",
    )
    page.table(
        "attention_alignment",
        table,
        f"Attention alignment and the most attended operand place, trial {trial}",
        inline=False,
    )  # one row per block, head, digit and length: the figure shows it, the CSV holds it


def _structure(page: Page, store: Any, study: str, trials: pd.DataFrame, final: pd.DataFrame) -> None:
    """Probe scores: structure vs step next to ID accuracy, vs operand length, over the grid."""
    scores = load.structure_scores(store, study, trials_frame=trials)
    if scores.empty:
        return
    page.section("Structure")
    kinds = set(scores["kind"])
    if "probe_digit" in kinds:
        page.text(
            "Structure score: accuracy of a linear probe from the final hidden state at the position that "
            "predicts the units digit to that digit, on held-out ID inputs (chance 0.1). Representation "
            "equivalence: share of OOD inputs whose state is nearer the state of their ID equivalent "
            "(a mod 10^n, b mod 10^n) than that state is to any ID input's with another units digit "
            "(about 0 at initialization; its chance pairs each OOD input with another's equivalent)."
        )
        evals = load.evals(store, study, metrics=["exact_match"], where="split = 'id'", trials_frame=trials)
        curves = representations.structure_vs_accuracy(scores, evals)
        page.figure(
            "structure_vs_step",
            plots.structure_curves(curves, "units-digit probe"),
            "Units-digit probe accuracy (solid) and ID exact match (dashed) over training.",
        )
        first = representations.first_crossings(curves)
        first = first.astype({c: "Int64" for c in ("structure_step", "accuracy_step", "lead")})
        reached = first[["structure_step", "accuracy_step"]].notna().any(axis=None)
        if not reached:
            page.text("Neither the units-digit probe nor the ID exact match of any trial reached 0.9.")
        page.table(
            "structure_first",
            first,
            "First step at which the units-digit probe and the ID exact match reach 0.9 (lead > 0: structure first)",
            inline=bool(reached),
        )
        by_length = representations.structure_by_length(
            scores, "probe_digit_equiv" if "probe_digit_equiv" in kinds else "probe_digit"
        )
        ids = representations.structure_by_length(scores, "probe_digit")
        lengths = pd.concat([ids[ids["split"] == "id"], by_length[by_length["split"] == "ood"]])
        lengths = lengths.sort_values(["cell", "length"], kind="stable")
        page.figure(
            "structure_vs_length",
            plots.structure_lengths(lengths, "units-digit probe"),
            "Units-digit probe fitted on ID states, scored on inputs of each operand length (OOD: against "
            "the equivalence answer's digit); median and quartiles over each cell's trials.",
        )
        page.table("structure_by_length", lengths, "Units-digit probe accuracy per cell and operand length")
        table = representations.structure_cells(scores, trials)
        _phase(
            page,
            "phase_structure",
            table,
            "structure",
            "Phase diagram: units-digit probe accuracy on ID inputs (median over each cell's trials).",
            limits=(0.0, 1.0),
            what="units-digit probe accuracy (ID)",
            bar_label="ID probe accuracy (median)",
        )
        page.table("structure_cells", table, "Units-digit probe accuracy per cell")
    if "repr_equivalence" in kinds:
        eq = representations.structure_by_length(scores, "repr_equivalence")
        page.figure(
            "repr_equivalence_vs_length",
            plots.structure_lengths(eq, "representation equivalence"),
            "Representation equivalence at the units digit against the OOD operand length.",
        )
        table = representations.structure_cells(scores, trials, "repr_equivalence", split="ood").rename(
            columns={"structure": "repr_equivalence"}
        )
        _phase(
            page,
            "phase_repr_equivalence",
            table,
            "repr_equivalence",
            "Phase diagram: representation equivalence at the units digit, first OOD length.",
            limits=(0.0, 1.0),
            what="representation equivalence (first OOD length)",
            bar_label="representation equivalence",
        )
        page.table("repr_equivalence_cells", table, "Representation equivalence per cell (first OOD length)")
    probed_layers = set(scores.loc[scores["kind"] == "probe_digit", "layer"].dropna())
    if len(probed_layers) > 1:
        page.table(
            "structure_by_layer",
            representations.structure_by_layer(scores),
            "Probe accuracy on held-out ID inputs per layer (-1: the final state; l: after block l) and answer digit",
        )
    if "attention_alignment" in kinds:
        _attention(page, scores, final)
    if "probe_coefficients" in kinds:
        coefficients = representations.coefficient_curves(scores)
        page.figure(
            "coefficient_r2",
            plots.coefficient_curves(coefficients),
            "R^2 of a linear probe from the state at x_k to the prompt's coefficients, by k and shift.",
        )
        page.table("coefficient_r2", coefficients, "Coefficient probe R^2 per cell, condition and k")


def _claims(page: Page, table: pd.DataFrame) -> None:
    """The spec's claims (its expect list): one line per claim and cell as the terminal
    prints it, the seed distribution beside the published value; the table as CSV."""
    if not len(table):
        return
    table = table.sort_values(["claim", "cell"], kind="stable")[[c for c in claims.COLUMNS if c in table]]
    page.section("Claims")
    page.text(
        f"{claims.tally(table)}: each a median over the cell's seeds (each seed read at its best trial), "
        "with the interquartile range and range, the number of seeds and how many hold, beside the "
        "published value.",
        kind="summary",
    )
    page.html(
        '<ul class="summary">'
        + "".join(f"<li>{html.escape(line)}</li>" for line in claims.claim_lines(table))
        + "</ul>"
    )
    page.table("claims", table, "Claims per cell", inline=False)


def _threshold_search(page: Page, found: load.Thresholds) -> None:
    """A threshold study (issue 25): one line per cell as the terminal prints it, P(success)
    along the axis per cell (the searcher's fit, each seed's outcome, the threshold and its
    interval), the threshold against the other grid axes, and the table."""
    table, search = found.table, found.search
    page.section("Threshold search")
    page.html(
        '<ul class="summary">'
        + "".join(f"<li>{html.escape(t)}</li>" for t in summary.threshold_sentences(table))
        + "</ul>"
    )
    values = th.axis_ticks(search)
    if search is None:
        page.text(
            "The study's spec copy (in its run directory, <store>/_runs/<study>) is not found here, so the "
            "fitted P(success) along the axis is not drawn: it needs the search's axis range and direction. "
            "Report from the store the run wrote, or with the run directory beside it."
        )
    else:
        states = th.cell_states(search, table, found.trials)
        curves = th.curves(search, states)
        seeds = th.outcomes(search, found.trials, cells=list(table["cell"]))
        unit = " (positions are indices into threshold.values)" if values is not None else ""
        chunks = [table.iloc[i : i + CURVE_PANELS] for i in range(0, len(table), CURVE_PANELS)][:CURVE_FIGURES]
        for i, chunk in enumerate(chunks):
            part = (
                f" (cells {i * CURVE_PANELS + 1}-{i * CURVE_PANELS + len(chunk)} of {len(table)})"
                if len(chunks) > 1 or len(table) > len(chunk)
                else ""
            )
            title = (
                f"P({chunk['criterion'].iloc[0]}) along {chunk['axis'].iloc[0]} per cell: the searcher's fit, "
                f"each seed's outcome, the threshold where P = {chunk['target'].iloc[0]:g} and its interval{part}"
            )
            page.figure(
                "threshold_curves" + (f"_{i + 1}" if i else ""),
                plots.threshold_curves(curves, seeds, chunk, values=values, title=title),
                f"P(success) along {search.axis}{unit} per cell{part}: the posterior mean of the searcher's "
                f"psychometric curve (psi method) given every seed's outcome, each seed as a dot at 1 "
                f"(success) or 0 (failure), jittered; the threshold (posterior median) as a line and its "
                f"{100 * search.interval:.0f}% credible interval as a band.",
            )
        if len(table) > CURVE_PANELS * CURVE_FIGURES:
            page.text(
                f"The figures show the first {CURVE_PANELS * CURVE_FIGURES} of {len(table)} cells; the CSVs "
                "below hold every cell."
            )
    cells, axes = th.cell_axes(table)
    x, y, facet = choose_axes(cells, axes)
    if x is not None:
        page.figure(
            "threshold_phase",
            plots.threshold_phase(cells, x, hue=y, facet=facet, values=values),
            f"The threshold of {table['axis'].iloc[0]} per cell against {x}"
            + (f" (one line per {y})" if y else "")
            + (f", one panel per {facet}" if facet else "")
            + ": the estimate with its credible interval; hollow markers where the search did not converge.",
        )
    same = (table["low_value"] == table["low"].map(lambda v: f"{v:g}")).all()  # a continuous axis: no bracketing values
    page.table(
        "thresholds",
        table,
        "Threshold per cell (the store's thresholds table; the lines above say the axis, criterion and target)",
        first=THRESHOLDS_FIRST,
        hide=("axis", "criterion", "target", *(("low_value", "high_value") if same else ())),
    )
    if search is not None:
        page.table("threshold_outcomes", seeds, "Each seed's outcome", inline=False)
        page.table("threshold_curves", curves, "Fitted P(success) per cell along the axis", inline=False)


# task family (study.tasks.FAMILIES) -> (its summary paragraph, its sections)
FAMILY_SECTIONS = {
    "arithmetic": (_arithmetic_summary, _arithmetic),
    "icl": (_icl_summary, _icl),
}


def families_present(metrics: set[str]) -> list[str]:
    """The families whose primary metric (their record's) the study's evaluations hold, in registry order."""
    return [record.name for record in FAMILIES.values() if record.primary_metric in metrics]


def build_report(
    store_uri: Any, study: str, out_dir: str | Path, threshold: float = 0.5, claim_table: pd.DataFrame | None = None
) -> Path:
    """Write the report of ``study`` into ``out_dir``; return the path of index.html.

    ``claim_table``: the study's claims checked now (:func:`analysis.claims.check_claims`);
    None: the store's ``claims`` table as the last run, resume or check wrote it.
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

    if metrics:
        _summary(page, trials, final, metrics, threshold)
    _claims(page, claim_table if claim_table is not None else store.frame("claims", study=study))
    found = load.thresholds(store, study)
    if found is not None:
        _threshold_search(page, found)
    page.section("Overview")
    status = trials["status"].value_counts().rename_axis("status").reset_index(name="trials")
    page.table("status", status, "Trials by status")
    axes = load.grid_axes(trials).assign(values=lambda f: f["values"].map(lambda v: ", ".join(map(str, v))))
    page.table("grid_axes", axes, "Grid axes")
    page.table("grid_points", load.grid_points(trials), "Grid points (cells with their seeds, as swept)")
    page.table(
        "trials",
        trials,
        "Trials",
        first=TRIALS_FIRST,
        hide=("family", "start_time", "end_time", "node", *load.axis_columns(trials)),
    )
    for name in families_present(metrics):
        FAMILY_SECTIONS[name][1](page, trials, final, threshold)
    _representations(page, store, study, final)
    _structure(page, store, study, trials, final)
    if not metrics:
        page.text("No evaluations in the store yet.")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"store {getattr(store, 'uri', store_uri)} · {len(trials)} trials · written {stamp}"
    return page.write(f"OOD study report: {study}", meta)
