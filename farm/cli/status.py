"""Job status from the job directory alone, so it works from any machine that can read the jobs
root, with or without the cluster."""

from __future__ import annotations

import time
from typing import Any

from farm.config import JOB_ID_PATTERN
from farm.errors import InputError
from farm.ledger import summarize
from farm.storage.fs import Storage
from farm.storage.jobdir import SPEC, JobDir

#: Live figures older than this describe a driver that is gone.
LIVE_STALE_S = 30.0


def list_jobs(jobs_root: str) -> list[dict[str, Any]]:
    """One summary per job directory under ``jobs_root``, newest first."""
    root = Storage(jobs_root)
    out = []
    for name in root.list():
        if not JOB_ID_PATTERN.fullmatch(name) or not root.exists(f"{name}/{SPEC}"):
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
    job = JobDir.existing(jobs_root, job_id)
    spec = job.read_spec()
    info = summarize(job_id, job.load_ledger(spec=spec))
    info.update(
        {
            "input": spec.source.location,
            "index": spec.source.index.describe(),
            "created": spec.created,
            "job_dir": job.location,
            "model": spec.model.model if not spec.model.sr_weights else spec.model.sr_weights,
            "face": spec.model.face,
        }
    )
    submit = job.read_submit()
    info["output"] = submit.output if submit else None
    live = job.read_live() or {}
    fresh = info["state"] in ("running", "muxing") and time.time() - live.get("updated", 0) < LIVE_STALE_S
    info["fps"] = live.get("fps", 0.0) if fresh else 0.0
    info["eta_s"] = live.get("eta_s") if fresh else None
    info["workers"] = live.get("workers", []) if fresh else []
    info["dashboard_url"] = live.get("dashboard_url")
    info["driver"] = live.get("driver") if fresh else None
    return info


def shard_logs(jobs_root: str, job_id: str, shard: int) -> list[dict[str, Any]]:
    return JobDir(jobs_root, job_id).logs(shard)


def render_status(info: dict[str, Any]) -> str:
    lines = [
        f"job      {info['job_id']}  ({info['state']})",
        f"input    {info['input']}",
        f"index    {info.get('index', 'container timestamps')}",
        f"output   {info.get('output')}",
        f"frames   {info['frames_done']}/{info['frames_total']}   shards {info['shards_done']}/{info['shards_total']}   retries {info['retries']}",
        f"job dir  {info['job_dir']}",
    ]
    if info.get("fps"):
        eta = f"{info['eta_s'] / 60:.1f} min" if info.get("eta_s") is not None else "?"
        lines.append(f"speed    {info['fps']:.2f} fps   ETA {eta}")
    if info.get("driver"):
        lines.append(f"driver   {info['driver'].get('host')} (pid {info['driver'].get('pid')})")
    for w in info.get("workers", []):
        shard = "idle" if w.get("shard") is None else f"shard {w['shard']}"
        lines.append(f"worker   {w.get('worker')} on {w.get('host', '?')} [{str(w.get('node') or '?')[:8]}] {w.get('device', '?')}: "
                     f"{w.get('fps', 0.0):.2f} fps, {shard}, {w.get('shards_done', 0)} shards done")
    if info.get("dashboard_url"):
        lines.append(f"dashboard {info['dashboard_url']}")
    if info.get("reason"):
        lines.append(f"reason   {info['reason']}")
    for f in info.get("failures", [])[-5:]:
        when = time.strftime("%H:%M:%S", time.localtime(f["at"])) if f.get("at") else "?"
        lines.append(f"failure  {when} shard {f['shard']} on {f['node']}: {f['error']}")
    return "\n".join(lines)


FINAL_STATES = ("done", "failed", "cancelled")


def watch(jobs_root: str, job_id: str, interval: float, as_json: bool, echo) -> None:
    """Show the job's status until it reaches a final state: a live panel on a terminal,
    otherwise one line (or JSON object) per change."""
    import json

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    if console.is_terminal and not as_json:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                info = job_status(jobs_root, job_id)
                live.update(Text(render_status(info)))
                if info["state"] in FINAL_STATES:
                    return
                time.sleep(interval)
    last = None
    while True:
        info = job_status(jobs_root, job_id)
        line = json.dumps(info, sort_keys=True) if as_json else summary_line(info)
        if line != last:
            echo(line)
            last = line
        if info["state"] in FINAL_STATES:
            return
        time.sleep(interval)


def summary_line(info: dict[str, Any]) -> str:
    eta = f", ETA {info['eta_s'] / 60:.1f} min" if info.get("eta_s") is not None else ""
    return (
        f"{info['job_id']} {info['state']}: {info['frames_done']}/{info['frames_total']} frames, "
        f"shards {info['shards_done']}/{info['shards_total']}, {info.get('fps', 0.0):.2f} fps{eta}, "
        f"workers {len(info.get('workers', []))}, retries {info['retries']}"
    )
