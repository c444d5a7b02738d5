"""Chunks encoded in a child process: :class:`ProcessChunkWriter` gives ChunkWriter's chunk bytes and
``info``, encoded by a long-lived :class:`EncoderProcess` fed through shared memory, off the worker's
GIL. About 400 lines: the parent's and the child's halves of one protocol belong together."""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import threading
import time
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from farm.errors import EncodeError, FarmError, first_line
from farm.video.encode import ChunkSettings, ChunkWriter

log = logging.getLogger(__name__)

#: Frame slots in the ring: the parent can be this many frames ahead of the encoder.
SLOTS = 4
#: Shared memory names start with this, then the parent's pid (tests look for leaks by it).
SHM_PREFIX = "farm_enc_"
#: Starting the child (a fresh interpreter importing PyAV and numpy) on a busy node.
START_TIMEOUT_S = 120.0
#: The longest the child may take over one answer: a frame, or a chunk's flush at 4K.
REPLY_TIMEOUT_S = 600.0
#: How long a child asked to stop, or found dead, is waited for.
STOP_TIMEOUT_S = 5.0
#: How often the child checks that its parent is still there.
WATCH_PARENT_S = 1.0
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


class _Ring:
    """``count`` shared memory slots of one frame shape and dtype, and which of them are free."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, count: int) -> None:
        self.shape, self.dtype = shape, dtype
        nbytes = math.prod(shape) * dtype.itemsize
        _check_room(nbytes * count)
        token = secrets.token_hex(4)
        self.memory: list[SharedMemory] = []
        try:
            for i in range(count):
                self.memory.append(SharedMemory(f"{SHM_PREFIX}{os.getpid()}_{token}_{i}", create=True, size=nbytes))
        except OSError as exc:
            self.unlink()
            raise EncodeError(f"cannot allocate {count} frame slots of {nbytes} bytes in shared memory: {exc}; "
                              "give the node a larger /dev/shm") from exc
        self.views = [np.ndarray(shape, dtype, buffer=m.buf) for m in self.memory]
        self.free = list(range(count))

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.memory]

    def unlink(self) -> None:
        self.views = []  # views pin the mapping: close() refuses while they live
        for m in self.memory:
            m.close()
            try:
                m.unlink()
            except FileNotFoundError:
                pass
        self.memory = []


def shm_room() -> int | None:
    """Bytes free in /dev/shm (None when it cannot be told)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _check_room(nbytes: int) -> None:
    """Refuse a ring /dev/shm cannot hold: tmpfs takes the segment and then kills the writer with
    SIGBUS at the first page it has no room for."""
    room = shm_room()
    if room is not None and nbytes > room:
        raise EncodeError(f"/dev/shm has {room} bytes free, the encoder's frame slots need {nbytes}; "
                          "give the node a larger /dev/shm (docker: --shm-size)")


