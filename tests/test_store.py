"""The results store: what a writer may rely on and what every reader sees.

Real files everywhere (a tmp directory, or an S3-compatible server on loopback).
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings

import boto3
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from study.store.schema import ADDED_COLUMNS, SCHEMA_VERSION
from study.store import MARKER, Store, StoreError
from study.cli import main as store_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTC = dt.timezone.utc


def eval_rows(trial: str, steps: list[int], value: float = 0.5, lengths: int = 3) -> list[dict]:
    """What a trial reports: one row per step x (len_a, len_b) x split."""
    return [
        {
            "trial_id": trial,
            "step": step,
            "split": "id" if a <= 2 and b <= 2 else "ood",
            "metric": "exact_match",
            "value": value,
            "len_a": a,
            "len_b": b,
        }
        for step in steps
        for a in range(1, lengths + 1)
        for b in range(1, lengths + 1)
    ]


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("study", "trial_id", "step", "len_a", "len_b") if c in frame]
    return frame.sort_values(keys).reset_index(drop=True)


@pytest.fixture(params=["duckdb", "arrow"])
def reader(request: pytest.FixtureRequest) -> str:
    """Both read paths: DuckDB's Parquet reader and pyarrow.dataset scanned by DuckDB."""
    return request.param


# ----------------------------------------------------------------------------- writing and reading


def test_append_then_frame_gives_typed_columns(tmp_path, reader):
    store = Store(str(tmp_path / "results"), reader=reader)
    path = store.append("evals", eval_rows("t1", [100, 200]), study="s1", cell="c1")
    assert path.endswith(".parquet") and "/evals/study=s1/" in path

    frame = store.frame("evals")
    assert len(frame) == 18
    assert set(frame["study"]) == {"s1"} and set(frame["cell"]) == {"c1"}
    assert not isinstance(frame["study"].dtype, pd.CategoricalDtype)
    assert pd.api.types.is_string_dtype(frame["study"]) and pd.api.types.is_string_dtype(frame["split"])
    assert frame["step"].dtype == "int64" and frame["len_a"].dtype == "int64"
    assert frame["attempt"].dtype == "int64" and (frame["attempt"] == 0).all()
    assert frame["n_context"].dtype == "Int64" and frame["n_context"].isna().all()  # optional, absent
    assert frame["value"].dtype == "float64"
    assert str(frame["written_at"].dtype) == "datetime64[us, UTC]"

    picked = store.frame("evals", study="s1", where="split = 'ood' AND step = 200", columns=["trial_id", "len_a"])
    assert list(picked.columns) == ["trial_id", "len_a"] and len(picked) == 5
    assert store.frame("evals", study="other").empty
    assert store.studies() == ["s1"]


def test_append_checks_columns_and_fills_driver_columns(tmp_path):
    store = Store(str(tmp_path / "results"))
    with pytest.raises(StoreError, match="'valeu'"):
        store.append("evals", [{"trial_id": "t", "step": 1, "valeu": 0.1}], study="s")
    with pytest.raises(StoreError, match="unknown table"):
        store.append("evalz", [{"trial_id": "t"}], study="s")
    with pytest.raises(StoreError, match="'step'"):
        store.append("evals", [{"trial_id": "t", "step": 1.5}], study="s")
    with pytest.raises(StoreError, match="study"):
        store.append("evals", [{"trial_id": "t", "study": "elsewhere"}], study="s")
    with pytest.raises(StoreError, match="bad study name"):
        store.append("evals", [{"trial_id": "t"}], study="../up")
    assert store.append("evals", [], study="s") == ""

    rows = pd.DataFrame({"trial_id": ["t", "t"], "step": [1, 2], "metric": ["loss", "loss"], "value": [0.5, None]})
    store.append("curves", rows, study="s", attempt=2, cell="c")
    curves = sorted_frame(store.frame("curves"))
    assert list(curves["attempt"]) == [2, 2] and list(curves["cell"]) == ["c", "c"]
    assert curves["value"].isna().tolist() == [False, True]
    assert curves["written_at"].notna().all()
    assert store.counts().to_dict("records") == [{"study": "s", "table": "curves", "rows": 2, "fragments": 1}]


