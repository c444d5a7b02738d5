"""Fakes shipped with farm, so the whole pipeline (Ray included) runs on a CPU in seconds, and the
real model code paths run with small randomly initialised weights of the real architectures.

- :class:`FakeEnhancer`: nearest-neighbour upscaling, optionally slow, failing or hanging on
  chosen frames; selected with model names such as ``fake`` or ``fake:scale=4,ms=5``.
- :class:`ScriptedFaceDetector`: a face detector whose answers are given per frame in a file.
- :func:`make_test_clip`: small synthetic videos with the properties that break video tools.
- ``write_*_weights``: random weights in the layouts the real loaders read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, cast, Sequence

import numpy as np

from farm.video.geometry import Geometry, place

# ----------------------------------------------------------------------------------------------
# Fake enhancer


@dataclass
class FakeEnhancer:
    """Nearest-neighbour x``scale``; deterministic, so expected output is easy to compute.

    Model-name options (``fake:key=value,...``): ``scale`` (int, default 2); ``ms`` (milliseconds
    spent per frame); ``fail_frames`` (frame numbers joined by ``+`` that always fail);
    ``hang_frames`` with ``hang_once=PATH`` (hang forever on those frames the first time only: the
    marker file PATH records that it happened)."""

    model_scale: int = 2
    ms: float = 0.0
    fail_frames: frozenset[int] = frozenset()
    hang_frames: frozenset[int] = frozenset()
    hang_once: str | None = None
    geometry: Geometry | None = None
    faces_found: int = 0
    frames_done: int = field(default=0)

    @classmethod
    def parse(cls, name: str) -> FakeEnhancer:
        """Build from a model name such as ``fake:scale=4,ms=2,fail_frames=3+9``."""
        _, _, options = name.partition(":")
        kwargs: dict[str, Any] = {}
        for item in filter(None, options.split(",")):
            key, _, value = item.partition("=")
            if key == "scale":
                kwargs["model_scale"] = int(value)
            elif key == "ms":
                kwargs["ms"] = float(value)
            elif key in ("fail_frames", "hang_frames"):
                kwargs[key] = frozenset(int(v) for v in value.split("+") if v)
            elif key == "hang_once":
                kwargs["hang_once"] = value
            else:
                raise ValueError(f"unknown fake enhancer option {key!r} in {name!r}")
        return cls(**kwargs)

    def describe(self) -> dict[str, Any]:
        return {"device": "cpu", "device_name": "fake", "precision": "fp32", "model_scale": self.model_scale, "face": False}

    def enhance(self, frame: np.ndarray, number: int) -> np.ndarray:
        from farm.errors import EnhanceError

        if self.ms:
            time.sleep(self.ms / 1000)
        if number in self.fail_frames:
            raise EnhanceError(f"frame {number}: the model failed: injected failure")
        if number in self.hang_frames and self.hang_once and not os.path.exists(self.hang_once):
            with open(self.hang_once, "w") as f:
                f.write(str(os.getpid()))
            while True:
                time.sleep(3600)
        self.frames_done += 1
        return fake_output(frame, self.model_scale, self.geometry)


def fake_output(frame: np.ndarray, model_scale: int, geometry: Geometry | None) -> np.ndarray:
    """What :class:`FakeEnhancer` returns for ``frame``: the reference for tests."""
    import cv2

    up = np.repeat(np.repeat(frame, model_scale, axis=0), model_scale, axis=1)
    if geometry is None:
        return up
    if (up.shape[1], up.shape[0]) != geometry.picture:
        up = cv2.resize(up, geometry.picture, interpolation=cv2.INTER_NEAREST)
    return place(up, geometry)


# ----------------------------------------------------------------------------------------------
# Scripted face detector


def frame_key(image: np.ndarray) -> str:
    """A short content key for a decoded frame."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:20]


def face_row(x: float, y: float, size: float, score: float = 0.99) -> list[float]:
    """A detector result row (box, score, five landmarks) for an upright face of about ``size``
    pixels whose box starts at ``(x, y)``; landmarks sit where FFHQ's template puts them."""
    template = np.array([[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]])
    marks = template / 512.0 * size + np.array([x, y])
    return [x, y, x + size, y + size, score, *marks.reshape(-1).tolist()]


class ScriptedFaceDetector:
    """Answers ``detect_faces`` from a JSON file mapping :func:`frame_key` to result rows; frames
    not in the file have no faces. Used as ``--face-detector scripted:PATH``."""

    def __init__(self, path: str) -> None:
        with open(path) as f:
            self.faces: dict[str, list[list[float]]] = json.load(f)

    def detect_faces(self, image: np.ndarray, conf_threshold: float = 0.8, *args, **kwargs) -> np.ndarray:
        rows = [r for r in self.faces.get(frame_key(image), []) if r[4] > conf_threshold]
        return np.array(rows, dtype=np.float32).reshape(-1, 15)

    # facexlib moves its detector between devices and modes; the script has neither.
    def to(self, *args, **kwargs) -> ScriptedFaceDetector:
        return self

    def eval(self) -> ScriptedFaceDetector:
        return self


def write_face_script(path: str, faces: dict[str, list[list[float]]]) -> str:
    with open(path, "w") as f:
        json.dump(faces, f)
    return path


# ----------------------------------------------------------------------------------------------
# Test clips


