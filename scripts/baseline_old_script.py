#!/usr/bin/env python
"""The single-machine script farm grew from, rewritten as the baseline for benchmarks.

As the issue describes it: frames read one after another with cv2.VideoCapture; every frame through
GFPGANer.enhance(frame, has_aligned=False, only_center_face=False, paste_back=True) with GFPGAN v1.4
(clean architecture, upscale 4) and a RealESRGANer (RRDBNet x4plus, tile 6000, tile_pad 10) as its
background upsampler; each result written as JPEG quality 95 by a 6-thread pool that records the
last frame written in checkpoint.txt (a rerun continues after it); then the JPEG sequence encoded
with libx264 CRF 18 yuv420p at a fixed rate, scaled and padded to 1920x1080, with the source audio
copied. There is no ffmpeg binary here, so the final encode uses PyAV (the same libx264); the scale
is OpenCV's bicubic, as ffmpeg's default scaler is.

Two seams let benchmarks run it offline on random weights: --weights-dir (facexlib's detector and
parser) and --face-detector scripted:PATH (farm.testing.ScriptedFaceDetector decides the faces),
both through farm.enhance.facexlib_setup, which changes nothing else about GFPGANer.
The last line printed is a JSON object with the timings.

    .venv/bin/python scripts/baseline_old_script.py in.mp4 -o out.mp4 --work work/ \\
        --sr-weights RealESRGAN_x4plus.pth --face-weights GFPGANv1.4.pth --weights-dir weights/
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

T_START = time.perf_counter()

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def load_models(args):
    from farm.enhance.patches import facexlib_setup, install_torchvision_shim
    from farm.testing.fakes import install_fakes

    install_fakes()  # --face-detector scripted:PATH
    install_torchvision_shim()
    import torch
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from gfpgan import GFPGANer
    from realesrgan import RealESRGANer

    device = torch.device(args.device)
    half = args.fp16 if args.fp16 is not None else args.device == "cuda"
    model = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    upsampler = RealESRGANer(scale=4, model_path=args.sr_weights, model=model, tile=6000, tile_pad=10, pre_pad=10, half=half, device=device)
    with facexlib_setup(args.weights_dir, args.face_detector):
        restorer = GFPGANer(model_path=args.face_weights, upscale=4, arch="clean", channel_multiplier=2, bg_upsampler=upsampler, device=device)
    return restorer


def enhance_frames(args, restorer) -> tuple[int, float, int]:
    frames_dir = os.path.join(args.work, "frames")
    os.makedirs(frames_dir, exist_ok=True)
    checkpoint = os.path.join(args.work, "checkpoint.txt")
    done = int(open(checkpoint).read().strip()) if os.path.exists(checkpoint) else -1
    lock = threading.Lock()
    state = {"last": done}

    def write(number: int, image: np.ndarray) -> None:
        cv2.imwrite(os.path.join(frames_dir, f"{number:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        with lock:
            state["last"] = max(state["last"], number)
            with open(checkpoint, "w") as f:
                f.write(str(state["last"]))

    cap = cv2.VideoCapture(args.input)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    number, faces = 0, 0
    with ThreadPoolExecutor(6) as pool:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if number > done:
                _, restored, output = restorer.enhance(frame, has_aligned=False, only_center_face=False, paste_back=True)
                faces += len(restored)
                pool.submit(write, number, output)
            number += 1
    cap.release()
    return number, fps, faces


def encode(args, fps: float) -> None:
    """JPEG sequence → libx264 CRF 18 yuv420p at a fixed rate, fitted into 1920x1080 and padded,
    with the source's audio packets copied."""
    import av

    paths = sorted(glob.glob(os.path.join(args.work, "frames", "*.jpg")))
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(args.input) as source, av.open(args.output, "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 1920, 1080, "yuv420p"
        video.options = {"crf": "18"}
        audio_in = source.streams.audio[0] if source.streams.audio else None
        audio_out = out.add_stream_from_template(audio_in) if audio_in is not None else None
        for i, path in enumerate(paths):
            image = cv2.imread(path)
            h, w = image.shape[:2]
            k = min(1920 / w, 1080 / h)
            fw, fh = int(w * k) // 2 * 2, int(h * k) // 2 * 2
            canvas = np.zeros((1080, 1920, 3), np.uint8)
            x, y = (1920 - fw) // 2, (1080 - fh) // 2
            canvas[y : y + fh, x : x + fw] = cv2.resize(image, (fw, fh), interpolation=cv2.INTER_CUBIC)
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts = i
            frame.time_base = 1 / rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio_in is not None:
            for packet in source.demux(audio_in):
                if packet.dts is None:
                    continue
                packet.stream = audio_out
                out.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--work", required=True, help="frames/ and checkpoint.txt go here")
    parser.add_argument("--sr-weights", required=True, help="RRDBNet x4plus weights")
    parser.add_argument("--face-weights", required=True, help="GFPGAN v1.4 (clean, channel multiplier 2) weights")
    parser.add_argument("--weights-dir", required=True, help="facexlib's detection_Resnet50_Final.pth and parsing_parsenet.pth")
    parser.add_argument("--face-detector", default="retinaface_resnet50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()

    t0 = time.perf_counter()
    restorer = load_models(args)
    t1 = time.perf_counter()
    frames, fps, faces = enhance_frames(args, restorer)
    t2 = time.perf_counter()
    encode(args, fps)
    t3 = time.perf_counter()
    print(json.dumps({
        "frames": frames, "faces": faces, "import_s": round(t0 - T_START, 3), "load_s": round(t1 - t0, 3),
        "frames_s": round(t2 - t1, 3), "encode_s": round(t3 - t2, 3), "total_s": round(t3 - T_START, 3),
    }))


if __name__ == "__main__":
    main()
