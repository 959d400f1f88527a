"""The row shapes of the results store: one place that says what every table holds.

Trials report rows as plain dicts; the driver appends them to the store; analysis
reads them back.  A row's *key* names what it measures; when the same key is written
twice (a retried or restored trial re-reports a step) readers keep the row with the
highest ``attempt``, then the most recent ``written_at``.
"""

from __future__ import annotations

import re

import pyarrow as pa

from study.errors import StoreError

SCHEMA_VERSION = 1
# Trial statuses after which a trial trains no more (trials.status; see the trials schema).
ENDED = ("completed", "converged", "diverged", "pruned", "failed")

# The file at a store's root that says it is a store: {"schema_version": 1, "created": ...}
MARKER = "_oodstudy.json"

# Study names become directory names (``study=<name>``): characters that need no escaping.
STUDY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
STUDY_NAME = re.compile(STUDY_NAME_PATTERN)

# Columns every table carries.  ``study`` is the hive partition column
# (``<root>/<table>/study=<name>/``); ``cell`` holds the trial's *grid point* id: every
# grid axis, seeds included (a short stable string such as
# ``"model.size=nano|train.seed=0"``; see ``study.config.SweepSpec``).  The column keeps
# its first name; analysis reads it as ``grid_point``.
_COMMON = [
    ("study", pa.string()),
    ("trial_id", pa.string()),
    ("attempt", pa.int64()),
    ("cell", pa.string()),
    ("written_at", pa.timestamp("us", tz="UTC")),
]

TABLES: dict[str, pa.Schema] = {
    # One row per trial (rewritten as the trial progresses; the latest wins).
    "trials": pa.schema(
        _COMMON
        + [
            ("grid", pa.string()),  # JSON object: the grid point's axis values
            ("config", pa.string()),  # JSON object: the full nested trial config
            ("status", pa.string()),  # running | completed | failed | diverged | pruned
            ("start_time", pa.timestamp("us", tz="UTC")),
            ("end_time", pa.timestamp("us", tz="UTC")),
            ("node", pa.string()),
            ("device", pa.string()),
            ("n_params", pa.int64()),
            ("steps", pa.int64()),  # steps trained so far
            ("score", pa.float64()),  # the study's tuning metric (ID), latest value
            ("error", pa.string()),
        ]
    ),
    # Training metrics per step: loss, lr, grad_norm, examples_per_s, ...
    "curves": pa.schema(
        _COMMON
        + [
            ("step", pa.int64()),
            ("metric", pa.string()),
            ("value", pa.float64()),
        ]
    ),
    # One row per trial x step x evaluation condition x metric.
    # Arithmetic conditions use len_a/len_b; in-context conditions use
    # n_context/shift/shift_value.  Unused condition columns are null.
    "evals": pa.schema(
        _COMMON
        + [
            ("step", pa.int64()),
            ("split", pa.string()),  # "id" | "ood"
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("len_a", pa.int64()),
            ("len_b", pa.int64()),
            ("n_context", pa.int64()),
            ("shift", pa.string()),
            ("shift_value", pa.float64()),
        ]
    ),
    # Small per-step summaries for mechanistic analyses.  Two shapes of row:
    # points (kind "pca_units_digit": the 2-D PCA of the hidden state at the units-digit
    # position over a grid of (a, b); point/label/a/b/pc1/pc2 set) and structure scores
    # (kind "probe_digit", "silhouette_digit", "repr_equivalence", "probe_coefficients",
    # ...; position/layer/value set, plus length or shift/shift_value).  Columns a row
    # shape does not use are null; stores written before the score columns existed
    # read them as null.
    "representations": pa.schema(
        _COMMON
        + [
            ("step", pa.int64()),
            ("kind", pa.string()),  # e.g. "pca_units_digit", "probe_digit"
            ("split", pa.string()),
            ("point", pa.int64()),  # index of the probed input
            ("label", pa.string()),  # e.g. "(a+b) mod 10 = 7"
            ("a", pa.int64()),
            ("b", pa.int64()),
            ("pc1", pa.float64()),
            ("pc2", pa.float64()),
            ("position", pa.int64()),  # arithmetic: answer digit i (0 = units); icl: k examples seen
            ("layer", pa.int64()),  # -1: the final hidden state (after the last block and norm)
            ("length", pa.int64()),  # arithmetic: operand length of the scored inputs
            ("shift", pa.string()),  # icl: the shift axis of the scored prompts ("none" in distribution)
            ("shift_value", pa.float64()),
            ("value", pa.float64()),  # the score
            ("head", pa.int64()),  # attention scores: the head of block ``layer``
        ]
    ),
    # One row per cell of a threshold search (study.tune.threshold): where along the search
    # axis P(success) reaches the target, with its credible interval, rewritten whenever the
    # cell's search changes (the newest row of a cell wins: ``attempt`` counts the seeds
    # returned, then ``written_at``).  ``cell`` is the grid point of the other axes; no trial_id.
    "thresholds": pa.schema(
        _COMMON
        + [
            ("axis", pa.string()),  # the searched trial config key, e.g. task.mix_weight
            ("criterion", pa.string()),  # one seed's success, e.g. "id_exact_match >= 0.9"
            ("target", pa.float64()),  # P(success) at the threshold
            ("estimate", pa.float64()),  # posterior median of the threshold (axis units; index for values)
            ("low", pa.float64()),  # credible interval, axis units
            ("high", pa.float64()),
            ("level", pa.float64()),  # the interval's credible level, e.g. 0.9
            ("width", pa.float64()),
            ("tolerance", pa.float64()),
            ("low_value", pa.string()),  # the interval's ends as axis values (for values: the bracketing entries)
            ("high_value", pa.string()),
            ("in_range", pa.bool_()),  # does the interval reach into the axis's range
            ("trials", pa.int64()),  # seeds handed out (the budget counts these)
            ("outcomes", pa.int64()),  # seeds with an outcome
            ("successes", pa.int64()),
            ("errors", pa.int64()),  # seeds that failed without an outcome
            ("points", pa.int64()),  # distinct axis values trained
            ("seeds_per_point", pa.int64()),
            ("budget", pa.int64()),
            ("stopped", pa.string()),  # converged | budget | searching
        ]
    ),
    # One row per claim of the spec's ``expect`` list and cell it applies to (analysis.claims):
    # the verdict and the seed distribution measured, rewritten at the end of every run and
    # resume and by ``oodstudy check`` (the newest row of a key wins).  ``cell`` is the seedless
    # cell; no trial_id.
    "claims": pa.schema(
        _COMMON
        + [
            ("claim", pa.int64()),  # the claim's index in expect
            ("finding", pa.string()),
            ("source", pa.string()),  # paper, table or figure
            ("metric", pa.string()),  # the per-condition metric read
            ("condition", pa.string()),  # e.g. "split=ood, len_a=6"
            ("verdict", pa.string()),  # reproduced | not reproduced | not measurable yet
            ("n", pa.int64()),  # seeds with a value
            ("median", pa.float64()),
            ("q25", pa.float64()),
            ("q75", pa.float64()),
            ("min", pa.float64()),
            ("max", pa.float64()),
            ("held", pa.int64()),  # seeds that satisfy the comparison
            ("published", pa.string()),  # e.g. ">= 0.9 (tolerance 0.05)" or ">= 3x task.mix_weight=1"
            ("reference", pa.float64()),  # the other cell's median (claims with than)
            ("unfinished", pa.int64()),  # trials of the cell still to end
        ]
    ),
}

