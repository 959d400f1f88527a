"""``oodstudy store sql`` is a query tool, not a shell: DuckDB's own settings keep it
read-only over the store; outside readers of the tree skip the temp files of writers.

Refused: writing files (anywhere, the store included), reading files outside the store,
attaching databases, several statements, anything but a SELECT.  Every query the README
shows still works, and ``Store.sql(..., trusted=True)`` is the way for trusted code to
do more.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from study.cli import main
from study.errors import QueryError
from study.store import Store
from study.store.store import temp_name

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(str(tmp_path / "results"))
    for trial, score, cell in (("a", 0.5, "c1"), ("b", 0.9, "c1"), ("c", 0.7, "c2")):
        s.append(
            "trials",
            [{"trial_id": trial, "status": "completed", "score": score, "grid": "{}", "config": "{}"}],
            study="quickstart",
            cell=cell,
        )
        s.append(
            "evals",
            [
                {
                    "trial_id": trial,
                    "step": 10,
                    "split": "ood",
                    "metric": "exact_match",
                    "value": 0.0,
                    "len_a": 4,
                    "len_b": 4,
                }
            ],
            study="quickstart",
            cell=cell,
        )
    return s


def files_under(path: Path) -> set[str]:
    return {str(p) for p in path.rglob("*") if p.is_file()}


def refused(store: Store, query: str, capsys) -> str:
    """The one-line message of a query the CLI refuses (exit 2)."""
    assert main(["store", "sql", query, "--store", store.uri]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("oodstudy: "), err
    with pytest.raises(QueryError):
        store.sql(query)
    return err


def test_writes_are_refused_everywhere_and_nothing_is_written(store, tmp_path, capsys):
    before = files_under(tmp_path)
    partition = f"{store.root}/trials/study=quickstart"
    for query in (
        f"COPY (SELECT 1 AS x) TO '{tmp_path}/out.csv'",
        f"COPY (SELECT * FROM trials) TO '{partition}/foreign.parquet' (FORMAT parquet)",
        f"COPY (SELECT * FROM trials) TO '{store.fragments('trials')[0].path}' (FORMAT parquet, USE_TMP_FILE false)",
        "EXPORT DATABASE '/tmp/oodstudy-export'",
        "CREATE TABLE t AS SELECT 1",
    ):
        assert "statements are refused" in refused(store, query, capsys)
    assert files_under(tmp_path) == before
    assert [p for p in store.validate() if p.severity == "error"] == []


def test_files_outside_the_store_cannot_be_read(store, tmp_path, capsys):
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": [42]}), outside)
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    for query in (
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_parquet('{outside}')",
        f"SELECT * FROM '{tmp_path}/notes.csv'",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    ):
        assert "refused: Permission Error" in refused(store, query, capsys)
    # trusted code may: the documented way to do more
    assert store.sql(f"SELECT secret FROM read_parquet('{outside}')", trusted=True)["secret"].tolist() == [42]


def test_attach_several_statements_and_settings_are_refused(store, tmp_path, capsys):
    assert "ATTACH statements are refused" in refused(store, f"ATTACH '{tmp_path}/other.duckdb' AS other", capsys)
    assert "2 statements given" in refused(store, "SELECT 1; SELECT * FROM trials", capsys)
    assert "SET statements are refused" in refused(store, "SET enable_external_access = true", capsys)
    assert "PRAGMA statements are refused" in refused(store, "PRAGMA enable_profiling", capsys)
    assert "the query is empty" in refused(store, "", capsys)
    assert not (tmp_path / "other.duckdb").exists()


def test_every_query_in_the_readme_still_works(store, capsys):
    text = README.read_text()
    cli_queries = re.findall(r'oodstudy store sql "([^"]+)"', text)
    python_queries = re.findall(r'store\.sql\("""(.*?)"""\)', text, re.S)
    assert cli_queries and python_queries
    for query in cli_queries:
        assert main(["store", "sql", query, "--store", store.uri]) == 0, capsys.readouterr().err
        out, _ = capsys.readouterr()
        if "FROM thresholds" in query or "FROM claims" in query:  # none in this store: the query runs, empty
            continue
        assert "c1" in out and "0.9" in out
    for query in python_queries:
        best = store.sql(query)
        assert sorted(best["trial_id"]) == ["b", "c"]
    # the store's own views and DuckDB's catalog functions are still there
    assert store.sql("SELECT count(*) AS n FROM evals_raw")["n"].tolist() == [3]
    assert "score" in store.sql("DESCRIBE trials")["column_name"].tolist()
    assert store.sql("EXPLAIN SELECT * FROM trials").shape[0] >= 1


def test_outside_readers_of_the_tree_skip_a_killed_writers_temp_file(store):
    """A writer killed mid-write leaves ``.<name>.<random>.tmp``: hidden and not .parquet,
    so the documented read paths skip it."""
    partition = Path(store.root) / "evals" / "study=quickstart"
    frag = store.fragments("evals")[0]
    half = partition / temp_name(frag.name)
    half.write_bytes(Path(frag.path).read_bytes()[:100])  # a partial Parquet file
    assert half.name.startswith(".") and not half.name.endswith(".parquet")
    table_dir = f"{store.root}/evals/"
    assert len(pd.read_parquet(table_dir)) == 3
    assert pads.dataset(table_dir, partitioning="hive").to_table().num_rows == 3
    glob = f"{store.root}/evals/**/*.parquet"
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true)").fetchall() == [(3,)]
    assert len(store.frame("evals")) == 3


def test_the_arrow_reader_of_remote_stores_is_read_only_too(store):
    """Remote stores are read through pyarrow datasets registered with DuckDB: no file
    access is needed at all, and none is allowed."""
    arrow = Store(store.uri, create=False, reader="arrow")
    assert sorted(arrow.sql("SELECT trial_id FROM trials")["trial_id"]) == ["a", "b", "c"]
    with pytest.raises(QueryError, match="refused: Permission Error"):
        arrow.sql("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryError, match="COPY statements are refused"):
        arrow.sql(f"COPY trials TO '{store.root}/copy.csv'")