def test_restored_trial_rows_are_deduplicated(tmp_path, reader):
    store = Store(str(tmp_path / "results"), reader=reader)
    first = dt.datetime(2025, 1, 1, tzinfo=UTC)
    # attempt 0 reports steps 100..300; the trial is restored from step 200 and
    # re-reports 300 as attempt 1 (stamped *earlier*: attempt still wins) ...
    store.append(
        "evals", [dict(r, written_at=first) for r in eval_rows("t1", [100, 200, 300], 0.1)], study="s", attempt=0
    )
    earlier = first - dt.timedelta(hours=1)
    store.append("evals", [dict(r, written_at=earlier) for r in eval_rows("t1", [300], 0.3)], study="s", attempt=1)
    # ... and a restore that keeps the attempt number re-reports 300 again: latest write wins.
    store.append("evals", eval_rows("t1", [300], 0.2), study="s", attempt=0)
    store.append("evals", eval_rows("t1", [300], 0.4), study="s", attempt=1)
    # a second trial that was never restored, and a trial row rewritten as it progresses
    store.append("evals", eval_rows("t2", [100], 0.9), study="s")
    store.append("trials", [{"trial_id": "t1", "status": "running", "steps": 100}], study="s")
    store.append("trials", [{"trial_id": "t1", "status": "completed", "steps": 300}], study="s")

    evals = sorted_frame(store.frame("evals"))
    assert len(evals) == 9 * 4
    at_300 = evals[(evals["trial_id"] == "t1") & (evals["step"] == 300)]
    assert len(at_300) == 9 and set(at_300["value"]) == {0.4} and set(at_300["attempt"]) == {1}
    assert set(evals[evals["step"] < 300]["value"]) == {0.1, 0.9}
    assert store.frame("trials")[["trial_id", "status", "steps"]].to_dict("records") == [
        {"trial_id": "t1", "status": "completed", "steps": 300}
    ]
    # the raw view keeps every stored row; the deduplicated views agree with frame()
    counts = store.sql("SELECT (SELECT count(*) FROM evals_raw) AS raw, (SELECT count(*) FROM evals) AS current")
    assert counts.to_dict("records") == [{"raw": 9 * 7, "current": 9 * 4}]
    # a filter on a non-key column applies to the current rows, never to older ones
    assert store.frame("evals", where="value = 0.3").empty


def test_a_batch_that_repeats_a_key_keeps_its_last_row(tmp_path):
    store = Store(str(tmp_path / "results"))
    rows = eval_rows("t1", [100], 0.1) + eval_rows("t1", [100], 0.7)
    store.append("evals", rows, study="s")
    frame = store.frame("evals")
    assert len(frame) == 9 and set(frame["value"]) == {0.7}


def test_both_read_paths_agree(tmp_path):
    root = str(tmp_path / "results")
    writer = Store(root)
    for t in range(3):
        writer.append("evals", eval_rows(f"t{t}", [100, 200], 0.1 * t), study="a", attempt=0)
    writer.append("evals", eval_rows("t1", [200], 0.8), study="a", attempt=1)
    writer.append("evals", eval_rows("t9", [100], 0.5), study="b")
    query = "SELECT study, trial_id, step, len_a, len_b, value FROM evals ORDER BY ALL"
    native = Store(root, reader="duckdb")
    arrow = Store(root, reader="arrow")
    pd.testing.assert_frame_equal(native.sql(query), arrow.sql(query))
    pd.testing.assert_frame_equal(sorted_frame(native.frame("evals")), sorted_frame(arrow.frame("evals")))
    pd.testing.assert_frame_equal(native.counts(), arrow.counts())


# ----------------------------------------------------------------------------- concurrency and crashes


def _append_worker(root: str, worker: int, appends: int) -> None:
    store = Store(root)
    for i in range(appends):
        store.append("evals", eval_rows(f"w{worker}", [i]), study="s", cell=f"cell{worker}")


