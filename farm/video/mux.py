"""Final assembly: the segments' frames, each given its source pts from the index, interleaved with
every other stream of the source copied packet for packet, then checked against the index.

The lossless intermediate is remuxed untouched when the requested codec is the intermediate's;
otherwise frames are encoded once, here, with their source timestamps (never at a fixed rate)."""

from __future__ import annotations

import contextlib
import heapq
import io
import logging
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Callable, Iterator, Sequence

import av

from farm.config import OutputConfig
from farm.errors import MuxError, OutputError
from farm.video.deinterlace import FIELD_ORDER_CODES
from farm.video.encode import CODEC_SPECS, SEGMENT_CODEC, encodable_size, output_pix_fmt
from farm.video.index import FrameIndex, index_stream
from farm.video.probe import SourceInfo, open_input

log = logging.getLogger(__name__)

#: Output names whose extension picks the container; anything else is refused early.
CONTAINERS = {
    ".mkv": "matroska",
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".webm": "webm",
    ".ts": "mpegts",
    ".nut": "nut",
    ".avi": "avi",
}


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """A finished shard's segment: where to read it and which frames it holds."""

    opener: Callable[[], IO | str]
    start: int
    stop: int


def container_for(output: str) -> str:
    """The FFmpeg muxer for an output file name.

    Raises:
        OutputError: the extension is not one farm writes.
    """
    ext = os.path.splitext(output)[1].lower()
    if ext not in CONTAINERS:
        raise OutputError(
            f"cannot tell the container from output name {os.path.basename(output)!r}; "
            f"use one of {', '.join(sorted(CONTAINERS))} (or --codec png with a directory)"
        )
    return CONTAINERS[ext]


#: Codecs FFmpeg's MPEG-TS muxer gives a standard stream type. It writes any other codec as an
#: opaque private stream that no reader (FFmpeg included) recognises, so farm refuses those early.
MPEGTS_CODECS = frozenset(
    "mpeg1video mpeg2video mpeg4 h264 hevc vvc cavs dirac vc1 av1 mp2 mp3 aac aac_latm ac3 eac3 dts truehd "
    "opus s302m pcm_bluray dvb_subtitle dvb_teletext hdmv_pgs_subtitle hdmv_text_subtitle arib_caption "
    "smpte_klv timed_id3".split()
)
#: Containers suggested, in this order, when the requested one cannot hold a stream.
SUGGESTED = (".mkv", ".mp4", ".mov", ".nut")


def check_streams_fit(source: SourceInfo, output: str, codec: str) -> None:
    """Refuse, before any work, an output container that cannot hold the video codec or one of the
    source's other streams (which are copied unchanged).

    The answer comes from the muxer itself: a header is written to memory with the same streams the
    mux will add (FFmpeg's own codec tables decide), so nothing is guessed from extension lists.

    Raises:
        OutputError: naming the stream and suggesting a container that can hold it.
    """
    fmt = container_for(output)
    ext = os.path.splitext(output)[1].lower()
    encoder = CODEC_SPECS[codec].encoder
    with open_input(source.location) as src:
        others = [s for s in src.streams if s.index != source.video_stream]
        if _header_error(fmt, encoder, others) is None:
            return
        if _header_error(fmt, encoder, []) is not None:
            raise OutputError(
                f"--codec {codec} cannot be stored in {ext} ({fmt}); {_suggest(ext, encoder, [])}"
            )
        for stream in others:
            if _header_error(fmt, encoder, [stream]) is not None:
                raise OutputError(
                    f"source stream #{stream.index} ({stream.type}, {_codec_name(stream)}) cannot be copied into "
                    f"{ext} ({fmt}); {_suggest(ext, encoder, others)}"
                )
        raise OutputError(f"the source's streams together cannot be stored in {ext} ({fmt}); {_suggest(ext, encoder, others)}")


def _codec_name(stream) -> str:
    ctx = stream.codec_context
    return ctx.codec.canonical_name if ctx is not None else "none"


