"""Reading one study out of the results store.

The store functions here are the only I/O of the analysis package: they push the
filtering (study, metrics, final step) into the store's DuckDB SQL and hand back
pandas DataFrames.  Everything downstream (breakdown, equivalence, icl, plots) is a
pure function of these frames.

Grid axes keep their dotted names as columns (``"model.size"``, ``"task.digits"``);
flattened config values are prefixed with ``"config."``.  :func:`axis_columns`
recovers the axes of any frame from that naming rule.

A trial's *grid point* (every grid axis, seeds included; the store's ``cell`` column)
is read into the column ``grid_point``; a *cell* is a grid point without its seed
axes (:func:`cell_axes`), the unit every analysis table reports on, labelled in
their ``cell`` column.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, Iterable, NamedTuple

import numpy as np
import pandas as pd

from study.config import MODEL_PRESETS, flatten
from study.naming import EVAL_CONDITIONS, is_seed_axis
from study.store.sql import sql_literal
from study.tasks import DEFAULT_FAMILY, family_of_metric

FAILED = ("failed", "diverged")  # trials that ended without a score (counted as failed)
UNFINISHED = ("pending", "running", "retrying", "abandoned")  # trials whose training has not ended
NOT_SCORED = FAILED + UNFINISHED  # statuses excluded from every score: only ended trials are usable
EVAL_COLUMNS = ["step", "metric", "value", *EVAL_CONDITIONS]
TRIAL_KEYS = ["trial_id", "grid_point", "status", "family"]  # trial columns copied onto eval rows
POINT_COLUMNS = ["trial_id", "step", "kind", "split", "point", "label", "a", "b", "pc1", "pc2"]

# Order of the model presets, smallest first (alphabetical order would put micro first).
SIZE_ORDER = list(MODEL_PRESETS)


# --------------------------------------------------------------------------- the store


def open_store(store: Any) -> Any:
    """A :class:`study.store.Store` for a path or URI; a store object is returned as is."""
    if hasattr(store, "sql") and hasattr(store, "frame"):
        return store
    from study.config import ConfigError
    from study.store import Store, StoreError

    try:
        return Store(str(store), create=False)
    except StoreError as err:
        raise ConfigError(str(err)) from None


def check_study(store: Any, study: str) -> None:
    """Raise ``ConfigError`` naming the studies the store has when ``study`` is not one of them."""
    from study.config import ConfigError

    names = sorted(store.studies())
    if study not in names:
        have = ", ".join(names) if names else "none yet"
        raise ConfigError(f"study {study!r} is not in the store {_uri(store)}; studies there: {have}")


def _uri(store: Any) -> str:
    for attr in ("uri", "root", "path"):
        if getattr(store, attr, None) is not None:
            return str(getattr(store, attr))
    return repr(store)


def _in(column: str, values: Iterable[Any]) -> str:
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


# --------------------------------------------------------------------------- trials


def trials(store: Any, study: str, config: str = "varying") -> pd.DataFrame:
    """One row per trial of ``study`` with its grid axes expanded (see :func:`expand_trials`)."""
    store = open_store(store)
    return expand_trials(store.frame("trials", study=study), config=config)


def expand_trials(raw: pd.DataFrame, config: str = "varying") -> pd.DataFrame:
    """The raw ``trials`` table with ``grid`` and ``config`` JSON expanded into columns.

    Returns one row per trial, sorted by grid point then trial_id, with columns:
    trial_id, grid_point (the store's ``cell`` column), status, family ("arithmetic" | "icl", from ``task.family``),
    attempt, n_params, steps, score, start_time, end_time, seconds (end - start),
    node, device, error; one column per grid axis (dotted name, e.g. ``model.size``;
    list values as compact JSON strings; NaN where a trial's grid lacks the axis); and
    ``config.<dotted key>`` columns: with ``config="varying"`` the keys whose value
    differs between trials (tuned hyperparameters and the axes), ``"all"`` every key,
    ``"none"`` no config column.
    """
    if raw.empty:
        return pd.DataFrame(columns=TRIAL_KEYS + ["attempt", "n_params", "steps", "score", "seconds"])
    grids = [_scalars(json.loads(g)) if isinstance(g, str) and g else {} for g in raw["grid"]]
    configs = [flatten(json.loads(c)) if isinstance(c, str) and c else {} for c in raw["config"]]
    axes = pd.DataFrame(grids, index=raw.index)
    flat = pd.DataFrame([_scalars(c) for c in configs], index=raw.index)
    out = raw.drop(columns=[c for c in ("grid", "config", "study", "written_at") if c in raw])
    out = out.rename(columns={"cell": "grid_point"})
    out["family"] = flat["task.family"] if "task.family" in flat else DEFAULT_FAMILY
    out["family"] = out["family"].fillna(DEFAULT_FAMILY).astype(str)
    if "start_time" in out and "end_time" in out:
        out["seconds"] = (pd.to_datetime(out["end_time"]) - pd.to_datetime(out["start_time"])).dt.total_seconds()
    if config != "none" and not flat.empty:
        keep = flat.columns if config == "all" else [c for c in flat if flat[c].astype(str).nunique() > 1]
        flat = flat[list(keep)].add_prefix("config.")
        out = pd.concat([out, flat], axis=1)
    out = pd.concat([out, axes[[a for a in axes.columns if a not in out]]], axis=1)
    first = [
        c
        for c in TRIAL_KEYS
        + ["attempt", "n_params", "steps", "score", "start_time", "end_time", "seconds", "node", "device", "error"]
        if c in out
    ]
    rest = axis_columns(out) + [c for c in out if c.startswith("config.")]
    return out[first + rest].sort_values(["grid_point", "trial_id"]).reset_index(drop=True)


def _scalars(row: dict[str, Any]) -> dict[str, Any]:
    """Lists and mappings become compact JSON strings so that they can be grouped on."""
    return {
        k: json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict, tuple)) else v for k, v in row.items()
    }


# --------------------------------------------------------------------------- axes and cells


def axis_columns(frame: pd.DataFrame) -> list[str]:
    """The grid-axis columns of a frame: dotted names that are not ``config.*``."""
    return [c for c in frame.columns if "." in str(c) and not str(c).startswith("config.")]


def cell_axes(frame: pd.DataFrame) -> list[str]:
    """The axes that define a cell for analysis: every grid axis except seeds, and
    except axes that are empty in ``frame`` (an axis of the other task family)."""
    return [a for a in axis_columns(frame) if not is_seed_axis(a) and frame[a].notna().any()]


def axis_order(axis: str, values: Iterable[Any]) -> list[Any]:
    """Distinct non-null ``values`` of an axis in their natural order (model sizes by
    preset size, numbers numerically, anything else alphabetically)."""
    distinct = list(dict.fromkeys(v for v in values if not _missing(v)))
    if axis.endswith("model.size") or axis == "size":
        return sorted(distinct, key=lambda v: (SIZE_ORDER.index(v) if v in SIZE_ORDER else len(SIZE_ORDER), str(v)))
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in distinct):
        return sorted(distinct)
    return sorted(distinct, key=str)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def grid_axes(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per grid axis: axis, n_values, values (list in natural order), seed
    (True for replicate axes such as ``train.seed``), families (the task families
    whose trials carry the axis, comma separated)."""
    rows = []
    for axis in axis_columns(trials):
        present = trials[trials[axis].notna()]
        values = axis_order(axis, present[axis])
        rows.append(
            {
                "axis": axis,
                "n_values": len(values),
                "values": values,
                "seed": is_seed_axis(axis),
                "families": ",".join(sorted(present["family"].unique())),
            }
        )
    return pd.DataFrame(rows, columns=["axis", "n_values", "values", "seed", "families"])


def grid_points(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point of the sweep (seeds included, as swept): grid_point,
    family, the grid axes, n_trials, then one ``n_<status>`` column per status
    (n_completed, n_running, n_pruned, n_failed, n_diverged)."""
    statuses = ["completed", "running", "pruned", "failed", "diverged"]
    axes = axis_columns(trials)
    counts = pd.crosstab(trials["grid_point"], trials["status"]).reindex(columns=statuses, fill_value=0)
    counts.columns = [f"n_{s}" for s in statuses]
    first = trials.drop_duplicates("grid_point").set_index("grid_point")[["family"] + axes]
    out = first.join(counts)
    out.insert(len(axes) + 1, "n_trials", counts.sum(axis=1))
    return out.reset_index()


def expected_cells(trials: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Every combination of the ``by`` axes the grid spans, per family: the product of
    each axis' observed values among that family's trials (axes a family lacks stay
    NaN).  Columns: family, then ``by``.  A combination without any trial (all its
    trials lost, or never started) still gets a row."""
    frames = []
    for family, group in trials.groupby("family", sort=True):
        own = [a for a in by if group[a].notna().any()]
        values = [axis_order(a, group[a]) for a in own]
        combos = pd.DataFrame(list(itertools.product(*values)), columns=own)
        combos.insert(0, "family", family)
        frames.append(combos)
    if not frames:
        return pd.DataFrame(columns=["family"] + by)
    out = pd.concat(frames, ignore_index=True)
    for a in by:
        if a not in out:
            out[a] = np.nan
    return out[["family"] + by]


def cell_label(row: pd.Series | dict[str, Any], by: list[str]) -> str:
    """A readable id for a group of trials, ``"model.size=nano|task.digits=3"``."""
    return "|".join(f"{a}={fmt(row[a])}" for a in by if not _missing(row[a]))


def fmt(value: Any) -> str:
    """A grid value as text: 3.0 -> "3", others as str."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- evaluations


def evals(
    store: Any,
    study: str,
    metrics: Iterable[str] | None = None,
    where: str | None = None,
    final: bool = False,
    trials_frame: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Eval rows of ``study`` joined with their trial's grid point, status, family and grid axes.

    ``metrics`` and ``where`` (a DuckDB boolean expression over the ``evals`` columns)
    are applied inside the store's SQL; with ``final=True`` only each trial's last
    evaluated step (its largest step in ``evals``, over all metrics) is read.
    Columns: trial_id, grid_point, status, family, the grid axes, step, split, metric,
    value, len_a, len_b, n_context, shift, shift_value.
    """
    store = open_store(store)
    if trials_frame is None:
        trials_frame = trials(store, study, config="none")
    filters = [f"study = {sql_literal(study)}"]
    if metrics is not None:
        filters.append(_in("metric", list(metrics)))
    if where:
        filters.append(f"({where})")
    last = None
    if final:
        # A trial's final step: its largest evaluated step.  The raw rows hold the same
        # keys as the deduplicated ones, so the cheap raw scan answers it.  A literal
        # list of those steps lets DuckDB filter while scanning; the exact (trial,
        # step) match is checked after.
        per_trial = (
            f"SELECT trial_id, max(step) AS step FROM evals_raw WHERE study = {sql_literal(study)} GROUP BY trial_id"
        )
        last = store.sql(per_trial).set_index("trial_id")["step"]
        steps = sorted(int(s) for s in last.unique())
        if len(steps) <= 32:
            filters.append(_in("step", steps) if steps else "FALSE")
        else:
            filters.append(f"(trial_id, step) IN ({per_trial})")
    rows = store.sql(f"SELECT trial_id, {', '.join(EVAL_COLUMNS)} FROM evals WHERE {' AND '.join(filters)}")
    if last is not None:
        rows = rows[rows["trial_id"].map(last).to_numpy() == rows["step"].to_numpy()]
    return attach_trials(rows, trials_frame)


def final_evals(
    store: Any,
    study: str,
    metrics: Iterable[str] | None = None,
    where: str | None = None,
    trials_frame: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Each trial's final-step eval rows (its max step in ``evals``), joined
    with the grid axes: the main input of breakdown, equivalence and icl.  Columns as
    :func:`evals`."""
    return evals(store, study, metrics=metrics, where=where, final=True, trials_frame=trials_frame)


# --------------------------------------------------------------------------- structure scores


SCORE_COLUMNS = ["step", "kind", "split", "position", "layer", "head", "length", "shift", "shift_value", "value"]


def structure_scores(
    store: Any,
    study: str,
    kinds: Iterable[str] | None = None,
    final: bool = False,
    trials_frame: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The probe scores of ``study`` (``representations`` rows with a value) joined with
    their trial's grid point, status, family and grid axes.

    ``kinds`` (e.g. ``["probe_digit", "repr_equivalence"]``) is applied in the store's
    SQL; with ``final=True`` only each trial's last probed step is kept.  Columns:
    trial_id, grid_point, status, family, the grid axes, step, kind, split, position (answer
    digit or in-context k), layer (-1: final state), head (attention scores; null elsewhere),
    length (arithmetic operand length),
    shift, shift_value (in-context condition), value.  Sorted by trial, kind, split,
    position, length, shift, shift_value, step.
    """
    store = open_store(store)
    if trials_frame is None:
        trials_frame = trials(store, study, config="none")
    where = ["value IS NOT NULL"] + ([_in("kind", list(kinds))] if kinds is not None else [])
    rows = store.frame("representations", study=study, where=" AND ".join(where), columns=["trial_id"] + SCORE_COLUMNS)
    if final and len(rows):
        rows = rows[rows["step"] == rows.groupby("trial_id")["step"].transform("max")]
    order = ["trial_id", "kind", "split", "position", "layer", "head", "length", "shift", "shift_value", "step"]
    rows = rows.sort_values(order, kind="stable").reset_index(drop=True)
    return attach_trials(rows, trials_frame)


def attach_trials(rows: pd.DataFrame, trials_frame: pd.DataFrame) -> pd.DataFrame:
    """Eval-like ``rows`` (with trial_id) joined with the trial columns grid_point, status,
    family and the grid axes, which come first.  Rows of unknown trials are kept with
    status "unknown" and the family that declares their metric (see :func:`row_families`)."""
    info = trials_frame[TRIAL_KEYS + axis_columns(trials_frame)].set_index("trial_id")
    rows = rows.reset_index(drop=True)
    codes = info.index.get_indexer(rows["trial_id"])
    known = codes >= 0
    out = {"trial_id": rows["trial_id"]}
    for column in info.columns:
        values = info[column].to_numpy()[np.where(known, codes, 0)] if len(info) else np.full(len(rows), None)
        out[column] = pd.Series(values, index=rows.index).where(known)
    joined = pd.DataFrame(out)
    joined["status"] = joined["status"].fillna("unknown")
    joined["family"] = joined["family"].fillna(row_families(rows))
    rest = rows.drop(columns=["trial_id"] + [c for c in info.columns if c in rows])
    return pd.concat([joined, rest], axis=1)


def row_families(rows: pd.DataFrame) -> pd.Series:
    """The task family of each eval-like row, from its own words: the family whose record
    declares the row's ``metric`` (``study.tasks.FAMILIES``); rows that name no declared
    metric (representation rows) get the default family, as a trial config without
    ``task.family`` does."""
    metrics = rows["metric"] if "metric" in rows else pd.Series(None, index=rows.index, dtype=object)
    names = {name: record.name for name in metrics.dropna().unique() if (record := family_of_metric(name))}
    return metrics.map(names).fillna(DEFAULT_FAMILY).astype(str)


def study_frames(store: Any, study: str, config: str = "none") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(trials, final evals)`` of ``study``: :func:`trials` and, joined with it,
    :func:`final_evals`."""
    store = open_store(store)
    trial_table = trials(store, study, config=config)
    return trial_table, final_evals(store, study, trials_frame=trial_table)


# --------------------------------------------------------------------------- representations


def points(
    store: Any, study: str, trial_id: str | None = None, step: int | None = None, kind: str | None = "pca_units_digit"
) -> pd.DataFrame:
    """PCA points of ``study`` (optionally one trial, one step, one kind), filtered in
    the store.  Columns: trial_id, step, kind, split, point, label, a, b, pc1, pc2;
    sorted by trial, step, split, point."""
    store = open_store(store)
    where = ["point IS NOT NULL"] + [
        f"{column} = {sql_literal(value)}"
        for column, value in (("trial_id", trial_id), ("step", step), ("kind", kind))
        if value is not None
    ]
    rows = store.frame("representations", study=study, where=" AND ".join(where), columns=POINT_COLUMNS)
    return rows[POINT_COLUMNS].sort_values(["trial_id", "step", "split", "point"]).reset_index(drop=True)


# --------------------------------------------------------------------------- threshold search


class Thresholds(NamedTuple):
    """A threshold study's results (issue 25) as :func:`thresholds` reads them."""

    table: pd.DataFrame  # the ``thresholds`` table: one row per cell (the newest), sorted by cell
    search: Any  # the study's ``threshold`` section (a study.tune.threshold.ThresholdSearch) from its spec copy,
    # or None where the copy is not found (a run directory outside the store) or searched another axis
    trials: (
        pd.DataFrame
    )  # the raw ``trials`` rows the outcomes are rebuilt from: grid (JSON), status, score, start_time


THRESHOLD_BOOKKEEPING = ["study", "trial_id", "attempt", "written_at"]  # columns every table has, none of them results


def thresholds(store: Any, study: str) -> Thresholds | None:
    """The threshold search of ``study``, or None when it has no ``thresholds`` rows (a grid
    study).  The curves need the search's axis range and direction, which the table does
    not hold: they come from the spec copy a run keeps in its run directory
    (``<store>/_runs/<study>/``, as ``oodstudy resume`` reads it)."""
    store = open_store(store)
    table = store.frame("thresholds", study=study)
    if table.empty:
        return None
    table = (
        table.drop(columns=[c for c in THRESHOLD_BOOKKEEPING if c in table])
        .sort_values("cell", kind="stable")
        .reset_index(drop=True)
    )
    search = None
    uri = getattr(store, "uri", None)
    if uri is not None:
        from study.errors import OodstudyError
        from study.tune.runner import read_spec_copy

        try:
            search = read_spec_copy(study, str(uri)).threshold
        except (OodstudyError, ValueError, OSError):
            search = None
        if search is not None and set(table["axis"]) != {search.axis}:
            search = None  # the spec copy is of another search
    trials = store.frame("trials", study=study, columns=["grid", "status", "score", "start_time"])
    return Thresholds(table, search, trials)