class _CreatorArrivesAfterMarkerCheck(pafs.LocalFileSystem):
    """The local filesystem, except that right after the opener finds no marker, another
    process finishes creating the store (marker first, then its first table): the
    interleaving that made one of four concurrent appenders refuse a new store."""

    root = ""
    fired = False

    def get_file_info(self, paths):
        infos = super().get_file_info(paths)
        if not self.fired and isinstance(paths, str) and paths.endswith(MARKER):
            self.fired = True
            Store(self.root).append("evals", eval_rows("other", [0]), study="s")
        return infos


def test_a_store_created_by_another_process_while_opening_is_opened(tmp_path, monkeypatch):
    root = str(tmp_path / "results")
    os.mkdir(root)  # the other process has made the directory, not yet the marker
    racing = _CreatorArrivesAfterMarkerCheck()
    racing.root = root
    monkeypatch.setattr("study.store.store.open_filesystem", lambda uri, options=None: (racing, root))
    store = Store(root)
    assert racing.fired
    store.append("evals", eval_rows("mine", [0]), study="s")
    assert set(Store(root).frame("evals")["trial_id"]) == {"other", "mine"}


@pytest.mark.slow
def test_four_processes_appending_concurrently_lose_no_row(tmp_path):
    root = str(tmp_path / "results")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_worker, args=(root, w, 10)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    store = Store(root)
    frame = store.frame("evals")
    assert len(frame) == 4 * 10 * 9
    assert frame.groupby("trial_id").size().to_dict() == {f"w{w}": 90 for w in range(4)}
    assert len(store.fragments("evals")) == 40
    assert store.validate() == []


KILLED_WRITER = """
import sys, pyarrow as pa
from study.store import Store
store = Store(sys.argv[1])
n = 200_000
print("ready", flush=True)
i = 0
while True:
    rows = pa.table({"trial_id": pa.array([f"t{i}"] * n), "step": pa.array(range(n), pa.int64()),
                     "metric": pa.array(["loss"] * n), "value": pa.array([0.5] * n)})
    store.append("curves", rows, study="s")
    i += 1
"""


def _kill_a_writer_mid_write(root: str) -> bool:
    """Start a writer, SIGKILL it while a fragment is being written; True if it left
    its temp file behind (the kill did land inside a write)."""
    partition = os.path.join(root, "curves", "study=s")
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, root], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = os.listdir(partition) if os.path.isdir(partition) else []
            if sum(n.endswith(".parquet") for n in names) >= 2 and any(n.endswith(".tmp") for n in names):
                break
            time.sleep(0.002)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    return any(n.endswith(".tmp") for n in os.listdir(partition))


