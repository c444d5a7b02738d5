"""A shard in planned parts (no Ray): a worker told to leave commits the parts it finished and gives
the shard back; the next worker reuses them, and the job's output is byte-identical to a straight run."""

from __future__ import annotations

import dataclasses
import os

import pytest

from farm.actors.mux_task import assemble
from farm.actors.worker import EnhanceWorker
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.errors import ShardGivenBack
from farm.job import open_job
from farm.plan import DEFAULT_PART_FRAMES, plan_parts
from farm.spec import JobSpec
from farm.testing.clips import make_test_clip

PART_FRAMES = 7


def planned_job(tmp_path, clip: str, name: str, codec: str = "x264"):
    """A job of ``clip`` in 20-frame shards of parts of at most 7 frames, under ``tmp_path/name``."""
    cfg = JobConfig(input=clip, output=str(tmp_path / f"{name}.mkv"), model=ModelConfig(model="fake:scale=2", face=False),
                    out=OutputConfig(codec=codec), jobs_root=str(tmp_path / name), shard_frames=20)
    p = open_job(cfg)
    spec = dataclasses.replace(p.job.read_spec(), part_frames=PART_FRAMES, scene_cuts=None)  # the plain plan: [0, 20), [20, 40)
    p.job.write_spec(spec)
    return cfg, p, spec


def worker_of(p, name: str, drain_at: int | None = None) -> EnhanceWorker:
    """A ready worker; ``drain_at``: its drain() is called as it enhances that frame (the node's
    notice arrives mid-part)."""
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, name, "cpu")
    worker.ready()
    if drain_at is not None:
        enhance = worker.enhancer.enhance

        def enhance_and_drain(frame, number):
            if number == drain_at:
                assert worker.drain() is True  # it answers that a shard is running
            return enhance(frame, number)

        worker.enhancer.enhance = enhance_and_drain
    return worker


def committed_parts(p, shard: int) -> list[tuple[int, int]]:
    return sorted((r.start, r.stop) for r in p.job.parts(shard))


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_parts_are_planned_from_the_spec_and_old_jobs_keep_one_part():
    """A 240-frame shard of a new job is two 120-frame parts; a shard of 13 in 6-frame parts is
    three near-equal parts (no 1-frame tail); a job.json written before parts has no part length
    and keeps one part per shard, as it ran."""
    assert DEFAULT_PART_FRAMES == 120 and plan_parts(0, 240, DEFAULT_PART_FRAMES) == [(0, 120), (120, 240)]
    assert plan_parts(240, 480, 60) == [(240, 300), (300, 360), (360, 420), (420, 480)]
    assert plan_parts(7, 20, 6) == [(7, 11), (11, 15), (15, 20)]
    assert plan_parts(0, 16, 60) == [(0, 16)]
    assert plan_parts(5, 9, None) == [(5, 9)]
    with pytest.raises(ValueError, match="part_frames must be at least 1, got 0"):
        plan_parts(0, 10, 0)


def test_old_job_json_resumes_with_one_part_per_shard(tmp_path):
    """A job directory of a farm without parts resumes: its job.json has no ``part_frames``, which
    reads as None (one part per shard); a new job records the default and reads it back."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=12, size=(32, 24), audio=False)
    _, p, spec = planned_job(tmp_path, clip, "jobs")
    data = spec.to_json()
    assert data["part_frames"] == PART_FRAMES and JobSpec.from_json(data) == spec
    del data["part_frames"]
    old = JobSpec.from_json(data)
    assert old.part_frames is None and old.parts(0, 12) == [(0, 12)]
    fresh = open_job(JobConfig(input=clip, output=str(tmp_path / "o.mkv"), model=ModelConfig(model="fake:scale=2", face=False),
                               jobs_root=str(tmp_path / "fresh")))
    assert fresh.job.read_spec().part_frames == DEFAULT_PART_FRAMES


def test_drained_worker_keeps_its_parts_and_the_next_redoes_none(tmp_path):
    """A spot node's notice arrives while its worker is in the middle of part [6, 13) of shard
    [0, 20): the worker finishes that part, commits it and gives the shard back keeping 13
    frames; a worker elsewhere reuses both parts, enhances only the 7 frames left, and the
    segment it commits is byte-identical to one made by a worker that was never interrupted,
    as is the whole output file."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=40, size=(32, 24), vfr=True)
    cfg_a, straight, spec = planned_job(tmp_path, clip, "straight")
    cfg_b, drained, _ = planned_job(tmp_path, clip, "drained")
    shards = spec.shards()
    assert [(s.start, s.stop) for s in shards] == [(0, 20), (20, 40)]
    assert spec.parts(0, 20) == [(0, 6), (6, 13), (13, 20)]

    solo = worker_of(straight, "solo")
    solo_receipts = [solo.run_shard(s.index, s.start, s.stop, attempt=1) for s in shards]

    leaving = worker_of(drained, "leaving", drain_at=8)
    with pytest.raises(ShardGivenBack, match=r"shard 0 \[0, 20\): worker leaving is leaving.*13 of its 20 frames are kept") as given:
        leaving.run_shard(0, 0, 20, attempt=1)
    assert given.value.frames_kept == 13
    assert committed_parts(drained, 0) == [(0, 6), (6, 13)]
    assert leaving.progress()["frames_done"] == 13  # it stopped at the boundary, nothing past it
    with pytest.raises(ShardGivenBack, match="it took no frames"):  # it is leaving: no more shards
        leaving.run_shard(1, 20, 40, attempt=1)

    other = worker_of(drained, "other")
    receipt = other.run_shard(0, 0, 20, attempt=2)
    assert other.progress()["frames_done"] == 7  # only part [13, 20): no frame redone
    assert committed_parts(drained, 0) == []  # joined into the segment, then removed
    assert not os.path.exists(os.path.join(drained.job.location, "parts", "000000"))
    seg = lambda p, r: read(os.path.join(p.job.location, "segments", r.segment))  # noqa: E731
    assert (receipt.bytes, receipt.sha256, seg(drained, receipt)) == (solo_receipts[0].bytes, solo_receipts[0].sha256, seg(straight, solo_receipts[0]))
    assert receipt.video == solo_receipts[0].video
    second = other.run_shard(1, 20, 40, attempt=1)

    for p, cfg, receipts in ((straight, cfg_a, solo_receipts), (drained, cfg_b, [receipt, second])):
        assemble(p.job.jobs_root, p.job.job_id, cfg.output, spec.out, [(r.segment, r.start, r.stop) for r in receipts])
    assert read(cfg_b.output) == read(cfg_a.output)


