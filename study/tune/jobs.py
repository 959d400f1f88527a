"""Studies as Ray jobs: ``oodstudy run`` submitted through Ray's Jobs API, followed, listed.

A submission is checked here before anything is sent: the spec (with its overrides) must
validate, the dashboard must answer at the address and accept the token, and no job of a
study with that name may be pending or running.  The job carries the spec's text in an
environment variable of its runtime_env (the spec file need not exist on the cluster), and
its entrypoint is one short command, ``oodstudy run env:OODSTUDY_SPEC --name ... --store ...``
with the same overrides, so the cluster validates exactly what was validated here and the
dashboard's Jobs page shows what runs.  Its submission id is ``<study>-<UTC time>`` and its
metadata names the study, the spec file and the store.
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
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, TextIO, TypeVar, cast
from urllib.parse import urlparse

from study.config import ENV_SPEC_PREFIX, SweepSpec, load_sweep_spec
from study.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

# metadata keys of a study's job (Ray keeps them with the job; the dashboard shows them)
STUDY_KEY, SPEC_KEY, STORE_KEY = "study", "spec", "store"
ACTIVE = ("PENDING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# the job's environment variable that holds the spec's YAML text
SPEC_VARIABLE = "OODSTUDY_SPEC"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Seconds the dashboard has to answer each HTTP request (Ray's client sets no timeout): to
# accept the connection, then between the bytes of its answer; `--timeout` changes it.
HTTP_TIMEOUT_S = 10.0
# Characters of an answer that is not the Jobs API's quoted in the error.
QUOTED_CHARS = 80
T = TypeVar("T")


@dataclass(frozen=True)
class Submission:
    """What is sent to the Jobs API for one study."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
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
    run = [f"{ENV_SPEC_PREFIX}{SPEC_VARIABLE}", "--name", spec.name, "--store", spec.store]
    run += [arg for override in overrides for arg in ("--set", override)]
    runtime_env = {"env_vars": {SPEC_VARIABLE: spec_path.read_text()}}
    metadata = {STUDY_KEY: spec.name, SPEC_KEY: str(spec_path.resolve()), STORE_KEY: spec.store}
    return Submission(submission_id(spec.name, now), "oodstudy run " + shlex.join(run), runtime_env, metadata, spec)


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


def connect(address: str, timeout_s: float = HTTP_TIMEOUT_S) -> "JobSubmissionClient":
    """A Jobs API client of the dashboard at ``address`` that has answered one authenticated
    request; each of its requests times out after ``timeout_s``, and every way one fails is
    one ClusterError line (see ``ask``)."""
    if urlparse(address).scheme not in ("http", "https") or not urlparse(address).hostname:
        raise ClusterError(
            f"--address {address!r} is not the dashboard's URL; give http://HOST:8265 "
            "(through a tunnel: http://127.0.0.1:8265)"
        )
    answers: list[str] = []

    def make() -> "JobSubmissionClient":
        with _address_wins():
            client = _timed_client_class()(address, timeout_s, answers)
        client.list_jobs()  # the version check in the constructor needs no token; this request does
        return client

    return _asking(address, timeout_s, answers, make)


def _timed_client_class() -> type:
    """Ray's Jobs API client with a timeout on every HTTP request, each noted (what the last
    one answered names a failure)."""
    from ray.job_submission import JobSubmissionClient

    class TimedJobClient(JobSubmissionClient):
        def __init__(self, address: str, timeout_s: float, answers: list[str]) -> None:
            self.given_address, self.timeout_s, self.answers = address, timeout_s, answers
            super().__init__(address)

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            self.answers.append(f"{method} {endpoint}")
            kwargs.setdefault("timeout", self.timeout_s)
            response = super()._do_request(method, endpoint, **kwargs)
            self.answers[-1] = (
                f"{method} {endpoint} answered HTTP {response.status_code} {response.text[:QUOTED_CHARS]!r}"
            )
            if method == "GET" and endpoint == "/api/jobs/" and response.ok and not isinstance(response.json(), list):
                raise TypeError("a list of jobs is a JSON list")  # Ray's client would read {} as no jobs
            return response

    return TimedJobClient


