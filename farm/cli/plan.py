"""``farm preview``, ``farm estimate`` and ``farm tune``: the commands to run before a long job.

Registered on the main group like :mod:`farm.cli.setup`. They take the model
options of ``farm submit`` (the same click options, picked from :func:`farm.cli.job_options`), so
what they show, time and tune is what the same ``farm submit`` line would run."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

import click

from farm.cli.base import main
from farm.cli.commands import build_config, job_options

#: The submit options that change what a preview shows.
MODEL_OPTIONS = ("model", "sr_weights", "face", "face_model", "face_weights", "face_weight", "face_detector", "weights_dir",
                 "trust_weights", "scale", "target", "square_pixels", "device", "fp16", "tile", "deinterlace", "compile_model",
                 "address", "token")


def _submit_params() -> list[click.Parameter]:
    return list(job_options(lambda **kw: None).__click_params__)  # type: ignore[attr-defined]


def submit_options(names):
    """Decorator: the named options of ``farm submit``, as submit declares them."""
    params = [p for p in _submit_params() if p.name in names]

    def decorate(fn):
        fn.__click_params__ = getattr(fn, "__click_params__", []) + params
        return fn

    return decorate


def full_options(o: dict[str, Any]) -> dict[str, Any]:
    """``o`` completed with submit's defaults for the options this command does not take."""
    ctx = click.get_current_context()
    full = {}
    for p in _submit_params():
        default = p.get_default(ctx)
        # an option without a default gives click's UNSET sentinel here; submit sees None
        full[p.name] = default if isinstance(default, (str, int, float, bool, tuple, list)) else None
    full.update(o)
    return full


@contextlib.contextmanager
def _cluster(address: str | None, token: str | None):
    """Joined to the cluster at ``address`` while inside (nothing without an address)."""
    if not address:
        yield False
        return
    from farm.driver import start_ray

    import ray

    with contextlib.redirect_stdout(sys.stderr):
        start_ray(address, token=token, dashboard=False)
    try:
        yield True
    finally:
        ray.shutdown()


def _times(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give seconds separated by commas, e.g. 10,75.5,3600", param_hint="--at") from None


@main.command()
@click.argument("input")
@click.option("-o", "--output", "sheet", help="The PNG sheet (default: <input name>.preview.png here).")
@click.option("--frames", "count", type=click.IntRange(min=1), help="Frames spread through the video (default 4; scene cuts preferred).")
@click.option("--at", "at", help="Times in seconds, comma separated, instead of --frames.")
@submit_options(MODEL_OPTIONS)
def preview(input: str, sheet: str | None, count: int | None, at: str | None, **o: Any) -> None:
    """Enhance a few frames of INPUT as `farm submit` would and write a before/after PNG sheet.

    \b
    Examples:
      farm preview holiday.mp4
      farm preview old.avi --target 1080p --at 12,95.5 -o old.png
      farm preview film.mkv --address auto          # on a GPU of the cluster
    """
    from farm.preview import preview as run_preview, render_here

    sheet = sheet or os.path.splitext(os.path.basename(input.rstrip("/")))[0] + ".preview.png"
    cfg = build_config(input, sheet, **full_options(o))
    with _cluster(o["address"], o["token"]) as on_cluster:
        render = render_here(cfg.model.device)
        if on_cluster:
            from farm.actors.sample import render_on_cluster

            def render(spec, frames):
                return render_on_cluster(spec, frames, cfg.model.device)

        result = run_preview(cfg, sheet, count=count, at_s=_times(at), render=render)
    times = ", ".join(f"{t:.3f}" for t in result.times_s)
    click.echo(f"{result.path}  ({len(result.frames)} frames at {times} s, {result.canvas[0]}x{result.canvas[1]}, "
               f"{result.device}, {result.seconds:.1f} s)")