def test_writer_killed_mid_write_leaves_no_partial_fragment(tmp_path):
    root = str(tmp_path / "results")
    Store(root)
    assert any(_kill_a_writer_mid_write(root) for _ in range(3))
    store = Store(root)
    curves = store.frame("curves")
    sizes = curves.groupby("trial_id").size()
    assert len(sizes) >= 2 and (sizes == 200_000).all()  # whole fragments only
    # other readers of the directory see the same whole fragments and skip the temp file
    direct = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{root}/curves/*/*.parquet', hive_partitioning=true)"
    ).fetchall()[0][0]
    assert direct == len(curves)
    assert pads.dataset(f"{root}/curves", format="parquet", partitioning="hive").count_rows() == len(curves)
    assert [p for p in store.validate() if p.severity == "error"] == []


def test_other_tools_read_the_store_directory(tmp_path):
    root = tmp_path / "results"
    store = Store(str(root))
    store.append("evals", eval_rows("t1", [100]), study="s1")
    store.append("evals", eval_rows("t2", [100]), study="s2")
    (root / "evals" / "study=s1" / ".half-written.parquet.1234.tmp").write_bytes(b"PAR1 partial")

    through_duckdb = duckdb.sql(
        f"SELECT study, count(*) AS n FROM read_parquet('{root}/evals/*/*.parquet', hive_partitioning=true) "
        f"GROUP BY study ORDER BY study"
    ).fetchall()
    assert through_duckdb == [("s1", 9), ("s2", 9)]
    table = pads.dataset(str(root / "evals"), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 18 and set(table.column("study").to_pylist()) == {"s1", "s2"}
    assert len(pd.read_parquet(root / "evals")) == 18


# ----------------------------------------------------------------------------- compaction


def _fill_for_compaction(store: Store) -> pd.DataFrame:
    for t in range(4):
        store.append("evals", eval_rows(f"t{t}", [100, 200], 0.1), study="s", attempt=0)
        store.append("evals", eval_rows(f"t{t}", [300], 0.2), study="s", attempt=0)
    store.append("evals", eval_rows("t0", [300], 0.5), study="s", attempt=1)
    store.append("evals", eval_rows("t1", [300], 0.6), study="s", attempt=0)
    store.append("evals", eval_rows("x", [100]), study="other")
    return sorted_frame(store.frame("evals"))


def test_compaction_keeps_the_current_rows(tmp_path, reader):
    store = Store(str(tmp_path / "results"), reader=reader)
    before = _fill_for_compaction(store)
    written = store.compact()
    assert len(written) == 1  # study s; the single fragment of study other is left alone
    assert len(store.fragments("evals", "s")) == 1
    pd.testing.assert_frame_equal(sorted_frame(store.frame("evals")), before)
    assert store.compact() == []  # nothing left to merge
    # a trial restored after compaction still replaces its compacted rows
    store.append("evals", eval_rows("t2", [300], 0.9), study="s", attempt=1)
    after = sorted_frame(store.frame("evals"))
    assert len(after) == len(before)
    assert set(after[(after["trial_id"] == "t2") & (after["step"] == 300)]["value"]) == {0.9}
    assert store.validate() == []


def test_fragments_written_before_the_score_columns_read_them_as_null(tmp_path, reader):
    """A store written before ``representations`` had its score columns stays readable:
    the old fragments read as null there, validate, and compact with the new ones."""
    store = Store(str(tmp_path / "results"), reader=reader)
    point = {
        "trial_id": "t1",
        "step": 100,
        "kind": "pca_units_digit",
        "split": "id",
        "point": 0,
        "label": "7",
        "a": 3,
        "b": 4,
        "pc1": 0.5,
        "pc2": -0.5,
    }
    store.append("representations", [point], study="s")
    (old,) = store.fragments("representations", "s")
    written = pq.read_table(old.path)
    pq.write_table(written.drop_columns(ADDED_COLUMNS["representations"]), old.path)  # as an old store has it
    score = {
        "trial_id": "t1",
        "step": 200,
        "kind": "probe_digit",
        "split": "id",
        "position": 0,
        "layer": -1,
        "length": 3,
        "value": 0.75,
    }
    store.append("representations", [score], study="s")

    frame = store.frame("representations", study="s").sort_values("step").reset_index(drop=True)
    assert frame["kind"].tolist() == ["pca_units_digit", "probe_digit"]
    assert frame["value"].isna().tolist() == [True, False] and frame["value"][1] == 0.75
    assert frame["position"].isna().tolist() == [True, False] and frame["pc1"][0] == 0.5
    assert store.validate() == []
    assert len(store.compact()) == 1
    after = store.frame("representations", study="s").sort_values("step").reset_index(drop=True)
    pd.testing.assert_frame_equal(after.drop(columns="written_at"), frame.drop(columns="written_at"))
    assert store.validate() == []  # the merged fragment has every column


class Crash(Exception):
    pass


@pytest.mark.parametrize("deleted_before_crash", [0, 3])
def test_a_crashed_compaction_reads_correctly_and_is_finished_by_the_next(tmp_path, monkeypatch, deleted_before_crash):
    root = str(tmp_path / "results")
    store = Store(root)
    before = _fill_for_compaction(store)
    n_fragments = len(store.fragments("evals", "s"))
    deletions = []

    def delete_then_crash(path: str) -> None:
        if len(deletions) == deleted_before_crash:
            raise Crash(path)
        deletions.append(path)
        os.remove(path)

    monkeypatch.setattr(store, "delete_file", delete_then_crash)
    with pytest.raises(Crash):
        store.compact("s")
    monkeypatch.undo()

    # the merged fragment and (some of) the fragments it replaces are all visible ...
    assert len(Store(root).fragments("evals", "s")) == n_fragments + 1 - deleted_before_crash
    for path_reader in ("duckdb", "arrow"):
        pd.testing.assert_frame_equal(sorted_frame(Store(root, reader=path_reader).frame("evals")), before)
    problems = Store(root).validate()
    assert problems and all(p.severity == "warning" and "compact" in p.message for p in problems)
    # ... and the next compaction finishes the job
    Store(root).compact()
    assert len(Store(root).fragments("evals", "s")) == 1
    pd.testing.assert_frame_equal(sorted_frame(Store(root).frame("evals")), before)
    assert Store(root).validate() == []


# ----------------------------------------------------------------------------- damaged stores


def test_a_corrupt_or_foreign_fragment_is_reported_and_skipped(tmp_path, reader):
    root = tmp_path / "results"
    store = Store(str(root), reader=reader)
    store.append("evals", eval_rows("t1", [100]), study="s")
    store.append("evals", eval_rows("t2", [100]), study="s")
    garbage = root / "evals" / "study=s" / "x.parquet"
    garbage.write_bytes(b"this is not parquet at all")
    foreign = root / "evals" / "study=s" / "y.parquet"
    pq.write_table(pa.table({"something": [1, 2, 3]}), foreign)
    (root / "notes").mkdir()

    problems = store.validate()
    by_path = {p.path: p for p in problems}
    assert "not a readable Parquet file" in by_path[str(garbage)].message
    assert "wrong schema" in by_path[str(foreign)].message
    assert "unknown entry" in by_path[str(root / "notes")].message

    with pytest.warns(UserWarning) as caught:
        frame = store.frame("evals")
    assert len(frame) == 18
    messages = " ".join(str(w.message) for w in caught)
    assert str(garbage) in messages and str(foreign) in messages
    with pytest.warns(UserWarning, match="skipping unreadable fragment"):
        assert store.sql("SELECT count(*) AS n FROM evals")["n"].tolist() == [18]
    # a damaged file that looks like the store's own is skipped by compaction too
    truncated = root / "evals" / "study=s" / "20250101T000000000000Z-0123456789ab.parquet"
    truncated.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.warns(UserWarning, match=truncated.name):
        assert len(store.compact()) == 1
    assert garbage.exists() and foreign.exists() and truncated.exists()  # never deleted
    assert len(store.fragments("evals")) == 4
    with pytest.warns(UserWarning):
        assert len(Store(str(root), reader=reader).frame("evals")) == 18


def test_validate_warns_about_old_temp_files_and_flags_misnamed_fragments(tmp_path, capsys):
    root = tmp_path / "results"
    store = Store(str(root))
    path = store.append("evals", eval_rows("t1", [100, 200]), study="s")
    temp = root / "evals" / "study=s" / ".crashed.parquet.0a1b2c3d.tmp"
    temp.write_bytes(b"PAR1")
    hour_ago = time.time() - 3600
    os.utime(temp, (hour_ago, hour_ago))
    problems = store.validate()
    assert [(p.path, p.severity) for p in problems] == [(str(temp), "warning")]
    assert store_cli(["store", "validate", "--store", str(root)]) == 0  # warnings alone pass
    assert "temp file" in capsys.readouterr().out

    # readers trust a fragment's name to say which trial and steps it holds
    misnamed = path.replace("_100_200.parquet", "_500_600.parquet")
    os.rename(path, misnamed)
    problems = store.validate()
    assert [p.path for p in problems if p.severity == "error"] == [misnamed]


def test_store_of_another_schema_version_is_refused(tmp_path):
    root = tmp_path / "results"
    Store(str(root))
    (root / MARKER).write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "created": "x"}))
    with pytest.raises(StoreError) as error:
        Store(str(root))
    message = str(error.value)
    assert f"version {SCHEMA_VERSION + 1}" in message and f"version {SCHEMA_VERSION}" in message
    assert "new store" in message


