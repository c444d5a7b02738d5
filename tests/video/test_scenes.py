"""Scene detection when a job is opened: the cuts of a clip with known scene changes are found exactly,
and the job's plan moves its boundaries onto them; a job spec from before scene-aware planning
keeps its plain plan."""

from __future__ import annotations

import time

from farm.config import ModelConfig, OutputConfig
from farm.job import find_scene_cuts
from farm.plan import plan_shards
from farm.spec import JobSpec, keyframe_frames
from farm.testing.clips import make_scene_clip, make_test_clip
from farm.video.probe import probe
from farm.video.scenes import detect_scene_cuts

CUTS = (20, 45)


def test_known_cuts_are_found_exactly(tmp_path):
    """A clip of three shots (cuts at frames 20 and 45) with moving content in each: the luma
    difference finds exactly those two cuts, and nothing inside a shot."""
    clip = make_scene_clip(str(tmp_path / "scenes.mp4"), CUTS, frames=72)
    source = probe(clip)
    assert detect_scene_cuts(clip, source.video_stream, source.index, [(0, 72)]) == CUTS
    # Only the ranges asked for are looked at; a cut on a range's first frame is not reported.
    assert detect_scene_cuts(clip, source.video_stream, source.index, [(30, 60)]) == (45,)
    assert detect_scene_cuts(clip, source.video_stream, source.index, [(20, 40)]) == ()


def test_one_shot_has_no_cut(tmp_path):
    """A single moving shot (the test pattern) holds no cut."""
    clip = make_test_clip(str(tmp_path / "one.mkv"), frames=48, size=(96, 64), audio=False)
    source = probe(clip)
    assert detect_scene_cuts(clip, source.video_stream, source.index, [(0, 48)]) == ()


def test_the_job_plan_snaps_to_the_cuts(tmp_path):
    """A new job of 16-frame shards on that clip: the cuts near the boundaries at 16 and 48 are
    recorded in the spec, and the plan starts shards on them; the JSON round trip keeps the plan,
    and a job.json from before (no cuts, no output settings) keeps the plain plan."""
    clip = make_scene_clip(str(tmp_path / "scenes.mp4"), CUTS, frames=72, gop=250)
    source = probe(clip)
    assert keyframe_frames(source) == [0]
    cuts = find_scene_cuts(source, 16)
    assert cuts == CUTS
    spec = JobSpec("scenes-x", source, ModelConfig(), 16, "f", time.time(), out=OutputConfig(crf=20), scene_cuts=cuts)
    assert [(s.start, s.stop) for s in spec.shards()] == [(0, 20), (20, 32), (32, 45), (45, 64), (64, 72)]
    again = JobSpec.from_json(spec.to_json())
    assert again == spec and again.shards() == spec.shards()
    old = spec.to_json()
    del old["scene_cuts"], old["out"], old["spec_version"]  # as a job.json of that time was written
    legacy = JobSpec.from_json(old)
    assert legacy.out == OutputConfig() and legacy.scene_cuts is None
    assert legacy.shards() == plan_shards(72, 16)