def pattern_frame(number: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, moving RGB pattern that differs on every frame (codecs compress it well)."""
    y, x = np.mgrid[0:height, 0:width]
    k = number + seed * 101
    r = (x * 4 + k * 3) % 256
    g = (y * 5 + k * 7) % 256
    b = ((x + y) * 2 + k * 11) % 256
    img = np.stack([r, g, b], axis=-1).astype(np.uint8)
    # A bright square that moves, so motion estimation has something to follow.
    s = max(2, min(width, height) // 5)
    cx, cy = (k * 3) % max(1, width - s), (k * 2) % max(1, height - s)
    img[cy : cy + s, cx : cx + s] = (250, 240, 20)
    return img


#: Flat colours the scenes of :func:`scene_frame` are tinted with (BGR), in an order where each
#: (cyclically) is at least 80 luma levels from the next: 20, 230, 67, 149.
SCENE_TINTS = ((20, 20, 20), (230, 230, 230), (200, 60, 30), (40, 200, 90))


def scene_frame(number: int, width: int, height: int, cuts: Sequence[int]) -> np.ndarray:
    """A frame of a video whose scene changes at each frame of ``cuts`` (sorted): every scene is
    its own moving :func:`pattern_frame` blended half and half with its own flat tint, so the luma
    jumps at a cut and moves smoothly between cuts."""
    scene = sum(1 for c in cuts if c <= number)
    tint = np.array(SCENE_TINTS[scene % len(SCENE_TINTS)], np.uint16)
    pattern = pattern_frame(number, width, height, seed=scene).astype(np.uint16)
    return ((pattern + tint) // 2).astype(np.uint8)


def make_scene_clip(path: str, cuts: Sequence[int], *, frames: int = 72, size: tuple[int, int] = (96, 64), fps: int = 24, gop: int = 250) -> str:
    """An H.264 clip of :func:`scene_frame` scenes changing at ``cuts``, keyframes every ``gop``
    frames (x264's own scene-cut keyframes off, so the source's keyframes say nothing of the cuts)."""
    import av

    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"g": str(gop), "sc_threshold": "0", "x264-params": "scenecut=0"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(scene_frame(i, size[0], size[1], cuts), format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def vfr_pts(frames: int, time_base: Fraction) -> list[int]:
    """Timestamps that change rate twice: ~30 fps, then ~15 fps, then ~24 fps."""
    pts, t = [], Fraction(0)
    for i in range(frames):
        pts.append(int(t / time_base))
        t += Fraction(1, 30) if i < frames // 3 else Fraction(1, 15) if i < 2 * frames // 3 else Fraction(1, 24)
    return pts


#: A minimal ASS header: FFmpeg's text subtitle encoders refuse to open without one.
_ASS_HEADER = (
    "[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
    "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
    "MarginR, MarginV, Encoding\n"
    "Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
).encode()


def make_test_clip(
    path: str,
    *,
    frames: int = 60,
    size: tuple[int, int] = (64, 48),
    fps: int = 24,
    vfr: bool = False,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    bframes: int = 2,
    gop: int = 12,
    audio: bool = True,
    audio_tracks: int = 1,
    subtitles: Sequence[tuple[float, float, str]] = (),
    chapters: Sequence[tuple[float, float, str]] = (),
    start_s: float = 0.0,
    rotation: int = 0,
    options: dict[str, str] | None = None,
    seed: int = 0,
) -> str:
    """Write a small synthetic video to ``path`` (the extension picks the container).

    Args:
        vfr: timestamps change rate twice instead of a constant ``fps``.
        bframes, gop: encoder structure (B-frames reorder packets; the GOP sets seek points).
        audio_tracks: sine tones of different pitch, AAC (Opus in WebM), each covering the video.
        subtitles: ``(start_s, end_s, text)`` cues, written as SRT (mov_text in MP4).
        chapters: ``(start_s, end_s, title)``.
        start_s: every stream starts this late (broadcast captures rarely start at 0).
        rotation: display rotation in degrees, stored as the container's display matrix.
        options: extra encoder options.
    """
    import av

    from farm.video.encode import X265_FEW_FRAMES

    width, height = size
    time_base = Fraction(1, 1000) if vfr else Fraction(1, fps)
    offset = int(Fraction(start_s).limit_denominator(1000) / time_base)
    pts = [offset + p for p in (vfr_pts(frames, time_base) if vfr else range(frames))]
    duration_s = float((pts[-1] - offset + (time_base.denominator // 24 if vfr else 1)) * time_base)
    ext = os.path.splitext(path)[1].lower()
    out = av.open(path, "w")
    try:
        video = cast("av.video.stream.VideoStream", out.add_stream(codec, rate=fps))
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = time_base
        opts: dict[str, object] = {"g": str(gop)}
        if codec in ("libx264", "libx265"):
            # x265 sometimes returns a garbage dts for one or two frames with B-frames allowed.
            few = codec == "libx265" and frames <= X265_FEW_FRAMES
            opts.update({"bf": "0" if few else str(bframes), "preset": "veryfast", "crf": "20"})
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"  # x265 prints its settings to stderr otherwise
        opts.update(options or {})
        video.options = opts
        if rotation:
            video.set_display_rotation(rotation)
        tracks = []
        for t in range(audio_tracks if audio else 0):
            stream = cast("av.audio.stream.AudioStream", out.add_stream("libopus" if ext == ".webm" else "aac", rate=48000))
            stream.layout = "mono"
            stream.metadata["language"] = ["eng", "fra", "deu"][t % 3]
            tracks.append(stream)
        subs = None
        if subtitles:
            subs = out.add_stream("mov_text" if ext in (".mp4", ".mov") else "subrip")
            subs.codec_context.subtitle_header = _ASS_HEADER
            subs.metadata["language"] = "eng"
        if chapters:
            out.set_chapters(
                [
                    {"id": i + 1, "start": int(a * 1000), "end": int(b * 1000), "time_base": Fraction(1, 1000), "metadata": {"title": title}}
                    for i, (a, b, title) in enumerate(chapters)
                ]
            )
        out.start_encoding()
        high = "10" in pix_fmt or "12" in pix_fmt or "16" in pix_fmt
        for i, p in enumerate(pts):
            img = pattern_frame(i, width, height, seed)
            if high:
                frame = av.VideoFrame.from_ndarray(img.astype(np.uint16) * 257 + (i % 7) * 3, format="rgb48le")
            else:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = p
            frame.time_base = time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for t, stream in enumerate(tracks):
            _write_tone(out, stream, duration_s, 330.0 * (t + 1), start_s)
        if subs is not None:
            _write_subtitles(out, subs, subtitles, start_s)
    finally:
        out.close()
    return path


def _write_tone(out, stream, duration_s: float, hz: float, start_s: float = 0.0) -> None:
    import av

    rate = 48000
    total, done = int(rate * duration_s), 0
    first = int(rate * start_s)
    frame_size = stream.codec_context.frame_size or 1024
    while done < total:
        n = min(frame_size, total - done)
        samples = (0.2 * np.sin(2 * np.pi * hz * np.arange(done, done + n) / rate)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = first + done
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
        done += n
    out.mux(stream.encode(None))


def _write_subtitles(out, stream, cues: Sequence[tuple[float, float, str]], start_s: float = 0.0) -> None:
    import av

    for start, end, text in cues:
        if stream.codec_context.name == "mov_text":
            payload = len(text.encode()).to_bytes(2, "big") + text.encode()
        else:
            payload = text.encode()
        packet = av.Packet(payload)
        packet.stream = stream
        packet.time_base = Fraction(1, 1000)
        packet.pts = packet.dts = int((start + start_s) * 1000)
        packet.duration = int((end - start) * 1000)
        out.mux(packet)


def trim_with_stream_copy(source: str, path: str, first_frame: int) -> str:
    """Cut ``source`` (an MP4/MOV) at video frame ``first_frame`` without re-encoding, as
    ``ffmpeg -ss T -i IN -c copy OUT.mp4`` does: video packets start at the keyframe before the cut,
    timestamps are shifted so the cut is at 0, and the mov muxer writes an edit list that hides the
    packets before it. Readers see those packets with ``is_discard`` set; their only keyframe is
    one of them. Other streams are cut at the same time.

    Raises:
        ValueError: the cut is on a keyframe (there would be no discard packets).
    """
    import av

    with av.open(source) as src, av.open(path, "w", format=os.path.splitext(path)[1].lstrip(".") or "mp4") as out:
        vs = src.streams.video[0]
        packets = [(int(p.pts), p) for p in src.demux() if p.size and p.pts is not None]
        video = [(pts, p.is_keyframe) for pts, p in packets if p.stream_index == vs.index]
        cut = sorted(pts for pts, _ in video)[first_frame]
        seek = max(pts for pts, key in video if key and pts <= cut)
        if seek == cut:
            raise ValueError(f"frame {first_frame} is a keyframe; cut mid-GOP to get an edit list")
        cut_s = cut * Fraction(vs.time_base or 1)
        copies = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for s in src.streams:
            copies[s.index].metadata.update(s.metadata)
        started = False
        for pts, p in packets:
            tb = Fraction(p.time_base)
            shift = int(cut_s / tb)
            if p.stream_index == vs.index:
                started = started or (p.is_keyframe and pts == seek)
                if not started:
                    continue
            elif pts * tb < cut_s:
                continue
            p.stream = copies[p.stream_index]
            p.pts = pts - shift
            p.dts = p.dts - shift if p.dts is not None else None
            out.mux(p)
    return path


#: The clips of :func:`corpus`: each is a property of real-world video that breaks video tools.
CORPUS = (
    "cfr",  # constant frame rate, H.264 without B-frames, AAC
    "vfr",  # three frame rates in one MKV
    "bframes",  # B-frame pyramid in MP4: packets out of presentation order, negative DTS
    "open_gop_hevc",  # HEVC CRA keyframes with leading (RASL) pictures
    "mpegts",  # MPEG-TS: no seek index, every stream starts at 1.4 s, ADTS AAC
    "edit_list",  # MP4 cut by stream copy: leading discard packets, the only keyframe before 0 among them
    "rotation",  # phone clip with a 90-degree display matrix
    "odd_size",  # 33x25 VP9 in WebM with Opus (a browser screen capture)
    "ten_bit",  # HEVC Main10 4:2:0 in MP4
    "multi_track",  # two audio tracks, SRT subtitles and chapters in MKV
    "no_audio",  # video only
    "single_frame",  # one frame
    "long_gop",  # 270 frames and a single keyframe: every shard starts mid-GOP
)


def corpus(directory: str, names: Sequence[str] = CORPUS) -> dict[str, str]:
    """Write the test corpus (tiny clips, a few hundred KB in all) into ``directory``.

    Returns:
        ``{name: path}`` for ``names`` (all of :data:`CORPUS` by default), in that order.
    """
    os.makedirs(directory, exist_ok=True)
    d = lambda name: os.path.join(directory, name)  # noqa: E731
    hevc = {"x265-params": "log-level=error:open-gop=1:keyint=8:min-keyint=8:scenecut=0"}
    makers: dict[str, Any] = {
        "cfr": lambda: make_test_clip(d("cfr.mp4"), frames=24, size=(32, 24), bframes=0, gop=8),
        "vfr": lambda: make_test_clip(d("vfr.mkv"), frames=30, size=(32, 24), vfr=True, gop=10),
        "bframes": lambda: make_test_clip(d("bframes.mp4"), frames=30, size=(32, 24), bframes=3, gop=10, options={"b_strategy": "0"}),
        "open_gop_hevc": lambda: make_test_clip(d("open_gop_hevc.mkv"), frames=30, size=(32, 24), codec="libx265", bframes=3, gop=8, options=hevc),
        "mpegts": lambda: make_test_clip(d("mpegts.ts"), frames=30, size=(32, 24), bframes=2, gop=10, start_s=1.4),
        "edit_list": lambda: trim_with_stream_copy(
            make_test_clip(d("edit_list_uncut.mp4"), frames=40, size=(32, 24), bframes=2, gop=12, options={"sc_threshold": "0"}),
            d("edit_list.mp4"),
            17,
        ),
        "rotation": lambda: make_test_clip(d("rotation.mp4"), frames=12, size=(32, 24), rotation=90),
        "odd_size": lambda: make_test_clip(d("odd_size.webm"), frames=12, size=(33, 25), codec="libvpx-vp9", gop=6),
        "ten_bit": lambda: make_test_clip(d("ten_bit.mp4"), frames=12, size=(32, 24), codec="libx265", pix_fmt="yuv420p10le", gop=6),
        "multi_track": lambda: make_test_clip(
            d("multi_track.mkv"),
            frames=24,
            size=(32, 24),
            audio_tracks=2,
            subtitles=[(0.0, 0.3, "first line"), (0.5, 0.9, "second line")],
            chapters=[(0.0, 0.5, "Opening"), (0.5, 1.0, "Ending")],
        ),
        "no_audio": lambda: make_test_clip(d("no_audio.mp4"), frames=12, size=(32, 24), audio=False),
        "single_frame": lambda: make_test_clip(d("single_frame.mp4"), frames=1, size=(32, 24), audio=False),
        "long_gop": lambda: make_test_clip(
            d("long_gop.mkv"), frames=270, size=(32, 24), gop=300, audio=False, options={"sc_threshold": "0", "keyint_min": "300"}
        ),
    }
    unknown = set(names) - set(makers)
    if unknown:
        raise ValueError(f"unknown corpus clips {sorted(unknown)}; known: {', '.join(CORPUS)}")
    return {name: makers[name]() for name in names}


# ----------------------------------------------------------------------------------------------
# Random weights in the real architectures


def _save(state: dict, path: str, key: str | None = "params_ema") -> str:
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({key: state} if key else state, path)
    return path


def write_rrdbnet_weights(
    path: str, *, scale: int = 4, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 4, seed: int = 0
) -> str:
    """Random RRDBNet weights (tiny by default; ``num_feat=64, num_block=23, num_grow_ch=32`` is
    RealESRGAN_x4plus's size).

    Freshly initialised RRDBNets output values just below 0, which RealESRGANer clamps to a black
    frame, and a comparison of black frames proves nothing. The last layer is therefore rescaled
    so that, on test patterns, each channel's output has mean 0.5 and deviation 0.2: the output
    is a picture that depends on every input pixel nearby, and on the input's precision."""
    import torch

    from farm.enhance import install_torchvision_shim

    install_torchvision_shim()
    from basicsr.archs.rrdbnet_arch import RRDBNet

    torch.manual_seed(seed)
    net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch, scale=scale)
    probe = np.stack([pattern_frame(i, 32, 24) for i in range(4)]).astype(np.float32) / 255
    with torch.no_grad():
        out = net(torch.from_numpy(probe).permute(0, 3, 1, 2))
        mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3)).clamp_min(1e-6)
        gain = 0.2 / std
        net.conv_last.weight.mul_(gain[:, None, None, None])
        net.conv_last.bias.copy_((net.conv_last.bias - mean) * gain + 0.5)
    return _save(net.state_dict(), path)


