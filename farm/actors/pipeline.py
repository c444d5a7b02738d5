"""A three-stage pipeline: a producer thread, the caller's thread and a consumer thread joined by small
bounded queues, so the middle stage (the device) waits on neither side's I/O. An error in any stage
stops the others and reaches the caller. Nothing here knows about video or models."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

#: Marks the end of a stage's items.
END = object()


class Pipeline:
    """``produce()`` runs in a thread into one queue; the caller :meth:`take`\\ s from it and
    :meth:`give`\\ s results to the other, which ``consume(next_item)`` drains in a second thread
    (``next_item()`` returns :data:`END` after the last one). Use as a context manager: leaving
    it by an exception stops both threads."""

    def __init__(self, produce: Callable[[], Iterator], consume: Callable[[Callable[[], Any]], None], depth: int) -> None:
        self._stop = threading.Event()
        self._taken: queue.Queue = queue.Queue(depth)
        self._given: queue.Queue = queue.Queue(depth)
        self._producer = _Stage(produce, self._taken, self._stop)
        self._consumer = _Thread(lambda: consume(lambda: _get(self._given, self._stop)))

    def __enter__(self) -> Pipeline:
        self._producer.start()
        self._consumer.start()
        return self

    def take(self) -> Any:
        """The producer's next item, or END after its last one.

        Raises:
            the producer's error.
        """
        return _get(self._taken, self._stop, self._producer)

    def give(self, item: Any) -> None:
        """Hand ``item`` to the consumer.

        Raises:
            the consumer's error, when it stopped.
        """
        _put(self._given, item, self._stop, self._consumer)

    def finish(self) -> None:
        """Tell the consumer there is no more, wait for it, and raise any stage's error."""
        _put(self._given, END, self._stop, self._consumer)
        self._consumer.join()
        self._consumer.raise_error()
        self._producer.raise_error()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._stop.set()
            self._producer.join(5)
            self._consumer.join(5)


class _Thread(threading.Thread):
    """A daemon thread that keeps its exception for the caller."""

    def __init__(self, target: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the caller's thread by raise_error()
            self.error = exc

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class _Stage(_Thread):
    """Runs a generator into a bounded queue, ending it with END."""

    def __init__(self, produce: Callable[[], Iterator], out: queue.Queue, stop: threading.Event) -> None:
        def run() -> None:
            try:
                for item in produce():
                    if not _put(out, item, stop, None):
                        return
            finally:
                _put(out, END, stop, None)

        super().__init__(run)


def _put(q: queue.Queue, item, stop: threading.Event, consumer: _Thread | None) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            if consumer is not None and not consumer.is_alive():
                consumer.raise_error()
                return False
    return False


def _get(q: queue.Queue, stop: threading.Event, producer: _Thread | None = None):
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if producer is not None and not producer.is_alive() and q.empty():
                producer.raise_error()
                return END
    return END
