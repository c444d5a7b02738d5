"""The live terminal view of a running job: a progress bar with frames, fps and ETA, and a small
table of workers and recent failures. Works without a terminal (it then prints nothing live)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from farm.driver import Progress as JobProgress


class LiveView:
    """Context manager; pass :meth:`update` as ``on_progress`` to the driver."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.completed}/{task.total} frames"),
            TextColumn("{task.fields[fps]:.2f} fps"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[shards]}"),
            console=self.console,
        )
        self.task = self.bar.add_task("starting", total=None, fps=0.0, shards="")
        self.table = Table.grid()
        self.live = Live(Group(self.bar, self.table), console=self.console, refresh_per_second=4, transient=False)
        self.last: JobProgress | None = None

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def update(self, p: JobProgress) -> None:
        self.last = p
        self.bar.update(
            self.task,
            description=f"{p.job_id} {p.message or p.state}",
            total=p.frames_total or None,
            completed=p.frames_done,
            fps=p.fps,
            shards=f"shards {p.shards_done}/{p.shards_total}, workers {len(p.workers)}",
        )
        self.live.update(Group(self.bar, render_workers(p)))


def render_workers(p: JobProgress) -> Table:
    table = Table(box=None, pad_edge=False, show_header=bool(p.workers))
    for column in ("worker", "node", "device", "fps", "shard", "done"):
        table.add_column(column)
    for w in p.workers:
        table.add_row(
            str(w.get("worker", "?")),
            str(w.get("host") or (w.get("node") or "?")[:8]),
            str(w.get("device", "?")),
            f"{w.get('fps', 0.0):.2f}",
            "-" if w.get("shard") is None else str(w["shard"]),
            str(w.get("shards_done", 0)),
        )
    for f in p.failures[-3:]:
        table.add_row("[red]failed", str(f.get("node", "?"))[:8], f"shard {f.get('shard')}", "", "", f.get("error", "")[:80])
    if p.dashboard_url:
        table.add_row("dashboard", p.dashboard_url, "", "", "", "")
    return table
