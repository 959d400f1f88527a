"""The Parquet results store: append-only, hive-partitioned, readable by any tool.

A store is a root URI: a local directory (``./results``), ``file://...``, or any
filesystem pyarrow supports (``s3://bucket/prefix``, ``gs://bucket/prefix``).  All
I/O goes through ``pyarrow.fs``; nothing assumes a local disk.

Layout::

    <root>/_oodstudy.json                                {"schema_version": 1, "created": ...}
    <root>/<table>/study=<name>/<time>-<uuid>_<trial hash>_<min step>_<max step>.parquet
    <root>/<table>/study=<name>/<time>-<uuid>~<time>-<uuid>.parquet     (compacted)

Writes: every append is one whole new fragment with a unique name that sorts by write
time.  On filesystems with rename it is written under a hidden temp name
(``.<name>.<random>.tmp``) in the same directory and renamed into place; on object
stores (S3, GCS) the upload only becomes visible once complete.  So no reader ever
sees a partial file.  Fragments hold every column of the table schema except
``study``, which lives in the directory name (standard hive partitioning: pyarrow,
pandas, DuckDB and polars read the tree directly).  A fragment that holds one trial
says so in its name: the trial id's hash and the range of its steps.

Reads: every row has a key (``schema.KEYS``); when a key was written more than once
(a retried or restored trial re-reports a step) readers keep the row with the highest
``attempt``, then the latest ``written_at``, then the latest fragment name.  This is
cheap because a fragment never holds a key twice (appends and compaction see to it):
a key can only repeat across fragments of the same trial whose step ranges overlap,
which the names tell without opening a file.  Only those fragments are read to find
the (study, trial, step) groups that really repeat, and only those groups' rows go
through the window function; every other row is read as it is.

Compaction merges a partition's small fragments into one deduplicated fragment whose
Parquet footer lists the fragments it replaces; they are deleted only after the merged
fragment is in place, and a later ``compact`` finishes a crashed one.  Because readers
deduplicate, they return the same rows at every point of a compaction.

Rooms: :mod:`~study.store.schema` (tables, keys, study names),
:mod:`~study.store.uri` (filesystems), :mod:`~study.store.rows` (pure Arrow:
coercion, dedup), :mod:`~study.store.fragments` (what fragment names say),
:mod:`~study.store.sql` (SQL and the dedup plan), :mod:`~study.store.store` (the
:class:`Store`: open, append, frame, sql, counts) and
:mod:`~study.store.maintenance` (compact, validate).
"""

from __future__ import annotations

import importlib
from typing import Any

from study.errors import StoreError

# public name -> the module that defines it, imported on first use: importing a light
# module of this package (``study.store.schema``, as the trial config does) must not
# import duckdb or pandas, which a trial without a store never needs
_LAZY = {
    "Fragment": "study.store.fragments",
    "Problem": "study.store.maintenance",
    "MARKER": "study.store.schema",
    "coerce_rows": "study.store.rows",
    "DEFAULT_URI": "study.store.uri",
    "Store": "study.store.store",
    "join_uri": "study.store.uri",
    "open_filesystem": "study.store.uri",
    "Damage": "study.store.repair",
    "RepairReport": "study.store.repair",
    "check_intact": "study.store.repair",
    "damage": "study.store.repair",
    "repair_study": "study.store.repair",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'study.store' has no attribute {name!r}")


__all__ = [
    "DEFAULT_URI",
    "MARKER",
    "Fragment",
    "Problem",
    "Store",
    "StoreError",
    "coerce_rows",
    "join_uri",
    "open_filesystem",
]
__all__ += ["Damage", "RepairReport", "check_intact", "damage", "repair_study"]
