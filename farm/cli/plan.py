"""``farm preview``, ``farm estimate`` and ``farm tune``: the commands to run before a long job.
They take ``farm submit``'s model options (:func:`farm.cli.commands.job_options`), so what they
show, time and tune is what the same ``farm submit`` line would run."""

from __future__ import annotations

import contextlib
import dataclasses
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
def _cluster(address: str | None, token: str | None, local: bool = False):
    """Joined to the cluster at ``address`` while inside; without one, nothing, or with ``local``
    the Ray a local ``farm submit`` would start (or the one this process already runs)."""
    if not address and not local:
        yield False
        return
    from farm.actors.sampling import connected, disconnect
    from farm.session import start_ray

    if connected():
        yield True
        return
    with contextlib.redirect_stdout(sys.stderr):
        start_ray(address, token=token, dashboard=False)
    try:
        yield True
    finally:
        disconnect()


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
@click.option("--clip", "clip_s", type=click.FloatRange(min=0, min_open=True),
              help="Also write a clip this many seconds long from the first previewed frame, made as the job makes its output.")
@click.option("--clip-output", help="Where the clip goes (default: next to the sheet, sheet.png -> sheet.mkv).")
@click.option("--show", is_flag=True, help="Show the sheet in this terminal when it can show images (sixel).")
@submit_options(MODEL_OPTIONS + ("workers", "gpus_per_worker", "codec", "crf", "preset", "pix_fmt", "jobs_root"))
def preview(input: str, sheet: str | None, count: int | None, at: str | None, clip_s: float | None, clip_output: str | None,
            show: bool, **o: Any) -> None:
    """Enhance a few frames of INPUT as `farm submit` would and write a before/after PNG sheet.

    \b
    Examples:
      farm preview holiday.mp4
      farm preview old.avi --target 1080p --at 12,95.5 -o old.png
      farm preview film.mkv --address auto          # on a GPU of the cluster
      farm preview film.mkv --at 600 --clip 5       # and 5 s from 10:00 as the job makes them
      farm preview film.mkv --frames 8 --workers 4  # 8 frames on 4 workers, 2 each

    --device, --workers and --gpus-per-worker mean what they mean to submit: the frames are
    spread over up to --workers workers (on a cluster with --address; on this machine, in the
    Ray a local submit would start), each loading the job's model. Without --workers the
    preview runs in one worker: here, in this process, or in one task on the cluster.
    """
    from farm.sampling.preview import clip_frames, render_here
    from farm.sampling.preview import preview as run_preview

    sheet = sheet or os.path.splitext(os.path.basename(input.rstrip("/")))[0] + ".preview.png"
    cfg = build_config(input, sheet, **full_options(o))
    workers = cfg.workers or 1
    with _cluster(o["address"], o["token"], local=workers > 1) as on_cluster:
        render = render_here(cfg.model.device, cfg.model)
        if on_cluster:
            from farm.actors.sampling import render_on_cluster

            here = render

            def render(spec, frames):
                return render_on_cluster(spec, frames, cfg.model.device, here, workers, cfg.gpus_per_worker)

        result = run_preview(cfg, sheet, count=count, at_s=_times(at), render=render)
    times = ", ".join(f"{t:.3f}" for t in result.times_s)
    on = f" on {min(workers, len(result.frames))} workers" if workers > 1 else ""
    click.echo(f"{result.path}  ({len(result.frames)} frames at {times} s, {result.canvas[0]}x{result.canvas[1]}, "
               f"{result.device}{on}, {result.seconds:.1f} s)")
    if clip_s is not None:
        _write_clip(cfg, clip_frames(result.index, result.source_frames[0], clip_s), clip_output, sheet, o)
    if show:
        _show(result.path)


def _write_clip(cfg, frames: tuple[int, int], output: str | None, sheet: str, o: dict[str, Any]) -> None:
    """The clip, by `farm submit`'s own machinery on the source ``frames`` [first, stop)."""
    import time

    from farm.driver import submit as run_submit
    from farm.session import use_token
    from farm.sampling.preview import clip_config, default_clip_path

    clip = clip_config(cfg, frames, output or default_clip_path(sheet, cfg.out.codec))
    if o["token"]:
        use_token(o["token"])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_submit(clip, address=o["address"], dashboard=False)
    click.echo(f"{clip.output}  (clip of source frames [{frames[0]}, {frames[1]}), the source's other streams cut to "
               f"whole packets of that span, farm job {summary.job_id}, {time.perf_counter() - t0:.1f} s)")


def _show(path: str) -> None:
    """The sheet as sixel graphics where the terminal says it shows them, else a note."""
    from farm.cli.sixel import sixel_terminal, to_sixel

    if not sixel_terminal(os.environ, sys.stdout.isatty()):
        click.echo(f"(this terminal does not say it shows sixel images; open {path})")
        return
    import cv2

    image = cv2.imread(path)
    if image is None:
        click.echo(f"(cannot read {path} back to show it)")
        return
    click.echo(to_sixel(image), nl=False)


#: The submit options an estimate takes: everything that shapes the job, not how it is followed.
JOB_OPTIONS = MODEL_OPTIONS + ("codec", "crf", "preset", "pix_fmt", "shard_frames", "workers", "gpus_per_worker", "jobs_root")


def _default_output(input: str, codec: str) -> str:
    import tempfile

    stem = os.path.splitext(os.path.basename(input.rstrip("/")))[0] or "video"
    return os.path.join(tempfile.gettempdir(), stem if codec == "png" else f"{stem}.mkv")


