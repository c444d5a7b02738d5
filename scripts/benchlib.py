"""Shared pieces of the benchmark scripts: the machine's description, full-size random weights,
clips with scripted faces, running farm and reading its shard logs."""

from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from typing import Any

# facexlib builds its detector with torchvision's deprecated `pretrained` argument.
warnings.filterwarnings("ignore", category=UserWarning, module="torchvision.models._utils")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The benchmarks run farm's fakes in this process (the fake model, the scripted face detector).
from farm.testing.fakes import install_fakes  # noqa: E402

install_fakes()


def machine() -> str:
    """'<date>, <CPU model> (<n> cores)[, <GPU>], load <1-min load average>'."""
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{datetime.date.today().isoformat()}, {cpu} ({os.cpu_count()} cores)"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text + f", load {os.getloadavg()[0]:.1f}"


def full_size_weights(folder: str, face: bool = True) -> dict[str, str]:
    """RealESRGAN_x4plus's architecture (RRDBNet 64/23/32, x4), GFPGAN v1.4's (clean, channel
    multiplier 2) and facexlib's detector and parser, all with random weights (written once)."""
    from farm.testing.weights import write_face_helper_weights, write_gfpgan_weights, write_rrdbnet_weights

    os.makedirs(folder, exist_ok=True)
    paths = {"sr": os.path.join(folder, "rrdbnet_x4plus_random.pth"), "face": os.path.join(folder, "gfpgan_v14_random.pth"),
             "dir": os.path.join(folder, "facexlib")}
    if not os.path.exists(paths["sr"]):
        write_rrdbnet_weights(paths["sr"], scale=4, num_feat=64, num_block=23, num_grow_ch=32)
    if face and not os.path.exists(paths["face"]):
        write_gfpgan_weights(paths["face"], channel_multiplier=2)
    if face and not os.path.isdir(paths["dir"]):
        write_face_helper_weights(paths["dir"], find_no_faces=True)
    return paths


def face_script(clip: str, faces: dict[int, list[list[float]]], path: str) -> str:
    """A scripted-detector file giving ``faces[i]`` on frame i, keyed both by the frame as PyAV
    decodes it (farm) and as cv2.VideoCapture decodes it (the old script): the two may differ."""
    import cv2

    from farm.testing.fakes import frame_key, write_face_script

    pyav = decode_bgr(clip)
    cap = cv2.VideoCapture(clip)
    opencv = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        opencv.append(frame)
    cap.release()
    script: dict[str, list[list[float]]] = {}
    for i, rows in faces.items():
        for frames in (pyav, opencv):
            if i < len(frames):
                script[frame_key(frames[i])] = rows
    return write_face_script(path, script)


def decode_bgr(path: str) -> list:
    """Every frame of the first video stream as PyAV decodes it for farm (BGR uint8)."""
    import av

    with av.open(path) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(c.streams.video[0])]


#: Ray runs its worker processes at niceness 15 (ray-project/ray#24928); benchmarks run the
#: processes they compare with farm at the same niceness, so that other work on a shared machine
#: slows both alike.
RAY_WORKER_NICENESS = 15


def run(cmd: list[str], env: dict | None = None, niceness: int = 0) -> tuple[float, str]:
    """Run a command (at ``niceness``); (wall seconds, stdout). Raises with its output when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def farm_submit(args: list[str], env: dict | None = None) -> tuple[float, dict[str, Any]]:
    """``farm submit ... --quiet --json``; (wall seconds, its JSON result)."""
    wall, out = run([sys.executable, "-m", "farm.testing.cli", "submit", *args, "--quiet", "--json"], env=env)
    return wall, json.loads(out.strip().splitlines()[-1])


def shard_logs(jobs_root: str, job_id: str) -> list[dict[str, Any]]:
    """The job's shard-attempt logs, each with ``started``/``ended`` (wall clock, from the file's
    modification time and the attempt's duration)."""
    records = []
    for path in glob.glob(os.path.join(jobs_root, job_id, "logs", "*.json")):
        with open(path) as f:
            record = json.load(f)
        record["ended"] = os.path.getmtime(path)
        record["started"] = record["ended"] - record["seconds"]
        records.append(record)
    return sorted(records, key=lambda r: r["started"])


def summed(logs: list[dict[str, Any]], key: str) -> float:
    return sum(r["timings"].get(key, 0.0) for r in logs)


def video_shape(path: str) -> tuple[int, int, int]:
    """(frames, width, height) of the first video stream, by decoding."""
    import av

    with av.open(path) as c:
        frames = list(c.decode(c.streams.video[0]))
        return len(frames), frames[0].width, frames[0].height
