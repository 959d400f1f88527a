"""Rows as Arrow: coerce reported rows to a table's schema, keep one row per key, and
hand Arrow tables to pandas with their types.  Pure functions, no I/O."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from study.errors import StoreError
from study.store.schema import ADDED_COLUMNS, KEYS, file_schema, table_schema


def coerce_rows(
    table: str,
    rows: list[dict[str, Any]] | pd.DataFrame | pa.Table,
    *,
    study: str,
    attempt: int | None = None,
    cell: str | None = None,
    now: dt.datetime | None = None,
) -> pa.Table:
    """Turn reported rows into a fragment table: the table's schema without ``study``.

    Missing optional columns become null; an unknown column is an error naming it.
    ``study``/``attempt``/``cell`` given as arguments fill rows that lack them (a row
    that says otherwise is an error); ``attempt`` defaults to 0 and ``written_at`` to
    ``now``.  If a key occurs twice, the row with the highest (attempt, written_at)
    is kept, the later one on a tie, so a fragment never holds a key twice.
    """
    schema = table_schema(table)
    if isinstance(rows, pd.DataFrame):
        given = [str(c) for c in rows.columns]
    elif isinstance(rows, pa.Table):
        given = rows.column_names
    else:
        given = list(dict.fromkeys(k for row in rows for k in row))
    unknown = [c for c in given if c not in schema.names]
    if unknown:
        raise StoreError(f"unknown column(s) {unknown} for table {table!r}; its columns are {schema.names}")
    n = len(rows)
    columns: dict[str, pa.Array] = {}
    for field in schema:
        if field.name not in given:
            columns[field.name] = pa.nulls(n, field.type)
            continue
        try:
            if isinstance(rows, pd.DataFrame):
                values = pa.array(rows[field.name], from_pandas=field.type != pa.float64())
            elif isinstance(rows, pa.Table):
                values = rows.column(field.name).combine_chunks()
            else:
                values = pa.array([row.get(field.name) for row in rows])
            if values.type != field.type:
                # Timestamps may carry nanoseconds the store does not keep; everything
                # else must convert exactly (3.5 is not an integer).
                values = values.cast(field.type, safe=not pa.types.is_timestamp(field.type))
            columns[field.name] = values
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise StoreError(
                f"column {field.name!r} of table {table!r} cannot be stored as {field.type}: {err}"
            ) from None
    now = now or dt.datetime.now(dt.timezone.utc)
    _check_fill(columns, "study", study)
    columns["attempt"] = pc.fill_null(_check_fill(columns, "attempt", attempt), 0)
    columns["cell"] = _check_fill(columns, "cell", cell)
    columns["written_at"] = pc.fill_null(columns["written_at"], pa.scalar(now, type=columns["written_at"].type))
    del columns["study"]
    out = pa.table(columns, schema=file_schema(table))
    return dedup_batch(table, out)


def _check_fill(columns: dict[str, pa.Array], name: str, value: Any) -> pa.Array:
    """Fill nulls of a column with ``value``; a non-null row that differs is an error."""
    column = columns[name]
    if value is None:
        return column
    scalar = pa.scalar(value, type=column.type)
    if column.null_count < len(column):
        differs = pc.not_equal(column, scalar)
        if pc.any(differs).as_py():
            found = pc.filter(column, differs)[0].as_py()
            raise StoreError(f"rows carry {name}={found!r} but {name}={value!r} was passed")
    return pc.fill_null(column, scalar)


def dedup_batch(table: str, rows: pa.Table) -> pa.Table:
    """Keep one row per key: the highest (attempt, written_at), later rows win ties."""
    keys = [k for k in KEYS[table] if k != "study"]
    groups = rows.group_by(keys, use_threads=False).aggregate([])
    if groups.num_rows == rows.num_rows:
        return rows
    order = pa.array(range(rows.num_rows), pa.int64())
    ranked = rows.append_column("_row", order).sort_by(
        [("attempt", "ascending"), ("written_at", "ascending"), ("_row", "ascending")]
    )
    last = ranked.group_by(keys, use_threads=False).aggregate([("_row", "last")])
    keep = pc.sort_indices(last.column("_row_last"))
    return rows.take(pc.take(last.column("_row_last"), keep))


def schema_problem(table: str, schema: pa.Schema) -> str | None:
    """Why a fragment's schema does not match its table's, or None when it matches."""
    expected = file_schema(table)
    added = ADDED_COLUMNS.get(table, [])
    missing = [f.name for f in expected if f.name not in schema.names and f.name not in added]
    extra = [n for n in schema.names if n not in expected.names]
    wrong = [
        f"{f.name} is {schema.field(f.name).type}, expected {f.type}"
        for f in expected
        if f.name in schema.names and not schema.field(f.name).type.equals(f.type)
    ]
    if not (missing or extra or wrong):
        return None
    details = []
    if missing:
        details.append(f"missing columns {missing}")
    if extra:
        details.append(f"unexpected columns {extra}")
    details.extend(wrong)
    return f"wrong schema for table {table!r}: " + "; ".join(details)


def to_pandas(data: pa.Table) -> pd.DataFrame:
    """Arrow to pandas keeping types: integers stay integers (nullable Int64 where
    there are nulls), strings are plain strings (never categoricals)."""
    fields = []
    for field in data.schema:
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_string_view(kind) or pa.types.is_large_string(kind):
            kind = pa.string()
        fields.append(field.with_type(kind))
    data = data.cast(pa.schema(fields, metadata=data.schema.metadata))
    frame = data.to_pandas(types_mapper=_nullable_integers)
    for i, field in enumerate(data.schema):
        if pa.types.is_integer(field.type) and data.column(i).null_count == 0:
            frame.isetitem(i, frame.iloc[:, i].to_numpy(dtype=field.type.to_pandas_dtype()))
    return frame


def _nullable_integers(kind: pa.DataType) -> Any:
    if pa.types.is_integer(kind):
        return pd.api.types.pandas_dtype(str(kind).capitalize().replace("Uint", "UInt"))
    return None