@main.command()
@click.argument("input")
@click.option("-o", "--output", help="The output the job would write (checked as submit checks it; default: an .mkv).")
@click.option("--gpus", type=click.FloatRange(min=0, min_open=True), help="Wall time for this many workers of each sampled kind instead of this cluster's.")
@click.option("--price-per-gpu-hour", "price", type=click.FloatRange(min=0), help="Cost of one device-hour, for the cost line.")
@click.option("--sample-frames", type=click.IntRange(min=1), default=16, show_default=True, help="Frames timed from each of 3 shards, after a warm-up.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@submit_options(JOB_OPTIONS)
def estimate(input: str, output: str | None, gpus: float | None, price: float | None, sample_frames: int, as_json: bool, **o: Any) -> None:
    """Time a sample of INPUT's job on the device it would use and estimate the whole job:
    frames, model time per frame, GPU-hours, wall time, disk and cost.

    \b
    Examples:
      farm estimate film.mkv --target 2160p
      farm estimate film.mkv --address auto --price-per-gpu-hour 2.5
      farm estimate film.mkv --gpus 16 --json
    """
    from farm.sampling.estimate import estimate as run_estimate

    options = full_options(o)
    cfg = build_config(input, output or _default_output(input, options["codec"]), **options)
    # Sampled in a Ray worker like the job's own (Ray's worker processes run the same code
    # measurably slower on a small CPU than a plain process: see the README's Performance).
    with _cluster(o["address"], o["token"], local=True):
        from farm.actors.sampling import sample_on_cluster

        sampler = sample_on_cluster(cfg.model.device, cfg.gpus_per_worker, cfg.workers)
        with contextlib.redirect_stdout(sys.stderr):
            result = run_estimate(cfg, gpus=gpus, price=price, sampler=sampler, sample_frames=sample_frames)
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True))
        return
    for line in render_estimate(result, price):
        click.echo(line)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def render_estimate(e, price: float | None) -> list[str]:
    lines = [f"frames      {e.frames} (output frames, from the probe)"]
    for s in e.samples:
        lines.append(f"device      {s.kind}: {s.model_s_per_frame:.4f} model-s/frame, {s.worker_s_per_frame:.4f} worker-s/frame "
                     f"(timed on {s.frames} frames after a warm-up; load {s.load_s:.1f} s), {s.workers:g} workers")
    lines.append(f"GPU-hours   {e.gpu_hours:.3f} device-hours held ({e.model_hours:.3f} in the model)")
    where = f"on {e.gpus:g} workers of each kind" if e.gpus is not None else "on this cluster"
    lines.append(f"wall        {_duration(e.wall_s)} {where}, worker start included, the final concatenation not")
    per_frame = e.chunk_bytes / max(1, e.frames)
    lines.append(f"disk        {_bytes(e.chunk_bytes)} of chunks + {_bytes(e.output_bytes)} of output ({e.codec}, {_bytes(per_frame)}/frame measured)")
    if e.cost is not None:
        lines.append(f"cost        {e.cost:.2f} at {price:g} per device-hour")
    return lines


@main.command()
@click.argument("input")
@click.option("--sample-frames", type=click.IntRange(min=1), default=8, show_default=True, help="Frames each worker is timed on, after a warm-up.")
@click.option("--try-compile", is_flag=True, help="Also measure --compile (CUDA; minutes of start-up per worker).")
@click.option("--dry-run", is_flag=True, help="Measure and print, but do not write the profile.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@submit_options(MODEL_OPTIONS[:-2] + ("codec", "crf", "preset", "pix_fmt"))
def tune(input: str, sample_frames: int, try_compile: bool, dry_run: bool, as_json: bool, **o: Any) -> None:
    """Measure which speed settings are fastest on this machine for INPUT's job, and keep the best
    in a profile that `farm submit` uses for the options it is not given.

    \b
    Examples:
      farm tune holiday.mp4
      farm tune film.mkv --target 2160p --try-compile
    """
    from farm.sampling.tune import candidates, choose, entry_for, measure, write_profile

    options = full_options(o)
    cfg = build_config(input, _default_output(input, options["codec"]), **options)
    from farm.cli.tuned import local_device_name

    with _cluster(None, None, local=True), contextlib.redirect_stdout(sys.stderr):
        from farm.actors.sampling import tune_runner
        from farm.sampling.tune import TuneSample

        with TuneSample(cfg, sample_frames, tune_runner, local_device_name(cfg.model.device)) as sample:
            cands = candidates(sample.device, sample.cpus, sample.height, sample.width, compile=try_compile)
            measured = measure(cands, sample.runner())
    best, why = choose(measured)
    path = None
    if not dry_run:
        path = write_profile(entry_for(best, why, input), sample.device_name, sample.klass)
    if as_json:
        click.echo(json.dumps({"device": sample.device_name, "size_class": sample.klass, "profile": path, "why": why,
                               "chosen": dataclasses.asdict(best.candidate),
                               "measured": [{**dataclasses.asdict(m.candidate), "fps": m.fps, "error": m.error,
                                             "stages": dataclasses.asdict(m.stages) if m.stages else None, "bound": m.stages.bound() if m.stages else None}
                                            for m in measured]}, sort_keys=True))
        return
    click.echo(f"{'setting':<44} {'fps':>8}")
    for m in measured:
        mark = " <- chosen" if m is best else (" (default)" if m is measured[0] else "")
        click.echo(f"{m.candidate.label():<44} {m.fps:>8.3f}{mark}" if m.fps else f"{m.candidate.label():<44} {'failed':>8}: {m.error}")
    click.echo(f"chose {why}")
    if best.stages is not None:
        click.echo(f"  {best.stages.line()}")
    click.echo(f"wrote {path} [{sample.device_name} / {sample.klass}]; `farm submit` uses it for options it is not given"
               if path else "not written (--dry-run)")