def write_compact_weights(path: str, *, scale: int = 4, num_feat: int = 8, num_conv: int = 2, seed: int = 0) -> str:
    """Random SRVGGNetCompact weights (``num_feat=64, num_conv=32`` is realesr-general-x4v3's size)."""
    import torch

    from farm.enhance import install_torchvision_shim

    install_torchvision_shim()
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    torch.manual_seed(seed)
    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=scale, act_type="prelu")
    return _save(net.state_dict(), path, key="params")


def write_gfpgan_weights(path: str, *, channel_multiplier: int = 1, seed: int = 0) -> str:
    """Random GFPGAN (clean architecture) weights; GFPGANer's face size is fixed at 512."""
    import torch

    from farm.enhance import install_torchvision_shim

    install_torchvision_shim()
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    torch.manual_seed(seed)
    net = GFPGANv1Clean(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=channel_multiplier,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )
    return _save(net.state_dict(), path)


def write_face_helper_weights(weights_dir: str, *, find_no_faces: bool = True, seed: int = 0) -> tuple[str, str]:
    """Random facexlib detector (RetinaFace-ResNet50) and parser (ParseNet) weights under their
    registry names. With ``find_no_faces`` the detector's classification head is zeroed, so it
    finds no face (random detectors otherwise "find" dozens per frame)."""
    import torch

    from farm.enhance import install_torchvision_shim
    from farm.models import FACE_DETECTOR, FACE_PARSER

    install_torchvision_shim()
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.parsenet import ParseNet

    torch.manual_seed(seed)
    detector = RetinaFace(network_name="resnet50", half=False, device="cpu").state_dict()
    if find_no_faces:
        for key, value in detector.items():
            if key.startswith("ClassHead."):
                value.zero_()
                if key.endswith(".bias"):
                    value[1::2] = -100.0  # "face" logit far below "background" for every anchor
    parser = ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict()
    det_path = _save(detector, os.path.join(weights_dir, FACE_DETECTOR.file), key=None)
    parse_path = _save(parser, os.path.join(weights_dir, FACE_PARSER.file), key=None)
    return det_path, parse_path


