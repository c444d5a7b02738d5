"""FFmpeg filter chains on PyAV: ``buffer -> filters... -> buffersink`` for video frames of one
shape; push frames (None for the end of the stream), get back every frame the chain has ready."""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence, cast

import av
from av.video.format import VideoFormat

#: One filter of a chain: its FFmpeg name and its argument string (None: the filter's defaults),
#: e.g. ``("bwdif", "mode=send_frame:parity=tff:deint=all")``.
Filter = tuple[str, str | None]


class FilterChain:
    """A configured ``buffer -> filters... -> buffersink`` graph for frames of one geometry,
    pixel format and time base.

    Args:
        width, height: the frames' size in pixels.
        format: the frames' pixel format.
        time_base: the time base of the frames' pts, which the filters keep or rescale.
        filters: the chain, in order from the source.

    Raises:
        ValueError, av.error.FFmpegError: a filter that does not exist, arguments it rejects, or a
            chain FFmpeg cannot configure for this pixel format (PyAV's own errors).
    """

    def __init__(
        self, *, width: int, height: int, format: VideoFormat, time_base: Fraction, filters: Sequence[Filter]
    ) -> None:
        self.filters = tuple(filters)
        self._graph = av.filter.Graph()
        nodes = [self._graph.add_buffer(width=width, height=height, format=format, time_base=time_base)]
        nodes += [self._graph.add(name, args) for name, args in self.filters]
        nodes.append(self._graph.add("buffersink"))
        self._graph.link_nodes(*nodes)
        self._graph.configure()

    @classmethod
    def like(cls, frame: av.VideoFrame, filters: Sequence[Filter], *, time_base: Fraction) -> FilterChain:
        """A chain for frames shaped like ``frame`` (its size and pixel format), in ``time_base``."""
        return cls(width=frame.width, height=frame.height, format=frame.format, time_base=time_base, filters=filters)

    def push(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Feed ``frame`` (None: the end of the stream) and return the frames the chain gives back
        now, in order: none while a filter waits for more input (bwdif reads the next frame), and
        every frame it still holds once the stream has ended.

        Raises:
            av.error.FFmpegError: FFmpeg's error on this frame (also for a frame after the end).
        """
        self._graph.push(frame)
        out: list[av.VideoFrame] = []
        while True:
            try:
                out.append(cast(av.VideoFrame, self._graph.pull()))
            except (av.error.BlockingIOError, av.error.EOFError):  # wants more input / has ended
                return out

    def flush(self) -> list[av.VideoFrame]:
        """End the stream and return the frames the filters still held (bwdif's last frame)."""
        return self.push(None)
