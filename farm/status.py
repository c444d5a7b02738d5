"""Job status from the job directory alone, so it works from any machine that can read the jobs
root, with or without the cluster."""

from __future__ import annotations

import time
from typing import Any

from farm.actors.coordinator import summarize
from farm.errors import InputError
from farm.jobs import SPEC, JobDir
from farm.ledger import Ledger, Policy
from farm.storage import Storage


def list_jobs(jobs_root: str) -> list[dict[str, Any]]:
    """One summary per job directory under ``jobs_root``, newest first."""
    root = Storage(jobs_root)
    out = []
    for name in root.list():
        if not root.exists(f"{name}/{SPEC}"):
            continue
        try:
            info = job_status(jobs_root, name)
        except InputError:
            continue
        out.append(info)
    return sorted(out, key=lambda j: j.get("created", 0), reverse=True)


def newest_job(jobs_root: str) -> str:
    jobs = list_jobs(jobs_root)
    if not jobs:
        raise InputError(f"no jobs under {jobs_root}; pass --jobs-root or a job id")
    return jobs[0]["job_id"]


def job_status(jobs_root: str, job_id: str) -> dict[str, Any]:
    """The ``farm status --json`` object of a job, from its ledger snapshot."""
    job = JobDir(jobs_root, job_id)
    if not job.exists():
        raise InputError(f"no job {job_id} under {jobs_root}; `farm ls --jobs-root {jobs_root}` lists the jobs")
    spec = job.read_spec()
    data = job.read_ledger()
    ledger = Ledger.from_json(data, Policy()) if data else Ledger(spec.shards())
    info = summarize(job_id, ledger)
    info.update(
        {
            "input": spec.source.location,
            "created": spec.created,
            "job_dir": job.location,
            "model": spec.model.model if not spec.model.sr_weights else spec.model.sr_weights,
            "face": spec.model.face,
        }
    )
    try:
        info["output"] = job.storage.read_json("submit.json")["output"]
    except FileNotFoundError:
        info["output"] = None
    return info


def shard_logs(jobs_root: str, job_id: str, shard: int) -> list[dict[str, Any]]:
    return JobDir(jobs_root, job_id).logs(shard)


def render_status(info: dict[str, Any]) -> str:
    lines = [
        f"job      {info['job_id']}  ({info['state']})",
        f"input    {info['input']}",
        f"output   {info.get('output')}",
        f"frames   {info['frames_done']}/{info['frames_total']}   shards {info['shards_done']}/{info['shards_total']}   retries {info['retries']}",
        f"job dir  {info['job_dir']}",
    ]
    if info.get("reason"):
        lines.append(f"reason   {info['reason']}")
    for f in info.get("failures", [])[-5:]:
        when = time.strftime("%H:%M:%S", time.localtime(f["at"])) if f.get("at") else "?"
        lines.append(f"failure  {when} shard {f['shard']} on {f['node']}: {f['error']}")
    return "\n".join(lines)