class EncoderProcess:
    """One child process that encodes chunk after chunk for its worker; started at the first chunk,
    and again after one died. Use it from one thread at a time; ``close()`` (or ``with``) stops it."""

    def __init__(self, slots: int = SLOTS, *, start_timeout_s: float = START_TIMEOUT_S,
                 reply_timeout_s: float = REPLY_TIMEOUT_S) -> None:
        if slots < 1:
            raise ValueError(f"an encoder process needs at least 1 frame slot, got {slots}")
        self.slots, self.start_timeout_s, self.reply_timeout_s = slots, start_timeout_s, reply_timeout_s
        self._proc: Any = None
        self._conn: Any = None
        self._ring: _Ring | None = None
        self._chunk: str | None = None  # the open chunk's path
        self._failed: str | None = None  # the child's error in the open chunk

    @property
    def pid(self) -> int | None:
        """The running child's pid, or None before the first chunk and after close()."""
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        """Stop the child (an open chunk is left unfinished) and free the shared memory."""
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(("stop",))
            except OSError:
                pass
            self._proc.join(STOP_TIMEOUT_S)
        self._discard()

    def __enter__(self) -> EncoderProcess:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    # The parent's half of the protocol (ProcessChunkWriter's calls).

    def _begin(self, path: str, settings: ChunkSettings) -> None:
        if self._chunk is not None:
            raise RuntimeError(f"the encoder process is still writing chunk {self._chunk}; close it before {path}")
        if self._proc is not None and not self._proc.is_alive():
            self._discard()
        if self._proc is None:
            self._start()
        self._chunk, self._failed = path, None
        try:
            self._send(("open", path, settings))
            reply = self._until("opened")
        except BaseException:
            self._chunk = None
            raise
        if reply[1] is not None:
            self._chunk = None
            raise EncodeError(reply[1])

    def _write(self, pixels: np.ndarray, pts: int) -> None:
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in _DTYPES:
            raise ValueError(f"frames are BGR uint8 or uint16 arrays (H, W, 3), got {pixels.dtype} {pixels.shape}")
        if self._proc is None or self._chunk is None:
            raise EncodeError("the chunk's encoder process is gone (see the first error); the shard can be retried")
        while self._conn.poll(0):
            self._next(0)
        if self._failed is not None:
            raise EncodeError(self._failed)
        ring = self._ring
        if ring is None or ring.shape != pixels.shape or ring.dtype != pixels.dtype:
            # Only once every slot is back has the child finished with the old ring (and its name).
            while ring is not None and len(ring.free) < self.slots:
                self._next(self.reply_timeout_s)
            if ring is not None:
                ring.unlink()
                self._ring = None
            self._ring = ring = _Ring(pixels.shape, pixels.dtype, self.slots)
            self._send(("ring", ring.names, ring.shape, ring.dtype.str))
        while not ring.free and self._failed is None:
            self._next(self.reply_timeout_s)
        if self._failed is not None:
            raise EncodeError(self._failed)
        slot = ring.free.pop()
        np.copyto(ring.views[slot], pixels)
        self._send(("frame", slot, int(pts)))

    def _end(self, path: str, finish: bool) -> tuple[dict[str, Any], int]:
        """Finish (or abandon) the open chunk; its ``info`` and frame count."""
        try:
            if self._proc is None or self._chunk is None:  # it died during the chunk, which was told then
                if finish:
                    raise EncodeError(f"chunk {path} cannot be finished: its encoder process is gone; the shard can be retried")
                return {}, 0
            self._send(("finish",) if finish else ("abort",))
            _, info, frames, error = self._until("end")
            if error is not None:
                raise EncodeError(error)
            return info, frames
        finally:
            self._chunk = None

    # Talking to the child: every wait notices its death or times out.

    def _start(self) -> None:
        # spawn, never fork: the worker is a threaded Ray actor. A spawned child imports the
        # parent's __main__ again, so a script that starts one needs the __main__ guard.
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe(duplex=True)
        t0 = time.perf_counter()
        proc = ctx.Process(target=_serve, args=(theirs, os.getpid()), name="farm-encoder", daemon=True)
        try:
            proc.start()
        except OSError as exc:
            ours.close()
            theirs.close()
            raise EncodeError(f"cannot start the encoder process: {exc}") from exc
        theirs.close()  # so that its death reads as EOF here
        self._proc, self._conn = proc, ours
        self._until("ready", self.start_timeout_s)
        log.debug("encoder process %d started in %.2f s", proc.pid, time.perf_counter() - t0)

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except OSError:
            raise self._died() from None

    def _until(self, kind: str, timeout_s: float | None = None) -> tuple:
        while True:
            message = self._next(self.reply_timeout_s if timeout_s is None else timeout_s)
            if message[0] == kind:
                return message

    def _next(self, timeout_s: float) -> tuple:
        """The child's next message, after taking note of a freed slot or a failed chunk."""
        ready = multiprocessing.connection.wait([self._conn, self._proc.sentinel], timeout_s)
        if not ready:
            pid, doing = self._proc.pid, self._doing()
            self._discard()
            raise EncodeError(f"the encoder process (pid {pid}) did not answer in {timeout_s:g} s {doing}; "
                              "it was stopped, the shard can be retried")
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if message[0] == "free" and self._ring is not None:
            self._ring.free.append(message[1])
        elif message[0] == "failed":
            self._failed = message[1]
        return message

    def _doing(self) -> str:
        return f"while encoding chunk {self._chunk}" if self._chunk is not None else "while starting"

    def _died(self) -> EncodeError:
        proc, doing = self._proc, self._doing()
        pid = proc.pid
        proc.join(STOP_TIMEOUT_S)
        how = _exit_status(proc.exitcode)
        self._discard()
        return EncodeError(f"the encoder process (pid {pid}) exited with {how} {doing}; the shard can be retried")

    def _discard(self) -> None:
        """Forget the child (killed if still there), its open chunk and its ring."""
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(STOP_TIMEOUT_S)
        if self._conn is not None:
            self._conn.close()
        if self._ring is not None:
            self._ring.unlink()
        self._proc = self._conn = self._ring = self._chunk = None


