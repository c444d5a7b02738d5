"""Bad input gets one clear line, exit status 1 (2 for impossible options), no traceback, nothing
at the output path, and the input untouched."""

from __future__ import annotations

import hashlib
import os

import pytest

from farm.testing import make_test_clip
from tests.helpers import run_farm


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return make_test_clip(str(tmp_path_factory.mktemp("bad") / "clip.mkv"), frames=8, size=(32, 24))


def check_refused(args: list[str], output: str, *words: str, code: int = 1, source: str | None = None) -> str:
    before = digest(source) if source and os.path.isfile(source) else None
    result = run_farm(args + ["--quiet"])
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not os.path.exists(output)
    if before:
        assert digest(source) == before
    return lines[0]


def test_missing_input(tmp_path):
    """A typo in the input path."""
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", str(tmp_path / "nope.mp4"), "-o", out, "--model", "fake"], out, "does not exist", "nope.mp4")


def test_not_a_video(tmp_path):
    """A text file passed by mistake."""
    src = tmp_path / "notes.mp4"
    src.write_text("these are my notes, not a video\n" * 20)
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", str(src), "-o", out, "--model", "fake"], out, "not a video", source=str(src))


def test_missing_sr_weights_file(tmp_path, clip):
    """--sr-weights pointing at a file that is not there."""
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", clip, "-o", out, "--sr-weights", str(tmp_path / "mine.pth"), "--no-face"], out, "mine.pth", "not found", source=clip)


def test_missing_registry_weights_names_the_fetch_command(tmp_path, clip):
    """A fresh machine without the official weights: the message names the file and the fix."""
    out = str(tmp_path / "out.mkv")
    line = check_refused(["submit", clip, "-o", out, "--weights-dir", str(tmp_path / "empty")], out, "RealESRGAN_x4plus.pth", "farm models fetch", source=clip)
    assert "not found" in line


def test_output_equal_to_input(clip):
    """-o the same path as the input would destroy the source."""
    line = check_refused(["submit", clip, "-o", clip, "--model", "fake"], clip + ".never", "is the input", source=clip)
    assert os.path.exists(clip)


def test_impossible_shard_size_is_a_usage_error(tmp_path, clip):
    out = str(tmp_path / "out.mkv")
    result = run_farm(["submit", clip, "-o", out, "--model", "fake", "--shard-frames", "0"])
    assert result.returncode == 2 and "--shard-frames" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(out)