def _header_error(fmt: str, encoder: str, templates: list) -> str | None:
    """Why a ``fmt`` file with a video stream of ``encoder`` plus copies of ``templates`` cannot
    be written, or None if its header writes."""
    if fmt == "mpegts":
        codecs = [av.codec.Codec(encoder, "w").canonical_name] + [_codec_name(s) for s in templates]
        unreadable = [c for c in codecs if c not in MPEGTS_CODECS]
        if unreadable:
            return f"MPEG-TS has no stream type for {', '.join(unreadable)}"
    out = av.open(io.BytesIO(), "w", format=fmt)
    try:
        # A real, tiny encoder: some muxers (Matroska with H.264) need its extradata for the header.
        video = out.add_stream(encoder, rate=25, width=64, height=48, pix_fmt=_trial_pix_fmt(encoder))
        if encoder == "libx265":
            video.options = {"x265-params": "log-level=error"}
        for stream in templates:
            if stream.type == "attachment":
                if fmt != "matroska":
                    return f"{fmt} holds no attachments"
                continue
            out.add_stream_from_template(stream)
        out.start_encoding()
    except (ValueError, av.error.FFmpegError) as exc:
        return str(exc)
    finally:
        with contextlib.suppress(ValueError, av.error.FFmpegError):
            out.close()
    return None


def _trial_pix_fmt(encoder: str) -> str:
    spec = next(spec for spec in CODEC_SPECS.values() if spec.encoder == encoder)
    return spec.pix_fmt_8bit


def _suggest(ext: str, encoder: str, templates: list) -> str:
    for candidate in SUGGESTED:
        if candidate != ext and _header_error(CONTAINERS[candidate], encoder, templates) is None:
            return f"use an {candidate} output"
    return "remove the stream first (e.g. `ffmpeg -i IN -map 0 -map -0:N -c copy OUT.mkv`)"


def mux(
    source: SourceInfo,
    segments: Sequence[SegmentRef],
    output_path: str,
    spec: OutputConfig,
    size: tuple[int, int],
    index: FrameIndex | None = None,
    field_order: str | None = None,
) -> None:
    """Assemble ``segments`` and the source's other streams into the local file ``output_path``.

    ``index`` is the output's frames (default: the source's; segments are ranges of it) and
    ``field_order`` the video's field order tag (default: none written).

    Raises:
        MuxError: a segment is missing frames or the container refuses a stream.
    """
    index = index if index is not None else source.index
    _check_coverage(segments, len(index))
    fmt = container_for(output_path)
    try:
        with open_input(source.location) as src, av.open(output_path, "w", format=fmt) as out:
            out.metadata.update(src.metadata)
            video = _add_video_stream(out, spec, segments[0], size, source, index)
            if field_order is not None:
                video.codec_context.field_order = FIELD_ORDER_CODES[field_order]
            copies = {}
            for stream in src.streams:
                if stream.index == source.video_stream:
                    continue
                if stream.type == "attachment":
                    out.add_attachment(**_attachment(stream))
                    continue
                copy = out.add_stream_from_template(stream)
                copy.metadata.update(stream.metadata)
                copy.disposition = stream.disposition
                copies[stream.index] = copy
            if source.num_chapters:
                out.set_chapters(src.chapters())
            if source.rotation:
                video.set_display_rotation(source.rotation)
            out.start_encoding()

            video_packets = (
                _remux_packets(segments, index, video)
                if spec.codec == SEGMENT_CODEC
                else _encoded_packets(segments, index, video, source)
            )
            other_packets = _source_packets(src, copies)
            for _, packet in heapq.merge(video_packets, other_packets, key=lambda item: item[0]):
                out.mux(packet)
    except (av.error.FFmpegError, ValueError) as exc:  # PyAV refuses a codec a muxer cannot hold with ValueError
        raise MuxError(f"cannot write the output: {exc}") from exc


def _check_coverage(segments: Sequence[SegmentRef], num_frames: int) -> None:
    expected = 0
    for seg in segments:
        if seg.start != expected:
            raise MuxError(f"segments do not cover the video: frames [{expected}, {seg.start}) are missing")
        expected = seg.stop
    if expected != num_frames:
        raise MuxError(f"segments do not cover the video: frames [{expected}, {num_frames}) are missing")


