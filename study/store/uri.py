"""Store URIs: a local path or any filesystem pyarrow supports, and joining paths onto one."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from study.errors import StoreError

DEFAULT_URI = "./results"  # the store commands use when given none

# Filesystems without rename, where an upload becomes visible only once complete.
OBJECT_STORES = {"s3", "gcs"}


def open_filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, root path inside it)`` for a store URI.

    - a plain path (no ``scheme://``) is a local directory, made absolute;
    - ``s3://bucket/prefix?endpoint_override=http://host:port&region=...`` builds a
      pyarrow S3FileSystem from the query parameters, then ``storage_options``; the
      endpoint falls back to ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL``; small
      files are sent in a single PUT (``allow_delayed_open``);
    - anything else goes to ``pyarrow.fs.FileSystem.from_uri`` (``file://``, ``gs://``,
      ``hdfs://``...), or to the filesystem class with ``storage_options`` when given.
    """
    options = dict(storage_options or {})
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)).replace(os.sep, "/")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "s3a"):
        query = dict(parse_qsl(parts.query))
        merged: dict[str, Any] = {k: _parse_option(v) for k, v in query.items()}
        merged.update(options)
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_override" not in merged:
            merged["endpoint_override"] = endpoint
        merged.setdefault("allow_delayed_open", True)
        try:
            fs = pafs.S3FileSystem(**merged)
        except TypeError as err:
            raise StoreError(f"bad S3 option in {uri!r}: {err}") from None
        return fs, (parts.netloc + parts.path).rstrip("/")
    if options and scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(**options), (parts.netloc + parts.path).rstrip("/")
    if options:
        raise StoreError(f"storage_options are supported for s3:// and gs:// stores, not {scheme}://")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise StoreError(f"cannot open store URI {uri!r}: {err}; use a local path, file://, s3:// or gs://") from None
    return fs, path.rstrip("/") or path


def _parse_option(value: str) -> Any:
    """A URI query value as Python: 'true'/'false' become booleans, numbers numbers."""
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...``, keeping a URI's query (e.g. ``?endpoint_override=...``) at the end."""
    root, _, query = base.partition("?")
    return "/".join([root.rstrip("/"), *parts]) + (f"?{query}" if query else "")
