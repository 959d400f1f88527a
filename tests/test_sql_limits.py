"""``oodstudy store sql`` is bounded by construction (DuckDB's own memory and thread limits,
a timeout, a printed-row cap), and Ctrl-C during a query or a compaction ends as one line
with exit code 130, never DuckDB's own error, leaving the store as it was.

Real DuckDB on a real store in a tmp directory; each test takes seconds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from study.cli import main
from study.store import Store
from study.store.limits import MAX_ROWS, MEMORY_LIMIT, THREADS, TIMEOUT_S

# Queries of issue 21: 5 GB in 7 s, a query that runs for hours, and 3 million rows.
HUGE_LIST = "SELECT length(list(i)) FROM range(3000000000) t(i)"
ENDLESS = "SELECT sum(i % 7) FROM range(1000000000000) t(i)"
MANY_ROWS = "SELECT i FROM range(3000000) t(i)"
# Seconds of work whose end is not near (about 10 s on 2 cores): Ctrl-C must not wait for it.
LONG = "SELECT sum(i % 7) FROM range(3000000000) t(i)"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("limits") / "store"
    Store(str(root)).append(
        "trials", [{"trial_id": "t1", "status": "completed", "score": 1.0, "grid": "{}", "config": "{}"}], study="q"
    )
    return str(root)


def sql(store: str, query: str, *flags: str) -> tuple[int, float]:
    """Run ``store sql`` through the CLI; its exit code and seconds."""
    start = time.monotonic()
    code = main(["store", "sql", query, "--store", store, *flags])
    return code, time.monotonic() - start


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oodstudy: ") and "Traceback" not in err, err
    return lines[0]


def test_the_limits_are_duckdbs_own_settings_and_a_query_cannot_lift_them(store):
    settings = (
        Store(store)
        .sql(
            "SELECT current_setting('memory_limit') AS memory, current_setting('threads') AS threads, "
            "current_setting('temp_directory') AS spill FROM trials"
        )
        .to_dict("records")
    )
    assert settings == [{"memory": "1.8 GiB", "threads": THREADS, "spill": ""}]  # 2GB, as DuckDB prints it
    assert MEMORY_LIMIT == "2GB"
    for lift in ("SET memory_limit = '100GB'", "PRAGMA threads = 64", "RESET memory_limit"):
        with pytest.raises(Exception, match="statements are refused"):
            Store(store).sql(lift)


def test_memory_limit_refuses_the_query_in_one_line(store, capsys):
    code, seconds = sql(store, HUGE_LIST, "--memory-limit", "300MB")
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    line = one_line(err)
    assert "memory limit of 300MB" in line and "--memory-limit" in line
    assert seconds < 20


def test_timeout_stops_a_query_that_would_run_for_hours(store, capsys):
    code, seconds = sql(store, ENDLESS, "--timeout", "1")
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    line = one_line(err)
    assert "time limit of 1 s" in line and "--timeout" in line
    assert 1 <= seconds < 10
    assert TIMEOUT_S == 60


def test_rows_beyond_the_cap_are_counted_not_printed(store, capsys):
    code, _ = sql(store, MANY_ROWS)
    out, err = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[0].strip() == "i" and len(out.splitlines()) == 1 + MAX_ROWS
    assert out.splitlines()[-1].strip() == str(MAX_ROWS - 1)
    line = one_line(err)
    assert f"{3_000_000 - MAX_ROWS:,} more rows left out" in line and "--out FILE" in line
    assert sql(store, "SELECT i FROM range(10) t(i)", "--max-rows", "3")[0] == 0
    out, err = capsys.readouterr()
    assert out.split() == ["i", "0", "1", "2"] and "7 more rows left out" in one_line(err)
    assert sql(store, "SELECT i FROM range(10) t(i)")[0] == 0  # under the cap: all rows, no note
    out, err = capsys.readouterr()
    assert out.split() == ["i"] + [str(i) for i in range(10)] and err == ""


def test_out_writes_every_row_to_parquet_or_csv(store, tmp_path, capsys):
    parquet, csv = tmp_path / "all.parquet", tmp_path / "all.csv"
    assert sql(store, "SELECT i, i * 2 AS j FROM range(3000000) t(i) ORDER BY i", "--out", str(parquet))[0] == 0
    assert capsys.readouterr().out.strip() == f"wrote 3,000,000 rows to {parquet}"
    table = pq.read_table(parquet)
    assert table.num_rows == 3_000_000 and table.column_names == ["i", "j"]
    assert np.array_equal(table["j"].to_numpy(), 2 * np.arange(3_000_000))
    assert sql(store, "SELECT trial_id, score FROM trials", "--out", str(csv))[0] == 0
    assert pacsv.read_csv(csv).to_pylist() == [{"trial_id": "t1", "score": 1.0}]


def test_out_that_cannot_hold_the_rows_is_refused_and_leaves_no_file(store, tmp_path, capsys):
    csv = tmp_path / "lists.csv"
    assert sql(store, "SELECT [1, 2] AS l", "--out", str(csv))[0] == 2
    assert "--out" in one_line(capsys.readouterr().err) and not csv.exists()
    parquet = tmp_path / "stopped.parquet"
    assert sql(store, "SELECT i FROM range(1000000000000) t(i)", "--out", str(parquet), "--timeout", "1")[0] == 2
    assert "--timeout" in one_line(capsys.readouterr().err) and not parquet.exists()


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--memory-limit", "lots"], "--memory-limit 'lots': not a size DuckDB reads"),
        (["--timeout", "0"], "--timeout 0: give the seconds"),
        (["--timeout", "nan"], "--timeout nan: give the seconds"),
        (["--timeout", "-1"], "--timeout -1: give the seconds"),
        (["--threads", "0"], "--threads 0: give 1 to"),
        (["--threads", "100000"], "--threads 100000: give 1 to"),
        (["--max-rows", "-1"], "--max-rows -1: give the rows to print"),
        (["--out", "rows.txt"], "--out rows.txt: name a .csv or .parquet file"),
        (["--out", "/nonexistent-dir/rows.csv"], "--out /nonexistent-dir/rows.csv: no directory"),
    ],
)
def test_a_limit_that_cannot_work_is_refused_in_one_line(store, capsys, flags, phrase):
    assert sql(store, "SELECT 1", *flags)[0] == 2
    out, err = capsys.readouterr()
    assert out == "" and phrase in one_line(err)


def interrupt_after(seconds: float) -> tuple[threading.Timer, threading.Event]:
    """A real SIGINT to this process after ``seconds``, as Ctrl-C in a terminal sends; the
    timer (cancel it once the command returned) and whether it fired."""
    fired = threading.Event()

    def ctrl_c() -> None:
        fired.set()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, ctrl_c)
    timer.start()
    return timer, fired


def test_ctrl_c_during_a_query_exits_130_at_once(store, capsys):
    sql(store, "SELECT 1")  # imports done
    capsys.readouterr()
    timer, fired = interrupt_after(0.5)
    try:
        code, seconds = sql(store, LONG)
    finally:
        timer.cancel()
    out, err = capsys.readouterr()
    assert fired.is_set() and code == 130 and "Traceback" not in err and "interrupted" in err
    assert seconds < 5  # not when the query ends, nor at the timeout


def evals_table(trial: str, steps: int, lengths: int) -> pa.Table:
    """A trial's evals: each step at every (len_a, len_b) up to ``lengths``."""
    rows = steps * lengths * lengths
    return pa.table(
        {
            "trial_id": [trial] * rows,
            "step": np.repeat(np.arange(steps), lengths * lengths),
            "split": ["id"] * rows,
            "metric": ["exact_match"] * rows,
            "value": np.linspace(0, 1, rows),
            "len_a": np.tile(np.repeat(np.arange(lengths), lengths), steps),
            "len_b": np.tile(np.arange(lengths), steps * lengths),
        }
    )


