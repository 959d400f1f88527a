"""``oodstudy submit`` and ``oodstudy jobs`` against servers that are not a Ray dashboard: each
request times out, and whatever answered is named in one line (exit code 2), never a hang or
a traceback.

Real servers on loopback in threads: a port that accepts connections and never answers, and
a tiny HTTP server that answers 200 JSON on every path.  No Ray is started.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from study.cli import build_parser, main
from study.tune.jobs import HTTP_TIMEOUT_S

SPEC = {
    "name": "tiny",
    "base": {
        "task": {"digits": 1, "width": 3, "eval_max_len": 3},
        "model": {"size": "nano", "n_layer": 1},
        "train": {"steps": 40, "eval_every": 10},
    },
    "grid": {"task.digits": [1, 2]},
}
# What the tests give the client to wait for each answer; a server closes any connection still
# open after WATCHDOG_S, so that a client without a timeout fails the test instead of hanging it.
TIMEOUT_S = 0.5
WATCHDOG_S = 20.0


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A loopback port that accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # to look at `closed` between connections
    held: list[socket.socket] = []
    closed = threading.Event()

    def accept() -> None:
        while not closed.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener closed
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    watchdog = threading.Timer(WATCHDOG_S, lambda: [c.close() for c in list(held)])
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        watchdog.cancel()
        closed.set()
        listener.close()
        for conn in held:
            conn.close()
        thread.join(5)


def json_server(answers: dict[str, object], other: object) -> http.server.ThreadingHTTPServer:
    """An HTTP server on loopback that answers 200 with JSON on every path and method:
    ``answers[path]``, else ``other``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps(answers.get(self.path, other)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def empty_json_address() -> Iterator[str]:
    """Answers ``{}`` (HTTP 200) on every path."""
    server = json_server({}, {})
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(
    params=[
        ({}, "GET /api/jobs/ answered HTTP 200 '{}'"),  # as the job list: Ray's client would read no jobs
        ([], "POST /api/jobs/ answered HTTP 200 '[]'"),  # a list of no jobs, then [] as the submitted job
    ],
    ids=["object", "list"],
)
def version_only_address(request) -> Iterator[tuple[str, str]]:
    """Passes Ray's version check, then answers ``{}`` (or ``[]``) with HTTP 200 on every
    other path; its address and the request that submit must name."""
    version = {"ray_version": "2.60.0", "version": "4", "session_name": "x"}
    other, failing_request = request.param
    server = json_server({"/api/version": version}, other)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", failing_request
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "store": str(tmp_path / "results")}))
    return path


def run(argv: list[str], capsys) -> tuple[int, str, float]:
    """``main(argv)``: exit code, its one stderr line (asserted), seconds."""
    start = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oodstudy: ") and "Traceback" not in err, err
    return code, lines[0], seconds


def commands(spec_file: Path, address: str) -> dict[str, list[str]]:
    return {
        "jobs": ["jobs", "--address", address, "--timeout", str(TIMEOUT_S)],
        "submit": ["submit", str(spec_file), "--address", address, "--timeout", str(TIMEOUT_S)],
    }


@pytest.mark.parametrize("command", ["jobs", "submit"])
def test_a_port_that_accepts_and_never_answers_times_out_in_one_line(command, spec_file, silent_address, capsys):
    code, line, seconds = run(commands(spec_file, silent_address)[command], capsys)
    assert code == 2
    assert f"{silent_address} accepted the connection but sent nothing within {TIMEOUT_S:g} s" in line
    assert "GET /api/version" in line and "--address" in line and "--timeout" in line
    assert seconds < 10


@pytest.mark.parametrize("command", ["jobs", "submit"])
def test_json_that_is_not_a_ray_answer_is_named_in_one_line(command, spec_file, empty_json_address, capsys):
    code, line, seconds = run(commands(spec_file, empty_json_address)[command], capsys)
    assert code == 2
    assert f"{empty_json_address} answers but not as a Ray dashboard with the Jobs API" in line
    assert "GET /api/version answered HTTP 200 '{}'" in line and "ray_version" in line and "check the port" in line
    assert seconds < 10


def test_a_server_past_the_version_check_is_named_at_the_request_it_fails(spec_file, version_only_address, capsys):
    address, failing_request = version_only_address
    code, line, _ = run(commands(spec_file, address)["submit"], capsys)
    assert code == 2
    assert f"{address} answers but not as a Ray dashboard with the Jobs API ({failing_request}" in line


def test_the_default_timeout_is_reasonable():
    assert HTTP_TIMEOUT_S == 10
    for argv in (["jobs"], ["submit", "spec.yaml"]):
        assert build_parser().parse_args(argv).timeout == HTTP_TIMEOUT_S


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_cannot_work_is_refused_in_one_line(value, capsys):
    code, line, _ = run(["jobs", "--address", "http://127.0.0.1:9", "--timeout", value], capsys)
    assert code == 2 and f"--timeout {value}: give the seconds" in line