# ----------------------------------------------------------------------------------------------
# Legacy MPEG-4 ASP (DivX-style) clips

_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 part 2 VOP start code
_DIVX_PACKED_USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p"  # the trailing 'p' says "packed B-frames"


def make_mpeg4_avi(
    path: str,
    *,
    frames: int = 24,
    size: tuple[int, int] = (32, 24),
    fps: int = 24,
    bframes: int = 1,
    gop: int = 12,
    packed: bool = False,
    audio: str | None = "ac3",
    seed: int = 0,
) -> str:
    """Write an MPEG-4 ASP (the ``mpeg4`` encoder, as DivX/Xvid) AVI with ``bframes`` B-frames
    and an ``audio`` track (``ac3``, ``libmp3lame`` or None).

    In AVI every packet's timestamp is its decode-order counter. With ``packed`` the video is
    repacked as DivX 5 wrote it (see :func:`pack_bframes`), which FFmpeg's ``mpeg4_unpack_bframes``
    filter undoes.
    """
    import av

    width, height = size
    time_base = Fraction(1, fps)
    with av.open(os.devnull, "w", format="avi") as scratch:
        enc = cast("av.video.stream.VideoStream", scratch.add_stream("mpeg4", rate=fps))
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.codec_context.time_base = time_base
        enc.options = {"g": str(gop), "bf": str(bframes), "b_strategy": "0", "qscale": "4"}
        payloads: list[tuple[bytes, bool]] = []
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(i, width, height, seed), format="rgb24")
            frame.pts, frame.time_base = i, time_base
            payloads += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
        payloads += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
        extradata = enc.codec_context.extradata
    if packed:
        payloads = pack_bframes(payloads)
    with av.open(path, "w", format="avi") as out:
        video = cast("av.video.stream.VideoStream", out.add_stream("mpeg4", rate=fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = time_base
        if extradata:
            video.codec_context.extradata = extradata
        track = None
        if audio:
            track = cast("av.audio.stream.AudioStream", out.add_stream(audio, rate=48000))
            track.layout = "mono"
        out.start_encoding()
        for n, (data, key) in enumerate(payloads):
            packet = av.Packet(data)
            packet.stream, packet.time_base = video, time_base
            packet.pts = packet.dts = n
            packet.is_keyframe = key
            out.mux(packet)
        if track is not None:
            _write_tone(out, track, frames / fps, 440.0)
    return path


def pack_bframes(packets: Sequence[tuple[bytes, bool]]) -> list[tuple[bytes, bool]]:
    """Repack an unpacked MPEG-4 part 2 stream's ``(payload, is_keyframe)`` packets DivX-style:
    the first B-VOP of each run joins the reference VOP's packet before it, the run's other
    B-VOPs each move one packet earlier, and a tiny not-coded N-VOP packet fills the place freed
    at the end of the run, so there is still one packet per frame
    (``I0 P3 B1 B2`` becomes ``[I0] [P3 B1] [B2] [N]``). A 'p'-flagged DivX user-data string is
    put before the first VOP, as DivX 5 wrote it, so decoders know the stream is packed."""
    bits = _time_increment_bits(b"".join(p for p, _ in packets[:1]))
    nvop = _nvop(bits)
    out: list[tuple[bytes, bool]] = []
    pending_b = False  # inside a run of B-VOPs whose first moved into the reference packet
    for data, key in packets:
        if _vop_type(data) == "B":
            if pending_b:
                out.append((data, key))  # later B-VOPs of the run each move one packet earlier
            else:
                prev, prev_key = out[-1]
                out[-1] = (prev + data, prev_key)
                pending_b = True
            continue
        if pending_b:
            out.append((nvop, False))
            pending_b = False
        out.append((data, key))
    if pending_b:
        out.append((nvop, False))
    first, key = out[0]
    at = first.find(_VOP)
    out[0] = (first[:at] + _DIVX_PACKED_USER_DATA + first[at:], key)
    return out


def _vop_type(data: bytes) -> str:
    at = data.find(_VOP)
    return "IPBS"[data[at + 4] >> 6] if at >= 0 else "?"


def _time_increment_bits(data: bytes) -> int:
    """The width of vop_time_increment, from the video object layer header (ISO 14496-2 6.2.3)."""
    at = next(i for i in range(len(data) - 4) if data[i : i + 3] == b"\x00\x00\x01" and 0x20 <= data[i + 3] <= 0x2F)
    value, pos = int.from_bytes(data[at + 4 : at + 24], "big"), 0
    width = 160

    def read(n: int) -> int:
        nonlocal pos
        pos += n
        return (value >> (width - pos)) & ((1 << n) - 1)

    read(9)  # random_accessible_vol, video_object_type_indication
    if read(1):  # is_object_layer_identifier
        read(7)
    if read(4) == 15:  # aspect_ratio_info: extended PAR
        read(16)
    if read(1):  # vol_control_parameters
        read(3)
        if read(1):  # vbv_parameters
            read(79)
    read(3)  # video_object_layer_shape (rectangular), marker
    resolution = read(16)
    return max(1, (resolution - 1).bit_length())


def _nvop(time_increment_bits: int) -> bytes:
    """A not-coded P-VOP (vop_coded = 0): DivX's placeholder packet after a packed B-frame."""
    bits = "01" + "0" + "1" + "0" * time_increment_bits + "1" + "0"  # type P, time 0, not coded
    bits += "0" + "1" * (-(len(bits) + 1) % 8)  # next_start_code() stuffing
    return _VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


# ----------------------------------------------------------------------------------------------
# Interlaced clips and the legacy corpus (DVD, DV, broadcast, old web and desktop formats)


def field_pattern(t: float, width: int, height: int) -> np.ndarray:
    """An RGB picture at field time ``t`` (in fields): broad vertical stripes that move 6 pixels
    per field over gentle horizontal waves, so two fields of one frame differ wherever they meet
    (woven: comb measure about 2.6; one picture: about 0.5; bwdif's frames of it: about 0.66)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    stripes = 100 * np.sin(2 * np.pi * (x - 6 * t) / 32)
    waves = 20 * np.sin(2 * np.pi * y / 16)
    return np.clip(np.stack([128 + stripes, 128 + waves, 128 - stripes / 2 + waves / 2], axis=-1), 0, 255).astype(np.uint8)


def woven_frame(number: int, width: int, height: int, top_first: bool = True) -> np.ndarray:
    """Frame ``number`` of an interlaced camera: its two fields are pictures taken a field apart
    (the first in time on the even lines for top field first, on the odd lines otherwise)."""
    first, second = field_pattern(2 * number, width, height), field_pattern(2 * number + 1, width, height)
    frame = first.copy()
    if top_first:
        frame[1::2] = second[1::2]
    else:
        frame[0::2] = second[0::2]
    return frame


def comb_measure(picture: np.ndarray) -> float:
    """Mean absolute difference of adjacent lines over that of lines two apart (the same field):
    about 0.5 for smooth progressive pictures, well above 1 for a woven pair of moving fields."""
    p = picture.astype(np.float64)
    adjacent = np.abs(p[1:] - p[:-1]).mean()
    same_field = np.abs(p[2:] - p[:-2]).mean()
    return float(adjacent / same_field) if same_field else 0.0


def _mark_fields(frames: list, field_order: str) -> list:
    """The frames flagged interlaced with ``field_order`` (``tff`` or ``bff``), as a capture card
    flags them (PyAV cannot set the flags; FFmpeg's setfield filter does)."""
    import av

    first = frames[0]
    graph = av.filter.Graph()
    src = graph.add_buffer(width=first.width, height=first.height, format=first.format.name, time_base=first.time_base)
    mark = graph.add("setfield", field_order)
    sink = graph.add("buffersink")
    src.link_to(mark)
    mark.link_to(sink)
    graph.configure()
    out = []
    for frame in frames:
        graph.push(frame)
        out.append(graph.pull())
    return out


def make_interlaced_clip(path: str, *, top_first: bool = True, **kwargs: Any) -> str:
    """An interlaced video with real combing (see :func:`woven_frame`): :func:`make_legacy_clip`
    with its frames flagged and the encoder told the field order."""
    return make_legacy_clip(path, interlaced="tff" if top_first else "bff", **kwargs)


def make_legacy_clip(
    path: str,
    *,
    frames: int = 12,
    size: tuple[int, int] = (64, 48),
    fps: int | Fraction = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    interlaced: str | None = None,
    format: str | None = None,
    options: dict[str, str] | None = None,
    sample_aspect_ratio: Fraction | None = None,
    color: dict[str, int] | None = None,
    audio: Sequence[dict] = (),
    dvd_subtitles: bool = False,
    drop_frames: Sequence[int] = (),
) -> str:
    """A small video in an old or broadcast format.

    Args:
        interlaced: ``tff`` or ``bff``: woven fields (:func:`woven_frame`), flagged so, and the
            encoder told (``+ildct+ilme``, x264 ``tff``/``bff``); None: progressive
            (:func:`pattern_frame`).
        sample_aspect_ratio: written in the codec (DV's 4:3 and 16:9 flags come from it).
        color: codec context colour fields (``color_range``, ``color_primaries``, ...).
        audio: one dict per track: ``codec``, and optionally ``rate``, ``layout``, ``bit_rate``.
        dvd_subtitles: a DVD subpicture track with two tiny bitmaps (written packet by packet:
            FFmpeg's dvdsub encoder takes bitmaps PyAV cannot build).
        drop_frames: frame times left out, as a capture card drops frames; the AVI muxer writes
            an empty (null) chunk in each gap, as capture software did.
    """
    import av

    width, height = size
    rate = Fraction(fps)
    tb = 1 / rate
    out = av.open(path, "w", format=format)
    try:
        video = cast("av.video.stream.VideoStream", out.add_stream(codec, rate=rate))
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = tb
        if sample_aspect_ratio is not None:
            video.codec_context.sample_aspect_ratio = sample_aspect_ratio
        for key, value in (color or {}).items():
            setattr(video.codec_context, key, value)
        opts: dict[str, object] = {}
        if interlaced:
            video.codec_context.field_order = 2 if interlaced == "tff" else 3
            opts["flags"] = "+ildct+ilme"
            if codec == "libx264":
                opts.update({"x264-params": f"{interlaced}=1", "crf": "8"})
        if codec == "libx264":
            opts = {"preset": "veryfast", "crf": "18", "bf": "2", "g": "6", **opts}
        opts.update(options or {})
        video.options = opts
        tracks = []
        for t, spec in enumerate(audio):
            stream = cast("av.audio.stream.AudioStream", out.add_stream(spec["codec"], rate=spec.get("rate", 48000)))
            stream.layout = spec.get("layout", "stereo")
            if "bit_rate" in spec:
                stream.bit_rate = spec["bit_rate"]
            stream.metadata["language"] = ["eng", "fra", "deu"][t % 3]
            tracks.append(stream)
        subs = out.add_stream("dvd_subtitle") if dvd_subtitles else None
        out.start_encoding()
        pictures = []
        for i in range(frames):
            if i in drop_frames:
                continue
            rgb = woven_frame(i, width, height, interlaced == "tff") if interlaced else pattern_frame(i, width, height)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts, frame.time_base = i, tb
            pictures.append(frame)
        if interlaced:
            pictures = _mark_fields(pictures, interlaced)
        for frame in pictures:
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for t, stream in enumerate(tracks):
            _write_audio(out, stream, float(frames * tb), 330.0 * (t + 1))
        if subs is not None:
            for n, start_s in enumerate((0.04, float(frames * tb) / 2)):
                packet = av.Packet(_dvd_subpicture(n + 1))
                packet.stream = subs
                packet.time_base = Fraction(1, 90000)
                packet.pts = packet.dts = int(start_s * 90000)
                packet.duration = 9000
                out.mux(packet)
    finally:
        out.close()
    return path


def _dvd_subpicture(colour: int) -> bytes:
    """A DVD subpicture unit: a 2x2 bitmap of palette entry ``colour`` at the top left, shown at
    once (RLE lines "colour to the end of the line", one per field, then one control sequence)."""
    rle_top, rle_bottom = bytes([0x00, colour & 3]), bytes([0x00, colour & 3])
    control_at = 4 + len(rle_top) + len(rle_bottom)
    control = (
        (0).to_bytes(2, "big") + control_at.to_bytes(2, "big")  # no delay; the last sequence
        + bytes([0x03, 0x32, 0x10])  # palette
        + bytes([0x04, 0xFF, 0xF0])  # contrast (alpha)
        + bytes([0x05, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01])  # x 0..1, y 0..1
        + bytes([0x06]) + (4).to_bytes(2, "big") + (4 + len(rle_top)).to_bytes(2, "big")
        + bytes([0x01, 0xFF])  # start display; end
    )
    body = rle_top + rle_bottom + control
    return (4 + len(body)).to_bytes(2, "big") + control_at.to_bytes(2, "big") + body


def _write_audio(out, stream, duration_s: float, hz: float = 440.0) -> None:
    """A tone in the stream's own sample format and layout (legacy encoders take few formats)."""
    import av

    ctx = stream.codec_context
    rate = ctx.sample_rate
    fmt = ctx.format.name
    channels = ctx.layout.nb_channels
    frame_size = ctx.frame_size or 1024
    total, done = int(rate * duration_s), 0
    while done < total:
        n = min(frame_size, total - done) if ctx.frame_size == 0 else frame_size
        wave = 0.2 * np.sin(2 * np.pi * hz * np.arange(done, done + n) / rate)
        if fmt.startswith("s16"):
            data = (wave * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            data = (wave * 2**31).astype(np.int32)
        else:
            data = wave.astype(np.float32)
        planar = fmt.endswith("p")
        samples = np.tile(data, (channels, 1)) if planar else np.repeat(data, channels)[None]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=fmt, layout=ctx.layout.name)
        frame.sample_rate, frame.pts, frame.time_base = rate, done, Fraction(1, rate)
        out.mux(stream.encode(frame))
        done += n
    out.mux(stream.encode(None))


#: The clips of :func:`legacy_corpus`: old, broadcast and disc formats that farm meets in archives.
LEGACY_CORPUS = (
    "dvd_mpeg2",  # DVD: interlaced MPEG-2 (TFF) in an MPEG program stream, two AC3 tracks, DVD subpictures
    "dv_4_3",  # DV camcorder tape: 720x576 bottom field first, 4:3, raw DV stream
    "dv_16_9",  # DV widescreen in AVI with PCM audio
    "interlaced_h264",  # 25i broadcast: H.264 MBAFF top field first in MPEG-TS with MP2 audio
    "mjpeg_full_range",  # camera MJPEG (yuvj420p, full range) in AVI with PCM audio
    "hdr10_hevc",  # 10-bit HEVC with HDR10 tags (BT.2020, PQ, mastering display, MaxCLL) in MKV
    "wmv2_asf",  # Windows Media: WMV2 and WMA2 in ASF at 29.97 fps
    "flv1_mp3",  # old web video: Sorenson Spark (FLV1) and MP3 in FLV
    "divx_packed_ac3",  # DivX 5: MPEG-4 ASP with packed B-frames and AC3 in AVI
    "xvid_mp3",  # Xvid: MPEG-4 ASP with (unpacked) B-frames and MP3 in AVI
    "avi_dropped_frames",  # a capture with dropped frames: MPEG-4 in AVI with null chunks, MP3
    "anamorphic_h264",  # a 16:9 DVD re-encoded to H.264 in MP4, anamorphic (SAR 32:27), AAC
)

_HDR10 = (
    "log-level=error:keyint=6:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400"
)


def legacy_corpus(directory: str, names: Sequence[str] = LEGACY_CORPUS) -> dict[str, str]:
    """Write the legacy corpus (made with PyAV's encoders; the DV clips are about 0.9 MB each,
    DV has one frame size per TV system) into ``directory``.

    Returns:
        ``{name: path}`` for ``names`` (all of :data:`LEGACY_CORPUS` by default), in that order.
    """
    os.makedirs(directory, exist_ok=True)
    d = lambda name: os.path.join(directory, name)  # noqa: E731
    ntsc = Fraction(30000, 1001)
    makers: dict[str, Any] = {
        "dvd_mpeg2": lambda: make_legacy_clip(
            d("dvd_mpeg2.vob"), codec="mpeg2video", interlaced="tff", format="vob", options={"b": "2M", "g": "6", "bf": "2"},
            audio=[{"codec": "ac3"}, {"codec": "ac3"}], dvd_subtitles=True,
        ),
        "dv_4_3": lambda: make_legacy_clip(
            d("dv_4_3.dv"), codec="dvvideo", size=(720, 576), frames=6, interlaced="bff", sample_aspect_ratio=Fraction(16, 15), format="dv"
        ),
        "dv_16_9": lambda: make_legacy_clip(
            d("dv_16_9.avi"), codec="dvvideo", size=(720, 576), frames=6, interlaced="bff", sample_aspect_ratio=Fraction(64, 45),
            audio=[{"codec": "pcm_s16le"}],
        ),
        "interlaced_h264": lambda: make_legacy_clip(d("interlaced_h264.ts"), size=(48, 32), interlaced="tff", audio=[{"codec": "mp2"}]),
        "mjpeg_full_range": lambda: make_legacy_clip(
            d("mjpeg_full_range.avi"), codec="mjpeg", pix_fmt="yuvj420p", fps=15, options={"q:v": "3"},
            audio=[{"codec": "pcm_s16le", "layout": "mono"}],
        ),
        "hdr10_hevc": lambda: make_legacy_clip(d("hdr10_hevc.mkv"), codec="libx265", pix_fmt="yuv420p10le", fps=24, options={"x265-params": _HDR10}),
        "wmv2_asf": lambda: make_legacy_clip(
            d("wmv2_asf.wmv"), codec="wmv2", fps=ntsc, options={"g": "6"}, audio=[{"codec": "wmav2", "rate": 44100, "bit_rate": 64000}]
        ),
        "flv1_mp3": lambda: make_legacy_clip(d("flv1_mp3.flv"), codec="flv", fps=ntsc, options={"g": "6"}, audio=[{"codec": "libmp3lame", "rate": 44100}]),
        # 64x48: smaller B-frames can be 19 bytes, which mpeg4_unpack_bframes takes for placeholders
        "divx_packed_ac3": lambda: make_mpeg4_avi(d("divx_packed_ac3.avi"), size=(64, 48), bframes=2, gop=6, packed=True, audio="ac3"),
        "xvid_mp3": lambda: make_mpeg4_avi(d("xvid_mp3.avi"), size=(64, 48), bframes=1, gop=6, audio="libmp3lame"),
        "avi_dropped_frames": lambda: make_legacy_clip(
            d("avi_dropped_frames.avi"), codec="mpeg4", options={"g": "6", "qscale": "4"}, drop_frames=(3, 7, 8),
            audio=[{"codec": "libmp3lame", "rate": 44100}],
        ),
        "anamorphic_h264": lambda: make_legacy_clip(
            d("anamorphic_h264.mp4"), size=(72, 48), sample_aspect_ratio=Fraction(32, 27), audio=[{"codec": "aac"}]
        ),
    }
    unknown = set(names) - set(makers)
    if unknown:
        raise ValueError(f"unknown legacy clips {sorted(unknown)}; known: {', '.join(LEGACY_CORPUS)}")
    return {name: makers[name]() for name in names}