KEY = ["trial_id", "step", "len_a", "len_b"]


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_ctrl_c_during_compact_exits_130_and_leaves_the_store_as_it_was(tmp_path, capsys):
    root = tmp_path / "store"
    store = Store(str(root))
    for attempt in range(8):  # a trial retried 8 times: seconds of DuckDB ranking to merge, a small write
        store.append("evals", evals_table("t0", 6000, 10), study="s1", attempt=attempt)
    before_files = files(root)
    before_rows = store.frame("evals").sort_values(KEY).reset_index(drop=True)
    main(["store", "ls", "--store", str(root)])  # imports done
    capsys.readouterr()
    timer, fired = interrupt_after(0.4)  # inside the merge query, which starts after 0.1 s and takes seconds
    try:
        code = main(["store", "compact", "--store", str(root)])
    finally:
        timer.cancel()
    out, err = capsys.readouterr()
    assert fired.is_set() and code == 130, (out, err)
    assert "Traceback" not in err and "Query interrupted" not in err and "interrupted" in err
    assert files(root) == before_files  # no merged fragment, no temp file, nothing deleted
    after_rows = Store(str(root)).frame("evals").sort_values(KEY).reset_index(drop=True)
    assert after_rows.equals(before_rows)


def test_ctrl_c_while_compact_deletes_what_it_merged_still_finishes_the_partition(tmp_path):
    root = tmp_path / "store"
    store = Store(str(root))
    for k in range(3):
        store.append("evals", evals_table(f"t{k}", 10, 2), study="s1")
    before_rows = store.frame("evals").sort_values(KEY).reset_index(drop=True)
    delete_file, calls = store.delete_file, []

    def ctrl_c_on_first_delete(path: str, **kwargs) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        delete_file(path, **kwargs)

    store.delete_file = ctrl_c_on_first_delete
    with pytest.raises(KeyboardInterrupt):
        store.compact()
    fresh = Store(str(root))
    assert len(fresh.fragments("evals", "s1")) == 1  # compacted: the merged fragment alone
    assert [p.severity for p in fresh.validate()] == []
    assert fresh.frame("evals").sort_values(KEY).reset_index(drop=True).equals(before_rows)


def test_a_reader_that_stops_early_ends_the_query_quietly(store):
    import subprocess
    import sys

    # `store sql ... | head -1`: the reader leaves after one line, the CLI must not print a traceback
    command = f"{sys.executable} -m study.cli store sql {MANY_ROWS!r} --store {store} --max-rows 3000000 | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell tool whose reader left