def _attachment(stream) -> dict:
    meta = stream.metadata
    return {
        "name": meta.get("filename", f"attachment{stream.index}"),
        "mimetype": meta.get("mimetype", "application/octet-stream"),
        "data": bytes(stream.codec_context.extradata or b""),
    }


def _add_video_stream(out, spec: OutputConfig, first: SegmentRef, size: tuple[int, int], source: SourceInfo, index: FrameIndex | None = None):
    index = index if index is not None else source.index
    time_base = index.time_base
    if spec.codec == SEGMENT_CODEC:
        with _open(first) as seg:
            stream = out.add_stream_from_template(seg.streams.video[0])
        stream.time_base = time_base
        return stream
    codec = CODEC_SPECS[spec.codec]
    stream = out.add_stream(codec.encoder, rate=_average_rate(index))
    stream.pix_fmt = output_pix_fmt(spec.codec, spec.pix_fmt, source.high_bit_depth)
    stream.width, stream.height = encodable_size(*size, stream.pix_fmt)
    if (stream.width, stream.height) != tuple(size):
        log.info("cropping %dx%d frames to %dx%d for %s", *size, stream.width, stream.height, stream.pix_fmt)
    stream.codec_context.time_base = time_base
    stream.time_base = time_base
    options: dict[str, str] = {}
    if spec.preset:
        options["preset"] = spec.preset
    if spec.codec in ("x264", "x265"):
        options["crf"] = str(spec.crf)
    elif spec.codec == "x264-lossless":
        options["qp"] = "0"
    if spec.codec == "x265" and len(index) <= X265_FEW_FRAMES:
        options["bf"] = "0"  # see X265_FEW_FRAMES
    stream.options = options
    stream.thread_type = "AUTO"
    return stream


#: x265 given this few frames with B-frames allowed sometimes returns a packet with a garbage dts
#: (about -6e13, seen in 1 of 10 two-frame encodes here), which MP4 refuses ("pts/dts pair
#: unsupported") and other containers would store. A video that short gains nothing from B-frames.
X265_FEW_FRAMES = 2


def _average_rate(index: FrameIndex) -> Fraction:
    """The mean frame rate, as a hint to rate control; timestamps still come from the index."""
    if len(index) < 2:
        return Fraction(25)
    span = (index.pts[-1] - index.pts[0]) * index.time_base
    return Fraction(len(index) - 1) / span if span > 0 else Fraction(25)


def _open(seg: SegmentRef):
    target = seg.opener()
    try:
        return av.open(target, "r")
    except av.error.FFmpegError as exc:
        raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) is unreadable: {exc}") from exc


def _remux_packets(segments: Sequence[SegmentRef], index: FrameIndex, video) -> Iterator[tuple[Fraction, av.Packet]]:
    extradata = None
    for seg in segments:
        with _open(seg) as container:
            stream = container.streams.video[0]
            data = bytes(stream.codec_context.extradata or b"")
            if extradata is None:
                extradata = data
            elif data != extradata:
                raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) was encoded differently from the first")
            frame = seg.start
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if frame >= seg.stop:
                    raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) holds too many frames")
                packet.stream = video
                packet.time_base = index.time_base
                packet.pts = packet.dts = index.pts[frame]
                yield index.pts[frame] * index.time_base, packet
                frame += 1
            if frame != seg.stop:
                raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) holds only {frame - seg.start} frames")


def _encoded_packets(
    segments: Sequence[SegmentRef], index: FrameIndex, video, source: SourceInfo
) -> Iterator[tuple[Fraction, av.Packet]]:
    tb = index.time_base

    def timed(packets):
        for packet in packets:
            when = packet.dts if packet.dts is not None else packet.pts
            yield when * packet.time_base, packet

    for seg in segments:
        with _open(seg) as container:
            frame_no = seg.start
            for frame in container.decode(video=0):
                if frame_no >= seg.stop:
                    raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) holds too many frames")
                if (frame.width, frame.height) != (video.width, video.height):
                    frame = _crop(frame, video.width, video.height)
                out_frame = frame.reformat(format=video.pix_fmt)
                out_frame.pts = index.pts[frame_no]
                out_frame.time_base = tb
                yield from timed(video.encode(out_frame))
                frame_no += 1
            if frame_no != seg.stop:
                raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) holds only {frame_no - seg.start} frames")
    yield from timed(video.encode(None))


