"""``oodstudy submit | jobs``: run a study on a Ray cluster as a Ray job, list the studies' jobs.

Both talk to the dashboard's Jobs API (``--address http://HOST:8265``, default RAY_ADDRESS);
the token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token with
RAY_AUTH_MODE=token, as for every Ray client.
"""

from __future__ import annotations

import math
import os
import sys
from datetime import datetime, timezone

from study.errors import ClusterError
from study.tune.jobs import HTTP_TIMEOUT_S  # no Ray: the client is imported when a command runs

# exit code of `submit --wait` when the job ran but did not succeed
EXIT_JOB_FAILED = 1


def _address(args) -> str:
    address = args.address or os.environ.get("RAY_ADDRESS", "")
    if not address.startswith(("http://", "https://")):
        raise ClusterError("give the dashboard's URL with --address http://HOST:8265 (or set RAY_ADDRESS to it)")
    return address


def _timeout(args) -> float:
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ClusterError(
            f"--timeout {args.timeout:g}: give the seconds the dashboard has to answer each "
            f"request, a number > 0 (default {HTTP_TIMEOUT_S:g})"
        )
    return args.timeout


def _cmd_submit(args) -> int:
    from study.tune.jobs import build_submission, connect, follow, submit

    address = _address(args)
    timeout_s = _timeout(args)
    submission = build_submission(
        args.spec, list(args.set or []), address, datetime.now(timezone.utc), name=args.name, store=args.store
    )
    client = connect(address, timeout_s)
    job_id = submit(client, submission, address)
    print(
        f"submitted study {submission.spec.name} as job {job_id} to {address} (results in {submission.spec.store})",
        file=sys.stderr,
    )
    if not args.wait:
        print(
            f"follow it with `ray job logs -f {job_id}` or on the dashboard's Jobs page; "
            "list the studies' jobs with `oodstudy jobs`",
            file=sys.stderr,
        )
        return 0
    try:
        status = follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running (ray job stop {job_id} ends it)", file=sys.stderr)
        return EXIT_JOB_FAILED
    print(f"job {job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else EXIT_JOB_FAILED


def _cmd_jobs(args) -> int:
    from study.tune.jobs import connect, jobs_table, study_jobs

    print(jobs_table(study_jobs(connect(_address(args), _timeout(args)))))
    return 0


def add_jobs_commands(sub) -> None:
    p = sub.add_parser("submit", help="run a sweep spec on a Ray cluster as a Ray job (Jobs API)")
    p.add_argument("spec", help="search_spaces/<name>.yaml (validated here, sent with the job)")
    p.add_argument("--address", help="the dashboard's URL, http://HOST:8265 (default: RAY_ADDRESS)")
    p.add_argument("--store", help="results store URI as the cluster sees it (overrides the spec's)")
    p.add_argument("--name", help="study name (overrides the spec's)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set train.steps=500 or --set grid.model.size=[nano]",
    )
    p.add_argument(
        "--wait", action="store_true", help="stream the job's log and exit with its outcome (0 if it succeeded)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=HTTP_TIMEOUT_S,
        metavar="SECONDS",
        help=f"seconds the dashboard has to answer each request (default {HTTP_TIMEOUT_S:g})",
    )
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("jobs", help="the studies' jobs on a Ray cluster with their status")
    p.add_argument("--address", help="the dashboard's URL, http://HOST:8265 (default: RAY_ADDRESS)")
    p.add_argument(
        "--timeout",
        type=float,
        default=HTTP_TIMEOUT_S,
        metavar="SECONDS",
        help=f"seconds the dashboard has to answer each request (default {HTTP_TIMEOUT_S:g})",
    )
    p.set_defaults(func=_cmd_jobs)
