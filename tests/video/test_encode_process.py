"""Chunks encoded in a child process (farm.video.encode_process) are ChunkWriter's chunks, byte for
byte; the child's errors and its death come back as EncodeError without a hang, the child leaves
when its parent dies, and no shared memory is left behind."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction

import numpy as np
import pytest

from farm.errors import EncodeError
from farm.video.encode import ChunkWriter, chunk_settings
from farm.video.encode_process import SHM_PREFIX, EncoderProcess, ProcessChunkWriter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PTS = list(range(6))
TB = Fraction(1, 25)


def frames(size: tuple[int, int], high_bit_depth: bool = False, n: int = len(PTS), seed: int = 0) -> list[np.ndarray]:
    """``n`` BGR frames of ``size`` (width, height): a moving gradient under noise, so that every
    frame differs and the encoder has real work."""
    w, h = size
    rng = np.random.default_rng(seed)
    top = 65535 if high_bit_depth else 255
    dtype = np.uint16 if high_bit_depth else np.uint8
    ramp = np.linspace(0, top * 0.7, w)[None, :, None] * np.ones((h, 1, 3))
    return [np.clip(np.roll(ramp, 3 * i, axis=1) + rng.integers(0, int(top * 0.3), (h, w, 3)), 0, top).astype(dtype)
            for i in range(n)]


def settings_for(codec: str, size: tuple[int, int], high_bit_depth: bool = False, preset: str | None = "ultrafast"):
    return chunk_settings(codec, 18, preset if codec == "x264" else None, None, size, high_bit_depth, PTS, TB)


def encode_here(path: str, settings, pictures) -> tuple[bytes, dict]:
    with ChunkWriter(path, settings) as w:
        for pixels, pts in zip(pictures, PTS):
            w.write(pixels, pts)
    with open(path, "rb") as f:
        return f.read(), w.info


def encode_there(path: str, settings, pictures, process: EncoderProcess) -> tuple[bytes, dict]:
    with ProcessChunkWriter(path, settings, process) as w:
        for pixels, pts in zip(pictures, PTS):
            w.write(pixels, pts)
    assert w.frames == len(pictures)
    with open(path, "rb") as f:
        return f.read(), w.info


def segments(pid: int | None = None) -> list[str]:
    """Our shared memory segments in /dev/shm (those of the process ``pid``, default this one)."""
    return sorted(glob.glob(f"/dev/shm/{SHM_PREFIX}{os.getpid() if pid is None else pid}_*"))


def gone(pid: int) -> bool:
    """The process has exited (a zombie no one reaps counts: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def process():
    """A worker's encoder process; stopped at the end, leaving no shared memory."""
    with EncoderProcess() as p:
        yield p
    assert segments() == []


@pytest.mark.parametrize("codec, high_bit_depth", [("x264", False), ("ffv1", False), ("x264", True), ("ffv1", True)])
def test_chunk_is_the_in_process_chunk(process, tmp_path, codec, high_bit_depth):
    """A worker encodes its shard in the child process instead of its own: the chunk is byte for
    byte the one ChunkWriter writes in process (so chunks of both kinds concatenate and a redone
    shard matches), and the receipt's video info is the same dict; 8-bit and 16-bit sources."""
    settings = settings_for(codec, (64, 48), high_bit_depth)
    pictures = frames((64, 48), high_bit_depth)
    expected = encode_here(str(tmp_path / "here.nut"), settings, pictures)
    got = encode_there(str(tmp_path / "there.nut"), settings, pictures, process)
    assert got[1] == expected[1]
    assert got[0] == expected[0]


def test_chunks_of_another_size_remake_the_slots(tmp_path):
    """One worker's encoder process gets a 64x48 chunk, then one of odd-sided 97x73 frames
    (cropped to 96x72 for 4:2:0): the same child encodes both, its frame slots are made again for
    the new size, and both chunks are ChunkWriter's."""
    with EncoderProcess() as process:
        small = settings_for("x264", (64, 48))
        assert encode_there(str(tmp_path / "a.nut"), small, frames((64, 48)), process) == \
            encode_here(str(tmp_path / "a0.nut"), small, frames((64, 48)))
        pid = process.pid
        assert [os.path.getsize(p) for p in segments()] == [64 * 48 * 3] * 4

        odd = settings_for("x264", (97, 73))
        assert (odd.width, odd.height) == (96, 72)
        assert encode_there(str(tmp_path / "b.nut"), odd, frames((97, 73), seed=1), process) == \
            encode_here(str(tmp_path / "b0.nut"), odd, frames((97, 73), seed=1))
        assert process.pid == pid
        assert [os.path.getsize(p) for p in segments()] == [97 * 73 * 3] * 4
    assert segments() == []


@pytest.mark.parametrize("case", ["missing directory", "refused preset"])
def test_child_error_is_an_encode_error_and_the_next_chunk_works(tmp_path, case):
    """A chunk's directory was removed under the worker, or the encoder refuses a setting at its
    first frame: the parent raises EncodeError with ChunkWriter's own message (at creation, or at a
    later write or close), and the worker's next chunk goes through the same child."""
    if case == "missing directory":
        settings, where = settings_for("x264", (64, 48)), tmp_path / "gone"
    else:
        settings, where = settings_for("x264", (64, 48), preset="nonsense"), tmp_path
    with pytest.raises(EncodeError) as here:
        encode_here(str(where / "c.nut"), settings, frames((64, 48)))
    with EncoderProcess() as process:
        with pytest.raises(EncodeError) as there:
            encode_there(str(where / "c.nut"), settings, frames((64, 48)), process)
        assert str(there.value) == str(here.value)
        pid = process.pid

        good = settings_for("x264", (64, 48))
        assert encode_there(str(tmp_path / "next.nut"), good, frames((64, 48)), process) == \
            encode_here(str(tmp_path / "next0.nut"), good, frames((64, 48)))
        assert process.pid == pid
    assert segments() == []


def test_killed_child_is_an_encode_error_not_a_hang(tmp_path):
    """The encoder process is killed mid-chunk (the OOM killer, an operator): the worker's next
    write or the close raises EncodeError naming the death within seconds, the shared memory is
    gone at once, and the next chunk gets a new child."""
    settings = settings_for("x264", (64, 48))
    path = str(tmp_path / "killed.nut")
    with EncoderProcess() as process:
        with pytest.raises(EncodeError) as err:
            with ProcessChunkWriter(path, settings, process) as w:
                for pixels, pts in zip(frames((64, 48)), PTS):
                    w.write(pixels, pts)
                pid = process.pid
                os.kill(pid, signal.SIGKILL)
                t0 = time.monotonic()
                for pts in range(100, 400):  # back-pressure: the slots never come back
                    w.write(pixels, pts)
        assert time.monotonic() - t0 < 5
        assert str(err.value) == (f"the encoder process (pid {pid}) exited with signal SIGKILL while encoding "
                                  f"chunk {path}; the shard can be retried")
        assert segments() == []

        assert encode_there(str(tmp_path / "next.nut"), settings, frames((64, 48)), process) == \
            encode_here(str(tmp_path / "next0.nut"), settings, frames((64, 48)))
        assert process.pid != pid
    assert segments() == []


def test_hung_child_times_out(tmp_path):
    """The encoder process stops answering (stuck in the encoder, stopped by a debugger): once its
    slots are all taken, the write waits only the reply timeout, raises EncodeError saying so, and
    the child is killed and its shared memory unlinked."""
    settings = settings_for("x264", (64, 48))
    path = str(tmp_path / "hung.nut")
    with EncoderProcess(reply_timeout_s=1) as process:
        with pytest.raises(EncodeError) as err:
            with ProcessChunkWriter(path, settings, process) as w:
                pid = process.pid
                os.kill(pid, signal.SIGSTOP)
                t0 = time.monotonic()
                for pts, pixels in enumerate(frames((64, 48), n=20)):
                    w.write(pixels, pts)
        assert 1 <= time.monotonic() - t0 < 5
        assert str(err.value) == (f"the encoder process (pid {pid}) did not answer in 1 s while encoding chunk {path}; "
                                  "it was stopped, the shard can be retried")
        assert gone(pid)
        assert segments() == []


def test_exception_leaves_the_unfinished_chunk_for_the_caller(tmp_path):
    """The model fails on the shard's fourth frame: leaving the `with` by that exception closes the
    chunk unfinished, exactly as ChunkWriter leaves it, before the exception reaches the caller,
    who deletes it; no shared memory is left once the worker stops."""
    # ultrafast muxes 2 of the 3 frames at once (with a lookahead nothing is muxed and no file made)
    settings = settings_for("x264", (64, 48))
    pictures = frames((64, 48))[:3]

    def abandon(writer) -> bytes:
        with pytest.raises(RuntimeError, match="^the model failed$"):
            with writer as w:
                for pixels, pts in zip(pictures, PTS):
                    w.write(pixels, pts)
                raise RuntimeError("the model failed")
        with open(writer.path, "rb") as f:
            return f.read()

    expected = abandon(ChunkWriter(str(tmp_path / "here.nut"), settings))
    with EncoderProcess() as process:
        got = abandon(ProcessChunkWriter(str(tmp_path / "there.nut"), settings, process))
        assert got == expected
        assert got != encode_here(str(tmp_path / "finished.nut"), settings, pictures)[0]
        os.unlink(tmp_path / "there.nut")
    assert segments() == []


PARENT = """
import os, sys
from fractions import Fraction
import numpy as np
from farm.video.encode import chunk_settings
from farm.video.encode_process import EncoderProcess, ProcessChunkWriter

settings = chunk_settings("ffv1", 18, None, None, (64, 48), False, [0, 1], Fraction(1, 25))
process = EncoderProcess()
writer = ProcessChunkWriter(sys.argv[1], settings, process)
writer.write(np.zeros((48, 64, 3), np.uint8), 0)
print(process.pid, flush=True)
os._exit(0)
"""


def test_child_leaves_when_its_parent_dies(tmp_path):
    """The worker process dies without closing anything (Ray killed the actor, a segfault): its
    encoder process exits by itself within seconds instead of living on, and the shared memory
    the worker made is unlinked."""
    out = tmp_path / "pid.txt"
    with open(out, "w") as stdout, open(tmp_path / "stderr.txt", "w") as stderr:
        parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PARENT), str(tmp_path / "c.nut")],
                                  stdout=stdout, stderr=stderr, cwd=ROOT)
        assert parent.wait(timeout=60) == 0, (tmp_path / "stderr.txt").read_text()
    child = int(out.read_text())
    assert child != parent.pid
    deadline = time.monotonic() + 10
    while not (gone(child) and segments(parent.pid) == []) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(child)
    assert segments(parent.pid) == []


