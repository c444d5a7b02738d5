"""Ray Jobs: ``farm submit`` handed to a cluster through its dashboard, so that the driver runs on
the cluster and this process only follows its logs (or leaves at once, ``--detach``)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import ray

from farm.config import JobConfig
from farm.enhance.factories import job_module
from farm.errors import ClusterError, JobFailed, first_line
from farm.identity import identify
from farm.result import JobResult
from farm.session import use_token


def submit_ray_job(
    cfg: JobConfig,
    forwarded: list[str],
    dashboard: str,
    *,
    token: str | None = None,
    detach: bool = False,
    on_line: Callable[[str], None] = print,
) -> JobResult:
    """Submit ``farm submit <forwarded>`` as a Ray Job to the cluster whose dashboard is at
    ``dashboard``; unless ``detach``, follow its logs until it ends.

    The entrypoint runs farm from the cluster's own environment (``python -m farm``, or the test
    entry point when this process installed the fakes: :func:`farm.enhance.factories.job_module`);
    input, output and jobs root must be paths the cluster sees (shared storage or object store URLs).

    Raises:
        ClusterError: the cluster cannot be reached or refuses the job.
        JobFailed: the job ended in failure (its last error line is the message).
    """
    import asyncio
    import shlex

    from ray.job_submission import JobStatus, JobSubmissionClient

    if token:
        use_token(token)
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):  # they would override the address given
        os.environ.pop(name, None)
    job_id = identify(cfg)
    entrypoint = shlex.join(["python", "-m", job_module(), "submit", *forwarded, "--address", "auto"])
    submission_id = f"farm-{(job_id or 'job')[:48]}-{uuid.uuid4().hex[:6]}"
    metadata = {"farm_input": cfg.input, "farm_output": cfg.output, "farm_job_id": job_id or "unknown until the driver starts"}
    # The SDK sets its own logger to INFO and logs every websocket it opens and closes.
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        client = JobSubmissionClient(dashboard, headers=headers)
        client.submit_job(entrypoint=entrypoint, submission_id=submission_id, metadata=metadata)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        auth = any(w in str(exc).lower() for w in ("401", "403", "auth", "token"))
        hint = "; the cluster wants its authentication token: pass --token-file, --token or set RAY_AUTH_TOKEN" if auth else ""
        raise ClusterError(f"cannot submit to the Ray cluster at {dashboard}: {first_line(exc)}{hint}") from None
    result = JobResult(job_id, cfg.output, submission_id=submission_id, dashboard=dashboard)
    if detach:
        return replace(result, state="submitted")
    last_error: list[str] = []

    async def follow() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            for line in chunk.splitlines():
                if line.startswith("error: "):
                    last_error[:] = [line[len("error: ") :]]
                on_line(line)

    asyncio.run(follow())
    status = client.get_job_status(submission_id)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(submission_id)
        reason = last_error[0] if last_error else (info.message or str(status))
        raise JobFailed(f"Ray job {submission_id} {getattr(status, 'value', status)!s}: {reason}".replace(" FAILED:", " failed:"))
    return result
