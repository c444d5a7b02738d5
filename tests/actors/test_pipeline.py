"""The worker's three-thread pipeline on its own: items keep their order, and an error in the
decoding or the encoding thread reaches the enhancing thread instead of hanging it."""

from __future__ import annotations

import threading

import pytest

from farm.actors.pipeline import END, Pipeline


def drain(produce, consume, transform=lambda x: x * 10) -> None:
    with Pipeline(produce, consume, depth=2) as p:
        while (item := p.take()) is not END:
            p.give(transform(item))
        p.finish()


def test_items_pass_through_in_order():
    """A shard's frames: decoded in order, enhanced, encoded in the same order."""
    written: list[int] = []

    def consume(next_item):
        while (item := next_item()) is not END:
            written.append(item)

    drain(lambda: iter(range(50)), consume)
    assert written == [i * 10 for i in range(50)]


def test_a_decoder_error_reaches_the_caller_and_stops_the_encoder():
    """A corrupt packet mid-shard: the decoding thread's error is raised where the frames are
    enhanced, and the encoding thread ends."""
    stopped = threading.Event()

    def produce():
        yield from range(3)
        raise ValueError("bad packet at frame 3")

    def consume(next_item):
        while next_item() is not END:
            pass
        stopped.set()

    with pytest.raises(ValueError, match="bad packet at frame 3"):
        drain(produce, consume)
    assert stopped.wait(5)


def test_an_encoder_error_reaches_the_caller_while_the_decoder_is_ahead():
    """The encoder fails on its first frame (disk full) while the decoder has frames queued: the
    enhancing thread gets the encoder's error rather than blocking on a full queue."""
    def consume(next_item):
        next_item()
        raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space left on device"):
        drain(lambda: iter(range(1000)), consume)
