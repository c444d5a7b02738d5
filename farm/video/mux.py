"""Final assembly: the segments' frames, each given its source pts from the index, interleaved with
every other stream of the source copied packet for packet, then checked against the index.

The lossless intermediate is remuxed untouched when the requested codec is the intermediate's;
otherwise frames are encoded once, here, with their source timestamps (never at a fixed rate)."""

from __future__ import annotations

import heapq
import logging
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Callable, Iterator, Sequence

import av

from farm.config import OutputConfig
from farm.errors import MuxError, OutputError
from farm.video.encode import CODEC_SPECS, SEGMENT_CODEC
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


def check_streams_fit(source: SourceInfo, output: str, codec: str) -> None:
    """Refuse, before any work, an output container that cannot hold the video codec or one of the
    source's other streams (which are copied unchanged).

    Raises:
        OutputError: naming the stream and suggesting a container that can hold it.
    """
    fmt = container_for(output)
    probe_path = os.devnull
    container = av.open(probe_path, "w", format=fmt)
    try:
        supported = container.supported_codecs
    finally:
        container.close()
    if not supported:  # some muxers (MPEG-TS) do not list their codecs; they fail at header time
        return
    encoder = CODEC_SPECS[codec].encoder
    if encoder not in supported and codec not in supported:
        raise OutputError(f"--codec {codec} cannot be stored in {fmt}; use an .mkv output")
    for stream in source.other_streams:
        if stream.type in ("attachment",) and fmt != "matroska":
            raise OutputError(
                f"source stream #{stream.index} is an attachment ({stream.codec}), which {fmt} cannot hold; "
                "use an .mkv output"
            )
        if stream.type in ("audio", "subtitle", "video") and stream.codec not in supported:
            raise OutputError(
                f"source stream #{stream.index} ({stream.type}, {stream.codec}) cannot be copied into {fmt}; "
                "use an .mkv output"
            )


def mux(
    source: SourceInfo,
    segments: Sequence[SegmentRef],
    output_path: str,
    spec: OutputConfig,
    size: tuple[int, int],
) -> None:
    """Assemble ``segments`` and the source's other streams into the local file ``output_path``.

    Raises:
        MuxError: a segment is missing frames or the container refuses a stream.
    """
    _check_coverage(segments, source.num_frames)
    fmt = container_for(output_path)
    index = source.index
    try:
        with open_input(source.location) as src, av.open(output_path, "w", format=fmt) as out:
            out.metadata.update(src.metadata)
            video = _add_video_stream(out, spec, segments[0], size, source)
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
    except av.error.FFmpegError as exc:
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


def _add_video_stream(out, spec: OutputConfig, first: SegmentRef, size: tuple[int, int], source: SourceInfo):
    time_base = source.index.time_base
    if spec.codec == SEGMENT_CODEC:
        with _open(first) as seg:
            stream = out.add_stream_from_template(seg.streams.video[0])
        stream.time_base = time_base
        return stream
    codec = CODEC_SPECS[spec.codec]
    stream = out.add_stream(codec.encoder, rate=_average_rate(source.index))
    stream.width, stream.height = size
    stream.pix_fmt = spec.pix_fmt or (codec.pix_fmt_high if source.high_bit_depth else codec.pix_fmt_8bit)
    stream.codec_context.time_base = time_base
    stream.time_base = time_base
    options: dict[str, str] = {}
    if spec.preset:
        options["preset"] = spec.preset
    if spec.codec in ("x264", "x265"):
        options["crf"] = str(spec.crf)
    elif spec.codec == "x264-lossless":
        options["qp"] = "0"
    stream.options = options
    stream.thread_type = "AUTO"
    return stream


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
                out_frame = frame.reformat(format=video.pix_fmt)
                out_frame.pts = index.pts[frame_no]
                out_frame.time_base = tb
                yield from timed(video.encode(out_frame))
                frame_no += 1
            if frame_no != seg.stop:
                raise MuxError(f"segment for frames [{seg.start}, {seg.stop}) holds only {frame_no - seg.start} frames")
    yield from timed(video.encode(None))


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


def verify(output_path: str, source: SourceInfo) -> int:
    """Check that the written file's video frames have exactly the source's timestamps.

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
    expected = rescale(source.index, got.time_base)
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
    source: SourceInfo, segments: Sequence[SegmentRef], directory: str, high_bit_depth: bool
) -> None:
    """Write every frame as ``<frame>.png`` in ``directory`` (created), plus ``timestamps.txt`` in
    mkvmerge's v2 format (one presentation time in milliseconds per frame)."""
    _check_coverage(segments, source.num_frames)
    os.makedirs(directory, exist_ok=True)
    fmt = CODEC_SPECS["png"].pix_fmt_high if high_bit_depth else CODEC_SPECS["png"].pix_fmt_8bit
    digits = max(6, len(str(source.num_frames - 1)))
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
    index = source.index
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
