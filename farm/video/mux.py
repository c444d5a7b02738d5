"""Final assembly: the chunks' packets copied in order (no decode, no encode), each given its source
pts from the index and a dts of farm's own, with every other source stream, then checked against the
index. Just over 300 lines: concatenation, verification and PNG share the timestamp rules."""

from __future__ import annotations

import heapq
import logging
import os
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from typing import IO, Any, Callable, Iterator, Sequence

import av

from farm.errors import MuxError
from farm.media import FrameIndex, SourceInfo
from farm.video.color import tag
from farm.video.containers import container_for
from farm.video.deinterlace import FIELD_ORDER_CODES
from farm.video.encode import chunk_params
from farm.video.index import index_stream
from farm.video.inputs import open_input

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A finished shard's chunk: where to read it, which frames it holds, and what its worker
    recorded about it (the receipt's ``video``: ``reorder_delay``, ``pts_shift``, parameters)."""

    opener: Callable[[], IO | str]
    start: int
    stop: int
    name: str = ""
    video: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"chunk {self.name or '?'} (frames [{self.start}, {self.stop}))"


def mux(
    source: SourceInfo,
    chunks: Sequence[ChunkRef],
    output_path: str,
    *,
    index: FrameIndex | None = None,
    field_order: str | None = None,
) -> None:
    """Concatenate ``chunks`` (in frame order) and the source's other streams into the local file
    ``output_path``. Frame i gets the source's pts ``index.pts[i]``; the k-th video packet in
    decode order gets dts ``index.pts[k - D]`` (D: the largest reorder delay of any chunk;
    extrapolated below ``index.pts[0]`` for k < D), which increases strictly across chunk
    boundaries and never exceeds the packet's pts. The file is muxed bit-exactly (no random UIDs,
    no dates), so the same chunks always give the same bytes.

    Raises:
        MuxError: a chunk is missing frames, holds others, differs from the first chunk's
            parameters, or the container refuses a stream.
    """
    index = index or source.index  # the output's frames: the source's, or two per frame (double rate)
    _check_coverage(chunks, len(index))
    fmt = container_for(output_path)
    try:
        with open_input(source.location) as src, av.open(
            output_path, "w", format=fmt, container_options={"fflags": "+bitexact"}
        ) as out:
            out.metadata.update(src.metadata)
            with open_chunk(chunks[0]) as first:
                # opaque: copy the codec parameters only (AV1 has a decoder here, libdav1d, but no
                # encoder of that name, which a non-opaque copy looks for).
                video = out.add_stream_from_template(first.streams.video[0], opaque=True)
                reference = chunk_params(first.streams.video[0])
            video.time_base = index.time_base
            # The chunks' bitstreams carry the tags where the codec has room for them (H.264/HEVC
            # VUI); the container's copy comes from here, so FFV1 and PNG-free outputs keep them too.
            tag(video, source.colour)
            sar = chunks[0].video.get("settings", {}).get("sample_aspect_ratio", (1, 1))
            if tuple(sar) != (1, 1):  # NUT keeps no pixel aspect for codecs without one in the bitstream (FFV1)
                video.codec_context.sample_aspect_ratio = Fraction(*sar)
            if field_order is not None:
                video.codec_context.field_order = FIELD_ORDER_CODES[field_order]
            _warn_lost_aspect(fmt, video)
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

            video_packets = concat_packets(chunks, index, video, reference)
            other_packets = _source_packets(src, copies, index.span_s if source.span is not None else None)
            for _, packet in heapq.merge(video_packets, other_packets, key=lambda item: item[0]):
                out.mux(packet)
    except (av.error.FFmpegError, ValueError) as exc:  # PyAV refuses a codec a muxer cannot hold with ValueError
        raise MuxError(f"cannot write the output: {exc}") from exc


def _warn_lost_aspect(fmt: str, video) -> None:
    """Matroska takes the pixel aspect from AVStream.sample_aspect_ratio, which PyAV cannot set,
    and FFV1 carries none in its bitstream: such an output would play at the wrong aspect."""
    sar = video.codec_context.sample_aspect_ratio
    if fmt == "matroska" and video.codec_context.name == "ffv1" and sar is not None and sar not in (0, 1):
        log.warning("FFV1 in Matroska cannot carry the %s pixel aspect: players will show the wrong aspect; "
                    "use an .mp4/.mov output, or --square-pixels", sar)


def _check_coverage(chunks: Sequence[ChunkRef], num_frames: int) -> None:
    expected = 0
    for chunk in chunks:
        if chunk.start != expected:
            raise MuxError(f"chunks do not cover the video: frames [{expected}, {chunk.start}) are missing")
        expected = chunk.stop
    if expected != num_frames:
        raise MuxError(f"chunks do not cover the video: frames [{expected}, {num_frames}) are missing")


def _attachment(stream) -> dict:
    meta = stream.metadata
    return {
        "name": meta.get("filename", f"attachment{stream.index}"),
        "mimetype": meta.get("mimetype", "application/octet-stream"),
        "data": bytes(stream.codec_context.extradata or b""),
    }


def open_chunk(chunk: ChunkRef):
    """``chunk`` opened for reading with PyAV (a MuxError naming it when it does not open)."""
    target = chunk.opener()
    try:
        return av.open(target, "r")
    except av.error.FFmpegError as exc:
        raise MuxError(f"{chunk} is unreadable: {exc}; pass --restart to redo the job") from exc


def check_same_params(chunk: ChunkRef, params: dict[str, Any], reference: dict[str, Any]) -> None:
    """Refuse a chunk whose codec header differs from the first chunk's (one line, naming it)."""
    for key, want in reference.items():
        if params.get(key) != want:
            raise MuxError(
                f"{chunk} was encoded differently from the first chunk ({key} {params.get(key)!r}, "
                f"first {want!r}); delete it (and its .json receipt) to have it redone, or pass --restart"
            )


def _settings(chunk: ChunkRef) -> dict[str, Any]:
    """The encoder settings the chunk's receipt records, less x264's SIMD pin (``asm=``), which a
    node without AVX2 leaves out while its bitstream still concatenates."""
    settings = dict(chunk.video.get("settings", {}))
    options = dict(settings.get("options", {}))
    if "x264-params" in options:
        options["x264-params"] = ":".join(p for p in options["x264-params"].split(":") if not p.startswith("asm="))
    settings["options"] = options
    return settings


def _chunk_frames(chunk: ChunkRef, container, index: FrameIndex) -> Iterator[tuple[int, av.Packet]]:
    """``(frame number, packet)`` of every packet of ``chunk`` in decode order, the frame found
    from the packet's source pts; checks the chunk holds exactly its frames, keyframe first."""
    stream = container.streams.video[0]
    shift = int(chunk.video.get("pts_shift", 0))
    ratio = Fraction(stream.time_base) / index.time_base
    frame_of = {index.pts[i]: i for i in range(chunk.start, chunk.stop)}
    first = True
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.pts is None:
            raise MuxError(f"{chunk} holds a packet without a timestamp; pass --restart to redo the job")
        source_pts = packet.pts * ratio - shift
        frame = frame_of.pop(int(source_pts), None) if source_pts.denominator == 1 else None
        if frame is None:
            raise MuxError(f"{chunk} holds a frame at pts {source_pts} that is not one of its frames (or twice)")
        if first and not packet.is_keyframe:
            raise MuxError(f"{chunk} does not start with a keyframe; pass --restart to redo the job")
        first = False
        yield frame, packet
    if frame_of:
        raise MuxError(f"{chunk} holds only {chunk.stop - chunk.start - len(frame_of)} of its {chunk.stop - chunk.start} frames")


def concat_packets(
    chunks: Sequence[ChunkRef], index: FrameIndex, video, reference: dict[str, Any]
) -> Iterator[tuple[Fraction, av.Packet]]:
    """``(dts in seconds, packet)`` of every video packet of ``chunks`` in decode order, given to
    the output stream ``video`` with pts from ``index`` and dts by :func:`mux`'s rule; checks
    each chunk against ``reference`` (the first chunk's parameters) and the first chunk's settings.
    The tail's concatenation, and a shard's join of its parts (farm.video.join)."""
    tb = index.time_base
    pts = index.pts
    delay = max(int(c.video.get("reorder_delay", 0)) for c in chunks)
    step = pts[1] - pts[0] if len(pts) > 1 else 1
    k = 0  # the packet's position in decode order over the whole output
    first_settings = {"settings": _settings(chunks[0])}
    for chunk in chunks:
        with open_chunk(chunk) as container:
            check_same_params(chunk, chunk_params(container.streams.video[0]), reference)
            check_same_params(chunk, {"settings": _settings(chunk)}, first_settings)
            for frame, packet in _chunk_frames(chunk, container, index):
                dts = pts[k - delay] if k >= delay else pts[0] - (delay - k) * step
                if dts > pts[frame]:
                    raise MuxError(f"{chunk} reorders frames deeper than its receipt says ({delay}); pass --restart")
                packet.stream = video
                packet.time_base = tb
                packet.pts = pts[frame]
                packet.dts = dts
                yield dts * tb, packet
                k += 1


def _source_packets(src, copies: dict, span: tuple[Fraction, Fraction] | None = None) -> Iterator[tuple[Fraction, av.Packet]]:
    """The other streams' packets; of a cut source (``span``), only those whose presentation
    starts within it (whole packets: audio is cut to the packet, not the sample)."""
    if not copies:
        return
    last = Fraction(-(10**9))
    for packet in src.demux([src.streams[i] for i in copies]):
        if packet.size == 0 and packet.pts is None:
            continue
        when = packet.dts if packet.dts is not None else packet.pts
        if when is not None:
            last = when * packet.time_base
        if span is not None and (packet.pts is None or not span[0] <= packet.pts * packet.time_base < span[1]):
            continue
        packet.stream = copies[packet.stream_index]
        yield last, packet


def verify(output_path: str, source: SourceInfo, index: FrameIndex | None = None) -> int:
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
    expected = rescale(index or source.index, got.time_base)
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


def write_png_sequence(source: SourceInfo, chunks: Sequence[ChunkRef], directory: str, index: FrameIndex | None = None) -> None:
    """Write every frame as ``<frame>.png`` in ``directory`` (created), plus ``timestamps.txt`` in
    mkvmerge's v2 format (one presentation time in milliseconds per frame). The chunks' packets
    are PNG files already (the workers encoded them): their bytes are written, nothing decoded."""
    index = index or source.index
    _check_coverage(chunks, len(index))
    os.makedirs(directory, exist_ok=True)
    digits = max(6, len(str(len(index) - 1)))
    reference = None
    for chunk in chunks:
        with open_chunk(chunk) as container:
            params = chunk_params(container.streams.video[0])
            reference = reference or params
            check_same_params(chunk, params, reference)
            for frame_no, packet in _chunk_frames(chunk, container, index):
                with open(os.path.join(directory, f"{frame_no:0{digits}d}.png"), "wb") as f:
                    f.write(bytes(packet))
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
