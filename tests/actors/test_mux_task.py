"""Workers encode each shard in the output codec; the tail only concatenates the chunks' packets.

Run in process (open_job, then the worker class on every shard, then the mux task's function), so
each codec's whole path runs in seconds without Ray. That a killed and resumed `farm submit`
writes the same file byte for byte is in tests/faults/test_resume.py."""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from farm.actors.mux_task import assemble
from farm.actors.worker import EnhanceWorker
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.errors import MuxError
from farm.job import open_job
from farm.testing.clips import make_test_clip
from farm.testing.fakes import fake_output
from farm.video.encode import ChunkWriter, chunk_settings
from tests.helpers import decode_all, stream_packets

CODECS = ["x264", "x265", "av1", "ffv1"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """VFR (three rates), B-frames, two AAC tracks: the kind of phone/film file that breaks concat."""
    path = str(tmp_path_factory.mktemp("chunks") / "clip.mp4")
    return make_test_clip(path, frames=36, size=(32, 24), vfr=True, bframes=2, gop=12, audio_tracks=2)


def run_job(clip: str, out: str, codec: str, jobs: str, shard_frames: int = 6, crf: int = 18):
    """open_job → every shard on one in-process worker → the tail, as `farm submit` does."""
    cfg = JobConfig(input=clip, output=out, model=ModelConfig(model="fake:scale=2", face=False),
                    out=OutputConfig(codec=codec, crf=crf), jobs_root=jobs, shard_frames=shard_frames)
    p = open_job(cfg)
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
    worker.ready()
    receipts = [worker.run_shard(s.index, s.start, s.stop, attempt=1) for s in p.spec.shards()]
    segments = [(r.segment, r.start, r.stop) for r in receipts]
    result = assemble(p.job.jobs_root, p.job.job_id, out, cfg.out, segments)
    return p, worker, receipts, result


def video_packets(path: str) -> tuple[Fraction, list[tuple[int, int]]]:
    """(time base, (pts, dts) of every video packet in file order)."""
    with av.open(path) as c:
        s = c.streams.video[0]
        return Fraction(s.time_base), [(p.pts, p.dts) for p in c.demux(s) if p.size]


def seconds(tb: Fraction, values) -> list[Fraction]:
    return [v * tb for v in values]


def through(pixels: np.ndarray, pix_fmt: str) -> np.ndarray:
    """``pixels`` converted to ``pix_fmt`` and back, as PyAV does on the way into the encoder: the
    colour conversion's own loss (4:2:0 chroma), so that what is left is the codec's."""
    frame = av.VideoFrame.from_ndarray(pixels, format="bgr24").reformat(format=pix_fmt)
    return frame.to_ndarray(format="bgr24")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("codec", CODECS)
def test_concatenated_chunks_keep_timing_pictures_and_audio(clip, tmp_path, codec):
    """A VFR phone clip with B-frames and two audio tracks, cut into 6 shards, each encoded by its
    worker in the output codec and concatenated at the end: the output presents every source
    frame at the source's time, dts increase strictly across the chunk boundaries, every picture
    is its own model frame (not a neighbour's), and the audio is the source's, byte for byte."""
    out = str(tmp_path / "out.mp4")
    p, _, receipts, _ = run_job(clip, out, codec, str(tmp_path / "jobs"))
    assert len(receipts) == 6

    src_tb, src_packets = video_packets(clip)
    out_tb, out_packets = video_packets(out)
    assert sorted(seconds(out_tb, [pts for pts, _ in out_packets])) == sorted(seconds(src_tb, [pts for pts, _ in src_packets]))
    dts = [d for _, d in out_packets]
    assert all(b > a for a, b in zip(dts, dts[1:])), dts
    assert all(d <= pts for pts, d in out_packets)

    _, src_frames = decode_all(clip)
    _, got = decode_all(out)
    assert len(got) == len(src_frames) == 36
    model = [fake_output(f, 2, None) for f in src_frames]
    if codec != "ffv1":
        model = [through(m, "yuv420p") for m in model]
    for i, frame in enumerate(got):
        if codec == "ffv1":
            assert np.abs(frame.astype(int) - model[i].astype(int)).max() <= 1, i
        else:
            own = psnr(frame, model[i])
            assert own >= 35, (i, own)  # CRF 18 on a 64x48 frame with hard edges: 37-45 dB
            for j in (i - 1, i + 1):
                if 0 <= j < len(model):
                    assert psnr(frame, model[j]) < own, (i, j)
    assert stream_packets(out, "audio") == stream_packets(clip, "audio")
    assert len(stream_packets(out, "audio")) == 2


@pytest.mark.parametrize("codec", CODECS)
def test_redone_chunk_is_byte_identical(clip, tmp_path, codec):
    """A shard is redone (its first worker was lost after committing, a lease expired): the second
    chunk is byte for byte the first, so the output does not depend on which attempt the tail
    takes."""
    cfg = JobConfig(input=clip, output=str(tmp_path / "out.mp4"), model=ModelConfig(model="fake:scale=2", face=False),
                    out=OutputConfig(codec=codec), jobs_root=str(tmp_path / "jobs"), shard_frames=6)
    p = open_job(cfg)
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
    worker.ready()
    first = worker.run_shard(2, 12, 18, attempt=1)
    again = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w2", "cpu").run_shard(2, 12, 18, attempt=2)
    assert first.segment != again.segment
    assert (first.sha256, first.bytes, first.video) == (again.sha256, again.bytes, again.video)


@pytest.mark.parametrize("codec", ["x264", "x265", "av1"])
def test_multithreaded_encode_is_byte_identical(codec, tmp_path):
    """At 1280x800 the thread rule gives 2 encoder threads (frame threads for x264/x265): the same
    frames encoded twice still give the same bytes."""
    tb = Fraction(1, 1000)
    pts = [i * 41 for i in range(8)]
    settings = chunk_settings(codec, 18, "ultrafast" if codec != "av1" else "12", None, (1280, 800), False, pts, tb)
    assert settings.threads == 2
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (100, 160, 3), dtype=np.uint8)
    frames = [np.ascontiguousarray(np.roll(np.repeat(np.repeat(base, 8, 0), 8, 1), 3 * i, axis=1)) for i in range(8)]
    digests = []
    for n in range(2):
        path = str(tmp_path / f"{n}.nut")
        with ChunkWriter(path, settings) as w:
            for f, t in zip(frames, pts):
                w.write(f, t)
        with open(path, "rb") as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.parametrize("change, difference", [
    ("size", "(width 62, first 64)"),
    ("crf", "(extradata_sha256 "),
])
def test_chunk_encoded_differently_is_refused_naming_it(clip, tmp_path, change, difference):
    """One chunk was written with other settings (a worker of an older farm, a hand edit, another
    size or CRF): the tail refuses with one line naming that chunk instead of writing a file that
    breaks in players at that point."""
    out = str(tmp_path / "out.mp4")
    p, _, receipts, _ = run_job(clip, out, "x264", str(tmp_path / "jobs"))
    forged = receipts[3]
    path = os.path.join(p.job.location, "segments", forged.segment)
    tb = p.spec.source.index.time_base
    pts = p.spec.source.index.pts
    size, crf = ((62, 48), 18) if change == "size" else ((64, 48), 30)
    settings = chunk_settings("x264", crf, None, None, size, False, pts, tb)
    _, src_frames = decode_all(clip)
    with ChunkWriter(path, settings) as w:
        for i in range(forged.start, forged.stop):
            w.write(fake_output(src_frames[i], 2, None), pts[i])
    os.unlink(out)
    segments = [(r.segment, r.start, r.stop) for r in receipts]
    with pytest.raises(MuxError) as err:
        assemble(p.job.jobs_root, p.job.job_id, out, p.spec.out, segments)
    message = str(err.value)
    assert "\n" not in message
    assert f"chunk {forged.segment} (frames [18, 24)) was encoded differently from the first chunk {difference}" in message
    assert not os.path.exists(out)