def _crop(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """The top-left ``width`` x ``height`` of ``frame`` (an odd last row or column dropped)."""
    high = frame.format.components[0].bits > 8
    fmt = "bgr48le" if high else "bgr24"
    pixels = frame.to_ndarray(format=fmt)[:height, :width]
    return av.VideoFrame.from_ndarray(pixels.copy(), format=fmt)


def _source_packets(src, copies: dict) -> Iterator[tuple[Fraction, av.Packet]]:
    if not copies:
        return
    last = Fraction(-(10**9))
    for packet in src.demux([src.streams[i] for i in copies]):
        if packet.size == 0 and packet.pts is None:
            continue
        when = packet.dts if packet.dts is not None else packet.pts
        if when is not None:
            last = when * packet.time_base
        packet.stream = copies[packet.stream_index]
        yield last, packet


def verify(output_path: str, source: SourceInfo, index: FrameIndex | None = None) -> int:
    """Check that the written file's video frames have exactly the timestamps of ``index`` (the
    output's frames; default: the source's).

    A container that cannot store negative timestamps (Matroska) shifts every stream by the same
    amount when the source's audio starts before its video (AAC priming in MP4); such a uniform
    shift keeps sync and is accepted, anything else is not.

    Returns:
        The uniform shift in the output's time base (0 for most outputs).

    Raises:
        MuxError: naming the first frame whose timestamp differs, or the count difference.
    """
    try:
        with open_input(output_path) as out:
            stream = out.streams.video[0]
            got = index_stream(out, stream)
    except Exception as exc:  # any failure to read back is a failed verification
        raise MuxError(f"the written output cannot be read back: {exc}") from exc
    expected = rescale(index if index is not None else source.index, got.time_base)
    if len(got.pts) != len(expected):
        raise MuxError(f"the output has {len(got.pts)} frames, the source {len(expected)}")
    shift = got.pts[0] - expected[0]
    for i, (a, b) in enumerate(zip(got.pts, expected)):
        if a != b + shift:
            raise MuxError(
                f"output frame {i} is at pts {a - shift}, the source's is {b} (time base {got.time_base})"
            )
    if shift:
        log.info("the output container shifted all streams by %s s", shift * got.time_base)
    return shift


def rescale(index: FrameIndex, time_base: Fraction) -> list[int]:
    """The index's pts expressed in ``time_base``, rounded as FFmpeg's muxers round them."""
    return [_round_half_away(p * index.time_base / time_base) for p in index.pts]


def _round_half_away(x: Fraction) -> int:
    n = abs(x)
    r = int(n + Fraction(1, 2))
    return r if x >= 0 else -r


def write_png_sequence(
    source: SourceInfo, segments: Sequence[SegmentRef], directory: str, high_bit_depth: bool, index: FrameIndex | None = None
) -> None:
    """Write every frame as ``<frame>.png`` in ``directory`` (created), plus ``timestamps.txt`` in
    mkvmerge's v2 format (one presentation time in milliseconds per frame of ``index``, the
    output's frames; default: the source's)."""
    index = index if index is not None else source.index
    _check_coverage(segments, len(index))
    os.makedirs(directory, exist_ok=True)
    fmt = CODEC_SPECS["png"].pix_fmt_high if high_bit_depth else CODEC_SPECS["png"].pix_fmt_8bit
    digits = max(6, len(str(len(index) - 1)))
    for seg in segments:
        with _open(seg) as container:
            frame_no = seg.start
            for frame in container.decode(video=0):
                if frame_no >= seg.stop:
                    raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) holds too many frames")
                frame.reformat(format=fmt).save(os.path.join(directory, f"{frame_no:0{digits}d}.png"))
                frame_no += 1
            if frame_no != seg.stop:
                raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) holds only {frame_no - seg.start} frames")
    with open(os.path.join(directory, "timestamps.txt"), "w") as f:
        f.write("# timestamp format v2\n")
        for p in index.pts:
            f.write(f"{float(p * index.time_base * 1000):.6f}\n")


def remove_output(path: str) -> None:
    """Delete a half-written output file or directory, if any."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)