@pytest.fixture(scope="module")
def x264_job(tmp_path_factory):
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.job import open_job
    from farm.testing.clips import make_test_clip

    d = tmp_path_factory.mktemp("worker-process")
    clip = make_test_clip(str(d / "clip.mp4"), frames=12, size=(64, 48), bframes=2)
    cfg = JobConfig(input=clip, output=str(d / "out.mkv"), model=ModelConfig(model="fake:scale=2", face=False),
                    out=OutputConfig(codec="x264"), jobs_root=str(d / "jobs"), shard_frames=6)
    return open_job(cfg)


def test_a_worker_encoding_out_of_process_commits_the_same_chunks(x264_job):
    """A GPU worker encodes in its encoder process: every shard's committed chunk has the bytes and
    the receipt's video description the in-process encode gives, and no shared memory is left."""
    from farm.actors.worker import EnhanceWorker

    p = x264_job
    runs = {}
    for out_of_process in (False, True):
        worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, f"w-{out_of_process}", "cpu", encode_in_process=out_of_process)
        worker.ready()
        runs[out_of_process] = [worker.run_shard(s.index, s.start, s.stop, attempt=1) for s in p.spec.shards()]
        assert (worker._encoder_process is not None) == out_of_process
        if worker._encoder_process is not None:
            worker._encoder_process.close()
    assert [(r.sha256, r.video) for r in runs[True]] == [(r.sha256, r.video) for r in runs[False]]
    assert not glob.glob(f"/dev/shm/{SHM_PREFIX}{os.getpid()}_*")


@pytest.mark.ray
def test_a_ray_worker_actor_starts_its_encoder_process(x264_job, local_ray):
    """Inside a Ray worker process (which "spawn" re-imports as __main__) the encoder process starts
    and gives the chunk the in-process encode gives."""
    import ray

    from farm.actors.worker import EnhanceWorker
    from farm.enhance.factories import resolve_factories

    p = x264_job
    shard = p.spec.shards()[0]
    here = EnhanceWorker(p.job.jobs_root, p.job.job_id, "here", "cpu", encode_in_process=False)
    here.ready()
    expected = here.run_shard(shard.index, shard.start, shard.stop, attempt=1)
    actor = ray.remote(concurrency_groups={"status": 1})(EnhanceWorker).remote(p.job.jobs_root, p.job.job_id, "actor", "cpu", factories=resolve_factories(p.spec.model),
                                                                          encode_in_process=True)
    try:
        ray.get(actor.ready.remote(), timeout=120)
        receipt = ray.get(actor.run_shard.remote(shard.index, shard.start, shard.stop, 2), timeout=120)
    finally:
        ray.kill(actor)
    assert (receipt.sha256, receipt.video) == (expected.sha256, expected.video)