class RequestNotes(Protocol):
    """What a client from ``connect`` notes beside Ray's client: the address it was given,
    its requests' timeout and what each request answered."""

    given_address: str
    timeout_s: float
    answers: list[str]


def ask(client: "JobSubmissionClient", call: Callable[[], T]) -> T:
    """``call()``, a request through a client from ``connect``; every way it fails is one
    ClusterError line."""
    notes = cast(RequestNotes, client)  # connect's TimedJobClient (a class made when Ray is imported)
    return _asking(notes.given_address, notes.timeout_s, notes.answers, call)


def _asking(address: str, timeout_s: float, answers: list[str], call: Callable[[], T]) -> T:
    """``call()``, requests to the dashboard at ``address``; each way they fail (no answer,
    silence, a refused token, an answer that is not the Jobs API's) is one ClusterError
    naming what answered (the last of ``answers``) and the fix."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        return call()
    except AuthenticationError as err:
        source = token_source()
        if "Authentication required" in str(err) or source is None:
            raise ClusterError(
                f"the cluster at {address} requires its token: set RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN_PATH=<the cluster's token file> (or RAY_AUTH_TOKEN)"
            ) from None
        raise ClusterError(
            f"the cluster at {address} refused the token from {source}; use the token the cluster was started with"
        ) from None
    except requests.ReadTimeout:
        raise ClusterError(
            f"{address} accepted the connection but sent nothing within {timeout_s:g} s "
            f"(to {(answers or ['its first request'])[-1]}); "
            "check that --address is the Ray dashboard's URL (port 8265 by default) and that the "
            "cluster is up, or give it longer with --timeout SECONDS"
        ) from None
    except (ConnectionError, requests.ConnectionError, requests.Timeout):
        raise ClusterError(
            f"no Ray dashboard answers at {address}; check --address "
            "(http://HOST:8265) and that the cluster and your tunnel are up"
        ) from None
    except (RuntimeError, requests.RequestException, ValueError, KeyError, TypeError) as err:
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise ClusterError(
            f"{address} answers but not as a Ray dashboard with the Jobs API ({(answers or ['?'])[-1]}, "
            f"not a Ray answer: {detail}); check the port (the dashboard's, 8265 by default)"
        ) from None


def study_jobs(client: "JobSubmissionClient") -> list:
    """The jobs of studies (those submitted by ``oodstudy submit``), oldest first."""
    jobs = [job for job in ask(client, client.list_jobs) if (job.metadata or {}).get(STUDY_KEY)]
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
    return ask(
        client,
        lambda: client.submit_job(
            entrypoint=submission.entrypoint,
            runtime_env=submission.runtime_env,
            submission_id=submission.submission_id,
            metadata=submission.metadata,
        ),
    )


def follow(client: "JobSubmissionClient", job_id: str, out: TextIO = sys.stdout, poll_s: float = 1.0) -> str:
    """Stream the job's log to ``out`` until it ends; returns its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    while (status := str(ask(client, lambda: client.get_job_status(job_id)))) not in TERMINAL:
        time.sleep(poll_s)
    return status


def jobs_table(jobs: list) -> str:
    """One line per study job: submission id, study, status, start (UTC), duration, store."""
    rows = [("SUBMISSION ID", "STUDY", "STATUS", "STARTED (UTC)", "DURATION", "STORE")]
    now_ms = time.time() * 1000
    for job in jobs:
        start = (
            datetime.fromtimestamp(job.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            if job.start_time
            else "-"
        )
        end_ms = job.end_time or now_ms
        duration = f"{(end_ms - job.start_time) / 1000:.0f} s" if job.start_time else "-"
        rows.append(
            (
                job.submission_id,
                job.metadata[STUDY_KEY],
                str(job.status),
                start,
                duration,
                job.metadata.get(STORE_KEY, ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