def test_a_path_that_is_not_a_store_is_refused_clearly(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not an oodstudy store") as error:
        Store(str(occupied))
    assert str(occupied) in str(error.value) and MARKER in str(error.value)
    assert (occupied / "thesis.tex").read_text() == "precious"

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store(str(a_file))
    with pytest.raises(StoreError, match="no store"):
        Store(str(tmp_path / "missing"), create=False)

    empty = tmp_path / "empty"
    (empty / "_runs").mkdir(parents=True)  # tool-private entries do not make it "not empty"
    Store(str(empty))
    assert Store(str(empty)).validate() == []
    assert json.loads((empty / MARKER).read_text())["schema_version"] == SCHEMA_VERSION
    Store(f"file://{empty}", create=False)  # a file:// URI names the same store


# ----------------------------------------------------------------------------- S3-compatible server


def test_s3_store_through_an_endpoint_override(s3_endpoint, monkeypatch):
    uri = f"s3://bucket/runs/one?endpoint_override={s3_endpoint}&region=us-east-1"
    store = Store(uri)
    assert store.reader == "arrow"
    before = _fill_for_compaction(store)
    assert len(before) == 4 * 27 + 9
    assert set(before[(before["trial_id"] == "t0") & (before["step"] == 300)]["value"]) == {0.5}
    assert store.sql("SELECT study, count(*) AS n FROM evals GROUP BY study ORDER BY study").to_dict("records") == [
        {"study": "other", "n": 9},
        {"study": "s", "n": 108},
    ]
    assert len(store.compact()) == 1
    pd.testing.assert_frame_equal(sorted_frame(Store(uri).frame("evals")), before)
    assert len(store.fragments("evals", "s")) == 1
    assert store.validate() == []

    keys = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="bucket")["Contents"]
    assert f"runs/one/{MARKER}" in {k["Key"] for k in keys}
    # the endpoint may also come from the environment; a bucket prefix that holds
    # other things is not a store
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert len(Store("s3://bucket/runs/one", create=False).frame("evals")) == len(before)
    with pytest.raises(StoreError, match="not an oodstudy store"):
        Store("s3://bucket/runs")


