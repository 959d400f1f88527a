"""An embedded ``oodstudy run`` seen on its Ray dashboard, the way a researcher looks at it:
the study's driver is a named job, its progress lines are the log of a named actor of that
job (the dashboard shows a driver's own output only for jobs sent through the Jobs API),
and that log is served (through the API the Log tab calls, and in a real browser) even while
another Ray on the machine holds Ray's fixed dashboard agent port 52365 (which made every Log
tab answer HTTP 500)."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RAY_AGENT_PORT = 52365  # what Ray 2.60's ray.init always asks for
CHROMIUM = "/usr/bin/chromium"
STUDY = {
    "name": "dash",
    "base": {
        "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 16, "train_fraction": 0.3},
        "model": {"size": "nano", "n_layer": 1},
        # long enough (tens of seconds) for the board's log to show the trial running
        "train": {"steps": 12000, "eval_every": 6000, "batch_size": 8, "log_every": 500},
    },
    "grid": {"task.digits": [1]},
    "tune": {"metric": "id_exact_match", "mode": "max", "trials_per_grid_point": 1},
    "resources": {"cpus": 1},
}


def get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def hold_port(port: int) -> socket.socket | None:
    """Listen on 127.0.0.1:``port`` as another Ray's agent would; None when someone already does."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen()
    return sock


def actor_page_stdout(url: str, token: str, actor_id: str, wait_for: str) -> str:
    """The text of an actor's dashboard page once its Logs section's stdout tab shows ``wait_for``,
    logged in with the token as a user does."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page()
            page.goto(f"{url}/#/actors/{actor_id}")
            page.get_by_role("dialog", name="Authentication Token Required").wait_for(timeout=30_000)
            page.get_by_placeholder("Enter your authentication token").fill(token)
            page.get_by_role("button", name="Submit").click()
            page.get_by_role("tab", name="stdout").click(timeout=30_000)
            page.get_by_text(wait_for).first.wait_for(timeout=30_000)
            return page.inner_text("body")
        finally:
            browser.close()


@pytest.mark.slow
def test_an_embedded_runs_job_and_progress_are_on_its_dashboard_beside_another_ray(tmp_path):
    spec = tmp_path / "dash.yaml"
    spec.write_text(yaml.safe_dump(STUDY))
    held = hold_port(RAY_AGENT_PORT)  # else another Ray (this session's shared one) already holds it
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), RAY_AUTH_TOKEN=token)
    run = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "run", str(spec), "--store", str(tmp_path / "store")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(run.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline and run.poll() is None:
            found = [m for line in list(err_lines) if (m := re.search(r"Ray dashboard: (http://\S+)", line))]
            url = found[0].group(1) if found else None
            time.sleep(0.5)
        assert url is not None, "".join(err_lines)[-3000:]
        hint = next(line for line in err_lines if "Ray dashboard:" in line)
        assert "the job named 'oodstudy dash'" in hint and "the actor 'progress of study dash'" in hint

        board, log = None, ""
        while time.monotonic() < deadline and run.poll() is None:
            if board is None:
                _, text = get(url + "/api/v0/actors?detail=1&limit=1000", token)
                boards = [a for a in json.loads(text)["data"]["result"]["result"] if a["class_name"] == "ProgressBoard"]
                board = boards[0] if boards else None
            if board is not None:
                status, log = get(f"{url}/api/v0/logs/file?actor_id={board['actor_id']}&suffix=out&lines=1000", token)
                assert status == 200, (status, log[:500])  # the Log tab's request
                if re.search(r"^\d\d:\d\d:\d\d   digits=1: step \d+/12000 loss \d", log, re.M):
                    break
            time.sleep(1)
        assert board is not None, "no ProgressBoard actor listed"
        # listed again: Ray records an actor's repr once its constructor ran, after it is first listed
        _, text = get(url + "/api/v0/actors?detail=1&limit=1000", token)
        (listed,) = [a for a in json.loads(text)["data"]["result"]["result"] if a["actor_id"] == board["actor_id"]]
        assert listed["repr_name"] == "progress of study dash"
        # the headline and the running trial, stamped with the time, as the driver prints them
        assert re.search(
            r"^\d\d:\d\d:\d\d \[dash\] trials \d done, 1 running, 0 pending of 1 \| grid points", log, re.M
        )
        assert re.search(r"^\d\d:\d\d:\d\d   digits=1: step \d+/12000 loss \d", log, re.M), log[-2000:]
        # the board belongs to the job the dashboard lists under the study's name
        _, jobs = get(url + "/api/jobs/", token)
        (job,) = [j for j in json.loads(jobs) if j.get("job_id") == board["job_id"]]
        assert job["metadata"]["job_name"] == "oodstudy dash"
        if Path(CHROMIUM).exists():  # and in a real browser: the actor's page, its stdout tab
            page_text = actor_page_stdout(url, token, board["actor_id"], "digits=1: step ")
            assert re.search(r"\[dash\] trials \d done, 1 running", page_text), page_text[-2000:]
        assert run.wait(timeout=240) == 0, "".join(err_lines)[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if held is not None:
            held.close()
