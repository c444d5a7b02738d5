"""A shard's parts joined into its one segment by packet copy (no decode, no encode): the parts'
packets in order under the tail's timestamp rules (:func:`farm.video.mux.concat_packets`), written
bit-exactly, so the same parts always give the same segment bytes."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Sequence

import av

from farm.config import CHUNK_FORMAT
from farm.errors import EncodeError, MuxError
from farm.media import FrameIndex
from farm.video.encode import chunk_params
from farm.video.mux import ChunkRef, concat_packets, open_chunk


def shard_index(index: FrameIndex, start: int, stop: int) -> FrameIndex:
    """Output frames ``[start, stop)`` of ``index`` as an index of their own (frame 0 is
    ``start``): what a shard's parts are numbered against when they are joined."""
    pts = index.pts[start:stop]
    return FrameIndex(index.time_base, tuple(pts), (pts[0],))


def join_parts(parts: Sequence[ChunkRef], index: FrameIndex, path: str) -> dict[str, Any]:
    """Write ``parts`` (consecutive chunks of one job's settings; their start and stop count in
    ``index``, the shard's own, see :func:`shard_index`) as one chunk at the local ``path``.

    Returns:
        The joined chunk's description for its receipt (the keys :class:`~farm.video.encode.ChunkWriter`
        gives: parameters, ``reorder_delay``, ``pts_shift``, ``settings``).

    Raises:
        EncodeError: a part is unreadable, holds other frames, or was encoded differently (the
            shard is redone; its parts are not trusted).
    """
    first_pts: int | None = None
    try:
        with open_chunk(parts[0]) as first:
            template = first.streams.video[0]
            reference = chunk_params(template)
            with av.open(path, "w", format=CHUNK_FORMAT, container_options={"fflags": "+bitexact"}) as out:
                video = out.add_stream_from_template(template, opaque=True)
                video.time_base = index.time_base
                out.start_encoding()
                for _, packet in concat_packets(parts, index, video, reference):
                    if first_pts is None and packet.pts is not None:
                        first_pts = int(packet.pts)
                    out.mux(packet)
        with av.open(path) as joined:
            stream = joined.streams.video[0]
            params = chunk_params(stream)
            time_base = Fraction(stream.time_base or index.time_base)
            written = next((p for p in joined.demux(stream) if p.size), None)
    except (MuxError, av.error.FFmpegError, ValueError) as exc:
        raise EncodeError(f"cannot join the parts into {path}: {exc}") from None
    shift = 0
    if written is not None and written.pts is not None and first_pts is not None:
        # NUT stores no negative timestamps: as for a chunk (ChunkWriter), its muxer's constant
        # shift is recorded, and the tail takes it off again.
        shift = int(written.pts * time_base / index.time_base) - first_pts
    return {
        **params,
        "reorder_delay": max(int(p.video.get("reorder_delay", 0)) for p in parts),
        "pts_shift": shift,
        "settings": parts[0].video.get("settings", {}),
    }
