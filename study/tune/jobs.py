"""Studies as Ray jobs: ``oodstudy run`` submitted through Ray's Jobs API, followed, listed.

A submission is checked here before anything is sent: the spec (with its overrides) must
validate, the dashboard must answer at the address and accept the token, and no job of a
study with that name may be pending or running.  The job carries the spec's text in its
entrypoint (the spec file need not exist on the cluster): a shell snippet writes it to a
temporary file on the head and runs ``oodstudy run`` on it with the same overrides, so the
cluster validates exactly what was validated here.  Its submission id is
``<study>-<UTC time>`` and its metadata names the study, the spec file and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TextIO
from urllib.parse import urlparse

from study.config import SweepSpec, load_sweep_spec
from study.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

# metadata keys of a study's job (Ray keeps them with the job; the dashboard shows them)
STUDY_KEY, SPEC_KEY, STORE_KEY = "study", "spec", "store"
ACTIVE = ("PENDING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
HEREDOC_END = "OODSTUDY_SPEC"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Submission:
    """What is sent to the Jobs API for one study."""

    submission_id: str
    entrypoint: str
    metadata: dict[str, str]
    spec: SweepSpec


def submission_id(study: str, now: datetime) -> str:
    """``<study>-<UTC time>``, e.g. ``quickstart-20261201T183012Z``."""
    return f"{study}-{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"


def cluster_store(store: str, address: str) -> str:
    """The store as the cluster's driver must see it: a URI as is; a local path made absolute
    when the cluster runs on this machine, refused when it does not (it would be a path on
    the head that nobody chose)."""
    if "://" in store:
        return store
    if urlparse(address).hostname not in LOOPBACK:
        raise ConfigError(
            f"store {store!r} is a path on this machine but the cluster at {address} is not; "
            "give --store s3://..., gs://..., or a path on the cluster's shared filesystem (e.g. /mnt/nfs/results)"
        )
    return str(Path(store).expanduser().resolve())


def build_submission(
    spec_path: str | Path,
    overrides: list[str],
    address: str,
    now: datetime,
    *,
    name: str | None = None,
    store: str | None = None,
) -> Submission:
    """Validate the spec with its overrides (and ``name``/``store``) and make the job that runs
    it; nothing is sent."""
    spec_path = Path(spec_path)
    chosen = [f"store={store}"] * bool(store) + [f"name={name}"] * bool(name)
    spec = load_sweep_spec(spec_path, list(overrides) + chosen)  # every config error before anything is sent
    spec = spec.model_copy(update={"store": cluster_store(spec.store, address)})
    text = spec_path.read_text()
    if HEREDOC_END in text.splitlines():
        raise ConfigError(f"{spec_path}: a line reads {HEREDOC_END!r}, which ends the spec in the job's script; remove it")
    job_id = submission_id(spec.name, now)
    run = ["--name", spec.name, "--store", spec.store] + [arg for override in overrides for arg in ("--set", override)]
    entrypoint = "\n".join([
        f'spec="${{TMPDIR:-/tmp}}/{job_id}.yaml"; trap \'rm -f "$spec"\' EXIT',
        f"cat > \"$spec\" <<'{HEREDOC_END}'",
        text.rstrip("\n"),
        HEREDOC_END,
        'oodstudy run "$spec" ' + shlex.join(run),
    ])
    metadata = {STUDY_KEY: spec.name, SPEC_KEY: str(spec_path.resolve()), STORE_KEY: spec.store}
    return Submission(job_id, entrypoint, metadata, spec)


@contextlib.contextmanager
def _address_wins() -> Iterator[None]:
    """Ray's client prefers RAY_ADDRESS / RAY_API_SERVER_ADDRESS over the address it is
    given; while it is made, the address given on the command line wins."""
    saved = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def token_source() -> str | None:
    """Where Ray's client takes the token from, in Ray's order; None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"
    return path if Path(path).expanduser().is_file() else None


def connect(address: str) -> "JobSubmissionClient":
    """A Jobs API client of the dashboard at ``address`` that has answered one authenticated
    request; every way this fails is one ClusterError line."""
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if urlparse(address).scheme not in ("http", "https") or not urlparse(address).hostname:
        raise ClusterError(f"--address {address!r} is not the dashboard's URL; give http://HOST:8265 "
                           "(through a tunnel: http://127.0.0.1:8265)")
    try:
        with _address_wins():
            client = JobSubmissionClient(address)
        client.list_jobs()  # the version check above needs no token; this request does
    except AuthenticationError as err:
        source = token_source()
        if "Authentication required" in str(err) or source is None:
            raise ClusterError(
                f"the cluster at {address} requires its token: set RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN_PATH=<the cluster's token file> (or RAY_AUTH_TOKEN)"
            ) from None
        raise ClusterError(f"the cluster at {address} refused the token from {source}; "
                           "use the token the cluster was started with") from None
    except (ConnectionError, requests.ConnectionError, requests.Timeout):
        raise ClusterError(f"no Ray dashboard answers at {address}; check --address "
                           "(http://HOST:8265) and that the cluster and your tunnel are up") from None
    except (RuntimeError, requests.RequestException, ValueError) as err:  # an answer, but not the Jobs API's
        raise ClusterError(f"{address} answers but not as a Ray dashboard with the Jobs API "
                           f"({type(err).__name__}); check the port (the dashboard's, 8265 by default)") from None
    return client


def study_jobs(client: "JobSubmissionClient") -> list:
    """The jobs of studies (those submitted by ``oodstudy submit``), oldest first."""
    jobs = [job for job in client.list_jobs() if (job.metadata or {}).get(STUDY_KEY)]
    return sorted(jobs, key=lambda job: job.start_time or 0)


def submit(client: "JobSubmissionClient", submission: Submission, address: str) -> str:
    """Send the job, unless a job of the same study is pending or running; returns its id."""
    name = submission.spec.name
    running = [job for job in study_jobs(client) if job.metadata[STUDY_KEY] == name and str(job.status) in ACTIVE]
    if running:
        raise ClusterError(
            f"study {name!r} is already running on {address} as job {running[0].submission_id}; "
            f"wait for it, stop it (ray job stop {running[0].submission_id}), or submit with another --name"
        )
    return client.submit_job(
        entrypoint=submission.entrypoint,
        submission_id=submission.submission_id,
        metadata=submission.metadata,
    )


def follow(client: "JobSubmissionClient", job_id: str, out: TextIO = sys.stdout, poll_s: float = 1.0) -> str:
    """Stream the job's log to ``out`` until it ends; returns its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    while (status := str(client.get_job_status(job_id))) not in TERMINAL:
        time.sleep(poll_s)
    return status


def jobs_table(jobs: list) -> str:
    """One line per study job: submission id, study, status, start (UTC), duration, store."""
    rows = [("SUBMISSION ID", "STUDY", "STATUS", "STARTED (UTC)", "DURATION", "STORE")]
    now_ms = time.time() * 1000
    for job in jobs:
        start = datetime.fromtimestamp(job.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if job.start_time else "-"
        end_ms = job.end_time or now_ms
        duration = f"{(end_ms - job.start_time) / 1000:.0f} s" if job.start_time else "-"
        rows.append((job.submission_id, job.metadata[STUDY_KEY], str(job.status), start, duration, job.metadata.get(STORE_KEY, "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