def test_png_output_is_the_workers_png_files(clip, tmp_path):
    """`--codec png` for an editor that wants frames: every frame is a PNG file of exactly the
    model's output (the workers encoded them; the tail only wrote their bytes out), named by frame
    number, with the source's presentation times in timestamps.txt."""
    out = str(tmp_path / "frames")
    p, _, receipts, _ = run_job(clip, out, "png", str(tmp_path / "jobs"))
    names = sorted(os.listdir(out))
    assert names == [f"{i:06d}.png" for i in range(36)] + ["timestamps.txt"]
    _, src_frames = decode_all(clip)
    for i, frame in enumerate(src_frames):
        with av.open(os.path.join(out, f"{i:06d}.png")) as c:
            got = next(c.decode(video=0)).to_ndarray(format="bgr24")
        assert np.array_equal(got, fake_output(frame, 2, None)), i
    times, _ = decode_all(clip)
    with open(os.path.join(out, "timestamps.txt")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "# timestamp format v2"
    assert [float(v) for v in lines[1:]] == pytest.approx([float(t * 1000) for t in times], abs=1e-6)


def test_preset_the_encoder_refuses_is_refused_before_work(clip, tmp_path):
    """`--codec av1 --preset medium` (an x264 preset name; SVT-AV1 takes 0-13): refused in one
    line before any shard runs, instead of failing every shard on every worker."""
    from farm.errors import UsageError

    cfg = JobConfig(input=clip, output=str(tmp_path / "out.mkv"), model=ModelConfig(model="fake:scale=2", face=False),
                    out=OutputConfig(codec="av1", preset="medium"), jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(UsageError, match=r"^--codec av1 refuses these settings \(\{'preset': 'medium', 'crf': '18'\}\): .*; check --preset and --crf$"):
        open_job(cfg)
    assert not os.path.exists(tmp_path / "jobs")