def _exit_status(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code >= 0:
        return f"code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


class ProcessChunkWriter:
    """ChunkWriter's surface over an :class:`EncoderProcess`: ``write`` returns once the frame is in
    shared memory; the child's errors surface at a later ``write`` or at ``close``. Leaving the
    ``with`` by an exception leaves the file unfinished, for the caller to discard. After a clean
    exit, :attr:`info` is what ChunkWriter gave in the child.

    Raises:
        EncodeError: the chunk cannot be created, a frame could not be encoded, or the child died.
    """

    def __init__(self, path: str, settings: ChunkSettings, process: EncoderProcess) -> None:
        self.path = path
        self.settings = settings
        self.frames = 0
        self.info: dict[str, Any] = {}
        self._process = process
        process._begin(path, settings)
        self._open = True

    def write(self, pixels: np.ndarray, pts: int) -> None:
        """Hand one frame (BGR, 8 or 16 bits) presented at ``pts`` (source time base) to the encoder."""
        if not self._open:
            raise ValueError(f"chunk {self.path} is closed")
        self._process._write(pixels, pts)
        self.frames += 1

    def close(self) -> None:
        """Finish the chunk and wait for its :attr:`info`."""
        if not self._open:
            return
        self._open = False
        self.info, self.frames = self._process._end(self.path, finish=True)

    def __enter__(self) -> ProcessChunkWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._open:
            self._open = False
            try:
                self._process._end(self.path, finish=False)
            except EncodeError as error:  # the exception on its way out says what went wrong first
                log.debug("abandoning chunk %s: %s", self.path, error)


# The child's half.

def _serve(conn: multiprocessing.connection.Connection, parent_pid: int) -> None:
    """The child's loop: open, encode slot by slot, finish or abort chunks until told to stop or
    the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group; the parent decides
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="farm-encoder-watch", daemon=True).start()
    memory: list[SharedMemory] = []
    views: list[np.ndarray] = []
    writer: ChunkWriter | None = None
    failed: str | None = None
    try:
        conn.send(("ready", os.getpid()))
        while True:
            message = conn.recv()
            kind = message[0]
            if kind == "frame":
                _, slot, pts = message
                if writer is not None and failed is None:
                    try:
                        writer.write(views[slot], pts)
                    except Exception as exc:
                        failed = _reason(exc, f"cannot encode the frame at pts {pts} into chunk {writer.path}")
                        _abandon(writer)
                        conn.send(("failed", failed))
                conn.send(("free", slot))
            elif kind == "ring":
                _, names, shape, dtype = message
                views = []
                for m in memory:
                    m.close()
                memory = [SharedMemory(name) for name in names]
                views = [np.ndarray(shape, np.dtype(dtype), buffer=m.buf) for m in memory]
            elif kind == "open":
                _, path, settings = message
                failed = None
                try:
                    writer = ChunkWriter(path, settings)
                    conn.send(("opened", None))
                except Exception as exc:
                    writer = None
                    conn.send(("opened", _reason(exc, f"cannot create chunk {path}")))
            elif kind == "finish":
                error, info, frames = failed, None, writer.frames if writer else 0
                if writer is not None and failed is None:
                    try:
                        writer.close()
                        info = writer.info
                    except Exception as exc:
                        error = _reason(exc, f"cannot finish chunk {writer.path}")
                        _abandon(writer)
                writer = None
                conn.send(("end", info, frames, error))
            elif kind == "abort":
                if writer is not None and failed is None:
                    _abandon(writer)
                conn.send(("end", None, writer.frames if writer else 0, None))
                writer = None
            elif kind == "stop":
                return
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone
    finally:
        if writer is not None and failed is None:
            _abandon(writer)
        views = []
        for m in memory:
            m.close()


def _watch_parent(parent_pid: int) -> None:
    """Leave when the parent is gone, even in the middle of a frame (its pipe may be held open)."""
    while os.getppid() == parent_pid:
        time.sleep(WATCH_PARENT_S)
    os._exit(0)


def _abandon(writer: ChunkWriter) -> None:
    """Close the chunk's file without finishing it (the caller discards it)."""
    try:
        writer.__exit__(EncodeError, None, None)
    except Exception as exc:  # already broken; the chunk is discarded either way
        log.debug("closing abandoned chunk %s: %s", writer.path, exc)


def _reason(exc: BaseException, doing: str) -> str:
    """The one line the parent raises: a FarmError's own message, else what was done and why."""
    if isinstance(exc, FarmError):
        return exc.message
    text = first_line(exc)
    name = type(exc).__name__
    return f"{doing}: {text if text == name else f'{name}: {text}'}"
