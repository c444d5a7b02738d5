"""The shard plan: boundaries move to scene cuts (else source keyframes) within the window, the
shards always cover [0, N) exactly with no empty shard, and old specs keep their plain plan."""

from __future__ import annotations

import random

import pytest

from farm.plan import plan_shards, planned_boundaries, search_ranges, snap_window


def starts(shards) -> list[int]:
    return [s.start for s in shards]


def assert_covers(shards, n: int) -> None:
    assert [s.index for s in shards] == list(range(len(shards)))
    assert shards[0].start == 0 and shards[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
    assert all(s.frames > 0 for s in shards)


def test_no_cut_near_keeps_the_plain_plan():
    """A talk recorded in one shot: no cut anywhere near a boundary, so nothing moves."""
    plain = plan_shards(1000, 240)
    assert starts(plain) == [0, 240, 480, 720, 960]
    assert plan_shards(1000, 240, scene_cuts=[100, 600], keyframes=[350], window=48) == plain
    assert plan_shards(1000, 240, scene_cuts=[250], window=0) == plain


def test_boundaries_move_to_the_nearest_cut_within_the_window():
    """A film with cuts 10 frames after the first boundary and 30 before the third: those two
    boundaries move onto the cuts; a cut just outside the window (the second) is left alone."""
    shards = plan_shards(1000, 240, scene_cuts=[250, 480 + 49, 690, 700], window=48)
    assert starts(shards) == [0, 250, 480, 700, 960]
    assert_covers(shards, 1000)


def test_scene_cuts_win_over_keyframes_and_keyframes_over_nothing():
    """A source with a keyframe every 50 frames: a boundary with a scene cut in reach takes the
    cut even though a keyframe is nearer; one with only keyframes in reach takes the nearest."""
    keyframes = range(0, 1000, 50)
    shards = plan_shards(1000, 240, scene_cuts=[270], keyframes=keyframes, window=48)
    assert starts(shards) == [0, 270, 500, 700, 950]


def test_cut_at_the_last_frame_leaves_a_one_frame_shard():
    """A cut on the very last frame: the shard before it grows, the last shard holds one frame."""
    shards = plan_shards(1000, 240, scene_cuts=[999], window=48)
    assert starts(shards) == [0, 240, 480, 720, 999]
    assert_covers(shards, 1000)


def test_window_is_capped_so_boundaries_never_cross():
    """A window wider than half a shard (a caller's mistake) cannot make shards empty or reorder
    them: it is capped below half a shard."""
    shards = plan_shards(100, 10, scene_cuts=list(range(1, 100, 2)), window=50)
    assert_covers(shards, 100)
    assert len(shards) == 10


@pytest.mark.parametrize("seed", range(20))
def test_random_cuts_always_cover_exactly(seed):
    """Any cut list (out of range, duplicated, dense) gives a plan covering [0, N) exactly, with
    every boundary within the window of its planned place."""
    rng = random.Random(seed)
    n, size = rng.randint(1, 3000), rng.randint(1, 300)
    window = snap_window(size, rng.choice([24.0, 30.0, 60.0]))
    cuts = [rng.randint(-5, n + 5) for _ in range(rng.randint(0, 200))]
    keys = [rng.randint(0, n) for _ in range(rng.randint(0, 50))]
    shards = plan_shards(n, size, scene_cuts=cuts, keyframes=keys, window=window)
    assert_covers(shards, n)
    planned = planned_boundaries(n, size)
    assert len(shards) == len(planned) + 1
    assert all(abs(s.start - p) <= window for s, p in zip(shards[1:], planned))
    assert all(s.start in set(cuts) | set(keys) | {p} for s, p in zip(shards[1:], planned))


def test_snap_window_is_two_seconds_or_a_quarter_shard():
    """24 fps, 240-frame shards: 2 s = 48 frames < 60; 16-frame shards: a quarter, 4 frames."""
    assert snap_window(240, 24.0) == 48
    assert snap_window(16, 24.0) == 4
    assert snap_window(1, 24.0) == 0


def test_search_ranges_cover_each_boundary_window():
    """The frames decoded for scene detection: each planned boundary ± the window, and the frame
    before, clipped to the video."""
    assert search_ranges(1000, 240, 48) == [(191, 289), (431, 529), (671, 769), (911, 1000)]
    assert search_ranges(1000, 240, 0) == []
    assert search_ranges(100, 240, 48) == []
