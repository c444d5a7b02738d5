"""Small synthetic videos with the properties that break video tools: CFR and VFR timing, B-frames,
audio, subtitles, scene cuts, stream-copied trims, and a corpus of containers and codecs.
Over 300 lines because each clip maker is a recipe of PyAV calls that reads best whole."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any, Sequence, cast

import numpy as np

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
            write_tone(out, stream, duration_s, 330.0 * (t + 1), start_s)
        if subs is not None:
            _write_subtitles(out, subs, subtitles, start_s)
    finally:
        out.close()
    return path


def write_tone(out, stream, duration_s: float, hz: float, start_s: float = 0.0) -> None:
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