# ----------------------------------------------------------------------------- command line


def test_cli_ls_and_validate(tmp_path, capsys):
    root = tmp_path / "results"
    store = Store(str(root))
    store.append("evals", eval_rows("t1", [100]), study="digits-sweep")
    store.append("trials", [{"trial_id": "t1", "status": "completed"}], study="digits-sweep")

    assert store_cli(["store", "ls", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert "digits-sweep" in out and "evals" in out

    assert store_cli(["store", "validate", "--store", str(root)]) == 0
    assert "0 errors" in capsys.readouterr().out
    (root / "evals" / "study=digits-sweep" / "x.parquet").write_bytes(b"garbage")
    assert store_cli(["store", "validate", "--store", str(root)]) == 1
    assert "x.parquet" in capsys.readouterr().out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store_cli(["store", "sql", "SELECT count(*) AS n FROM evals", "--store", str(root)]) == 0
        assert "9" in capsys.readouterr().out
        assert store_cli(["store", "compact", "--store", str(root)]) == 0
    assert store_cli(["store", "sql", "SELEKT 1", "--store", str(root)]) == 2
    assert store_cli(["store", "ls", "--store", str(tmp_path / "nothing")]) == 2
    assert "no store" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    root = tmp_path / "results"
    Store(str(root)).append("evals", eval_rows("t1", [100]), study="standalone")
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "store", "ls", "--store", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "standalone" in done.stdout


def test_validate_leaves_tool_private_entries_alone(tmp_path):
    """Ray Tune's own marker in <store>/_runs/<study>/ (a dot file it leaves after every run)
    is not a temp file of the store's: validate reports nothing for it."""
    import os

    store = Store(str(tmp_path / "store"))
    marker = tmp_path / "store" / "_runs" / "s" / ".validate_storage_marker"
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    os.utime(marker, (0, 0))  # decades old
    assert store.validate() == []
