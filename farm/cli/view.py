"""The live terminal view of a running job: a progress bar with frames, fps and ETA, and a small
table of workers and recent failures. Without a terminal (a log file, a Ray Job's driver) it
prints one plain progress line every few seconds instead."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from farm.progress import Progress as JobProgress


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
        self.plain = not self.console.is_terminal
        self.live = Live(Group(self.bar, self.table), console=self.console, refresh_per_second=4, transient=False)
        self.last: JobProgress | None = None
        self._last_line = 0.0
        self._printed = ""

    def __enter__(self) -> LiveView:
        if not self.plain:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.plain:
            if self.last is not None and plain_line(self.last) != self._printed:
                self.console.print(plain_line(self.last), highlight=False, soft_wrap=True)
        else:
            self.live.__exit__(*exc)

    def update(self, p: JobProgress) -> None:
        if self.plain and self.last is None and p.disk:
            self.console.print(f"{p.job_id} disk: {p.disk}", highlight=False, soft_wrap=True)
        self.last = p
        if self.plain:
            line = plain_line(p)
            if line != self._printed and (time.monotonic() - self._last_line >= PLAIN_INTERVAL_S or p.message):
                self._last_line = time.monotonic()
                self._printed = line
                self.console.print(line, highlight=False, soft_wrap=True)
            return
        self.bar.update(
            self.task,
            description=f"{p.job_id} {p.message or p.state}",
            total=p.frames_total or None,
            completed=p.frames_done,
            fps=p.fps,
            shards=f"shards {p.shards_done}/{p.shards_total}, workers {len(p.workers)}",
        )
        self.live.update(Group(self.bar, render_workers(p)))


PLAIN_INTERVAL_S = 5.0


def plain_line(p: JobProgress) -> str:
    pct = 100 * p.frames_done / p.frames_total if p.frames_total else 0.0
    eta = f"{p.eta_s / 60:.1f} min" if p.eta_s is not None else "?"
    return (
        f"{p.job_id} {p.message or p.state}: {p.frames_done}/{p.frames_total} frames ({pct:.0f}%), "
        f"{p.fps:.2f} fps, ETA {eta}, shards {p.shards_done}/{p.shards_total}, workers {len(p.workers)}"
    )


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
    if p.disk:
        table.add_row("disk", p.disk, "", "", "", "")
    return table
