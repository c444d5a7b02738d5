"""Reading a video back for assertions: every frame with its time, the video packets' pts, and the
payloads of other streams, straight from PyAV."""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import av
import numpy as np


def decode_all(path: str, fmt: str = "bgr24") -> tuple[list[Fraction], list[np.ndarray]]:
    """Every frame of the first video stream, in order, with its presentation time in seconds."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        time_base = Fraction(cast(Fraction, stream.time_base))
        frames = [(cast(int, f.pts) * time_base, f.to_ndarray(format=fmt)) for f in c.decode(stream)]
    return [t for t, _ in frames], [a for _, a in frames]


def packet_pts(path: str) -> tuple[Fraction, list[int]]:
    """(time base, sorted pts of the video stream's non-discard packets) read by demuxing."""
    with av.open(path) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.pts is not None and not p.is_discard)
        return Fraction(cast(Fraction, s.time_base)), pts


def stream_packets(path: str, kind: str) -> list[list[bytes]]:
    """Payloads of every packet of every stream of ``kind`` ("audio", "subtitle")."""
    with av.open(path) as c:
        streams = [s for s in c.streams if s.type == kind]
        out: dict[int, list[bytes]] = {s.index: [] for s in streams}
        if streams:
            for p in c.demux(streams):
                if p.size:
                    out[p.stream_index].append(bytes(p))
        return [out[s.index] for s in streams]