# Columns added to a table after stores were first written: a fragment written before
# may lack them, and readers see null there (so old stores stay readable as they are).
ADDED_COLUMNS: dict[str, list[str]] = {
    "representations": ["position", "layer", "length", "shift", "shift_value", "value", "head"],
}

# The columns that identify what a row measures (``attempt`` and ``written_at``
# decide which of several rows with the same key is current).
KEYS: dict[str, list[str]] = {
    "trials": ["study", "trial_id"],
    "curves": ["study", "trial_id", "step", "metric"],
    "evals": [
        "study",
        "trial_id",
        "step",
        "split",
        "metric",
        "len_a",
        "len_b",
        "n_context",
        "shift",
        "shift_value",
    ],
    "representations": [
        "study",
        "trial_id",
        "step",
        "kind",
        "split",
        "point",
        "position",
        "layer",
        "length",
        "shift",
        "shift_value",
        "head",
    ],
    "thresholds": ["study", "cell"],
    "claims": ["study", "claim", "cell"],
}

# Columns that group a table's keys into what one report writes at once.
GROUP_COLUMNS: dict[str, list[str]] = {
    t: [c for c in ("study", "trial_id", "cell", "step") if c in KEYS[t]] for t in TABLES
}


def table_schema(table: str) -> pa.Schema:
    """The schema of a table, or a StoreError naming the tables that exist."""
    if table not in TABLES:
        raise StoreError(f"unknown table {table!r}; tables are {sorted(TABLES)}")
    return TABLES[table]


def file_schema(table: str) -> pa.Schema:
    """What a fragment file holds: the table schema without the partition column."""
    schema = table_schema(table)
    return schema.remove(schema.get_field_index("study"))


def check_study(study: str) -> str:
    """``study`` if it is a valid study name, else a StoreError saying what is allowed."""
    if not isinstance(study, str) or not STUDY_NAME.match(study):
        raise StoreError(f"bad study name {study!r}: use letters, digits and . _ + - (it becomes a directory name)")
    return study
