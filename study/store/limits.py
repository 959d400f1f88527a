"""The limits of a query from outside (``oodstudy store sql``, ``Store.sql``), in one place.

DuckDB's own settings, set by :func:`study.store.sql.lock_down` before it locks the
connection's configuration, so that the query cannot lift them; ``store sql``'s flags
``--memory-limit``, ``--threads``, ``--timeout`` and ``--max-rows`` change them.  No heavy
imports here: the CLI reads these defaults when it builds its parser.
"""

from __future__ import annotations

from dataclasses import dataclass

MEMORY_LIMIT = "2GB"  # DuckDB's memory_limit; nothing spills to disk (no temp_directory)
THREADS = 2  # DuckDB's threads
TIMEOUT_S = 60.0  # the query is interrupted after this many seconds
MAX_ROWS = 1000  # rows `store sql` prints; `--out FILE` writes them all


@dataclass(frozen=True)
class QueryLimits:
    """What one query from outside may use: DuckDB's memory_limit (a size DuckDB reads, e.g.
    ``"2GB"``), its threads, and the seconds before it is interrupted."""

    memory_limit: str = MEMORY_LIMIT
    threads: int = THREADS
    timeout_s: float = TIMEOUT_S