def test_a_torn_or_foreign_part_is_redone(tmp_path):
    """A part whose bytes no longer match its record (a disk or an upload damaged it), or one of
    another plan's range, is not reused: the next worker encodes those frames again and the
    segment is still the straight run's."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=20, size=(32, 24), audio=False)
    _, straight, spec = planned_job(tmp_path, clip, "straight", codec="ffv1")
    _, drained, _ = planned_job(tmp_path, clip, "drained", codec="ffv1")
    want = worker_of(straight, "solo").run_shard(0, 0, 20, attempt=1)
    with pytest.raises(ShardGivenBack):
        worker_of(drained, "leaving", drain_at=10).run_shard(0, 0, 20, attempt=1)
    assert committed_parts(drained, 0) == [(0, 6), (6, 13)]
    damaged = os.path.join(drained.job.location, drained.job.part_rel(0, 6, 13))
    with open(damaged, "r+b") as f:
        f.seek(40)
        f.write(b"\xff\xff\xff\xff")
    assert committed_parts(drained, 0) == [(0, 6)]
    other = worker_of(drained, "other")
    got = other.run_shard(0, 0, 20, attempt=2)
    assert other.progress()["frames_done"] == 14  # parts [6, 13) and [13, 20): decoding starts at the first bad one
    assert (got.bytes, got.sha256) == (want.bytes, want.sha256)


def test_double_rate_parts_join_into_the_straight_segment(tmp_path):
    """An interlaced DVD-like source deinterlaced to double rate (two output frames per source
    frame, bwdif reading a field beyond each end of a part): a worker drained in the first part
    of shard [0, 20) and the worker after it make the same segment, 40 frames, as a straight run."""
    from farm.testing.legacy import make_interlaced_clip

    clip = make_interlaced_clip(str(tmp_path / "tff.mkv"), frames=20, size=(32, 24))
    jobs = {}
    for name in ("straight", "drained"):
        cfg = JobConfig(input=clip, output=str(tmp_path / f"{name}.mkv"),
                        model=ModelConfig(model="fake:scale=2", face=False, deinterlace="double"),
                        out=OutputConfig(codec="x264"), jobs_root=str(tmp_path / name), shard_frames=20)
        p = open_job(cfg)
        p.job.write_spec(dataclasses.replace(p.job.read_spec(), part_frames=PART_FRAMES, scene_cuts=None))
        jobs[name] = p
    want = worker_of(jobs["straight"], "solo").run_shard(0, 0, 20, attempt=1)
    with pytest.raises(ShardGivenBack):
        worker_of(jobs["drained"], "leaving", drain_at=4).run_shard(0, 0, 20, attempt=1)  # output frame 4: source frame 2
    assert committed_parts(jobs["drained"], 0) == [(0, 6)]
    other = worker_of(jobs["drained"], "other")
    got = other.run_shard(0, 0, 20, attempt=2)
    assert other.progress()["frames_done"] == 28  # output frames of source [6, 20)
    assert (got.output_frames, got.bytes, got.sha256) == (40, want.bytes, want.sha256)


def test_parts_encoded_in_the_encoder_process_join_into_the_same_segment(tmp_path):
    """A GPU worker encodes in a child process (farm.video.encode_process): its parts, given back
    and taken up by another such worker, join into the segment a CPU worker writes in-process."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=20, size=(32, 24), vfr=True, audio=False)
    _, straight, _ = planned_job(tmp_path, clip, "straight")
    _, drained, _ = planned_job(tmp_path, clip, "drained")
    want = worker_of(straight, "cpu").run_shard(0, 0, 20, attempt=1)

    def process_worker(name: str, drain_at: int | None = None) -> EnhanceWorker:
        worker = worker_of(drained, name, drain_at)
        worker.encode_in_process = True
        return worker

    leaving, other = process_worker("leaving", drain_at=3), process_worker("other")
    try:
        with pytest.raises(ShardGivenBack):
            leaving.run_shard(0, 0, 20, attempt=1)
        assert committed_parts(drained, 0) == [(0, 6)]
        got = other.run_shard(0, 0, 20, attempt=2)
        assert (got.bytes, got.sha256, got.video) == (want.bytes, want.sha256, want.video)
        assert leaving._encoder_process is not None and other._encoder_process is not None  # both encoded out of process
    finally:
        for worker in (leaving, other):
            if worker._encoder_process is not None:
                worker._encoder_process.close()
