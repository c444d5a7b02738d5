"""Bad input gets one clear line, exit status 1 (2 for impossible options), no traceback, nothing
at the output path, no job directory a later run could trust, and the input untouched."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.testing.clips import make_test_clip
from farm.testing.weights import write_rrdbnet_weights
from tests.helpers import (
    make_audio_only,
    make_video_without_frames,
    rewrite_video_packets,
    run_farm,
    video_packets,
)


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return make_test_clip(str(tmp_path_factory.mktemp("bad") / "clip.mkv"), frames=8, size=(32, 24))


def check_refused(
    args: list[str], output: str, *words: str, code: int = 1, source: str | None = None, in_process: bool = True
) -> str:
    """Run the CLI (in this process, or as a real ``farm`` process) and check the refusal;
    returns the error line."""
    before = digest(source) if source and os.path.isfile(source) else None
    if in_process:
        invoked = CliRunner().invoke(main, args + ["--quiet"])
        returncode, stderr = invoked.exit_code, invoked.stderr
        assert invoked.exception is None or isinstance(invoked.exception, SystemExit), repr(invoked.exception)
    else:
        result = run_farm(args + ["--quiet"])
        returncode, stderr = result.returncode, result.stderr
    assert returncode == code, (returncode, stderr)
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code == 1:
        assert len(lines) == 1, stderr
    line = lines[-1]  # click's usage errors (exit 2) print the usage above the error line
    for word in words:
        assert word in line, line
    assert_nothing_written(output)
    if before:
        assert digest(source) == before
    return line


def assert_nothing_written(output: str) -> None:
    assert not os.path.exists(output)
    jobs = os.path.join(os.path.dirname(output), ".farm-jobs")
    assert not os.path.exists(jobs) or os.listdir(jobs) == [], os.listdir(jobs)


# ----------------------------------------------------------------------------------------------
# The input


def test_missing_input(tmp_path):
    """A typo in the input path."""
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", str(tmp_path / "nope.mp4"), "-o", out, "--model", "fake"], out, "does not exist", "nope.mp4", in_process=False)


def test_empty_input(tmp_path):
    """A download that never started left a 0-byte file."""
    src = tmp_path / "empty.mp4"
    src.write_bytes(b"")
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", str(src), "-o", out, "--model", "fake"], out, "empty.mp4", "is empty", source=str(src))


def test_not_a_video(tmp_path):
    """A text file passed by mistake."""
    src = tmp_path / "notes.mp4"
    src.write_text("these are my notes, not a video\n" * 20)
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", str(src), "-o", out, "--model", "fake"], out, "not a video", source=str(src), in_process=False)


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_truncated_input(tmp_path, ext):
    """A copy interrupted half way: Matroska would play the first half without complaint, MP4
    lost its index; either way farm refuses instead of upscaling half a film."""
    whole = make_test_clip(str(tmp_path / f"whole{ext}"), frames=24, size=(32, 24))
    src = tmp_path / f"cut{ext}"
    data = open(whole, "rb").read()
    src.write_bytes(data[: len(data) // 2])
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", str(src), "-o", out, "--model", "fake"], out, "is truncated", "copy it again", source=str(src))


def test_audio_only_input(tmp_path):
    """A voice memo: there is no picture to upscale."""
    src = make_audio_only(str(tmp_path / "memo.m4a"))
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", src, "-o", out, "--model", "fake"], out, "no video stream", "audio", source=src)


def test_video_track_without_frames(tmp_path):
    """A recording that stopped before its first picture: the video track exists but is empty."""
    src = make_video_without_frames(str(tmp_path / "nothing.mkv"))
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", src, "-o", out, "--model", "fake"], out, "holds no frames", "nothing to upscale", source=src)


def test_no_decodable_frame(tmp_path, clip):
    """Every video packet is garbage (a damaged disk image): nothing can be decoded."""
    rng = random.Random(5)
    src = rewrite_video_packets(clip, str(tmp_path / "garbage.mkv"), lambda n, data: bytes(rng.randrange(256) for _ in data))
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", src, "-o", out, "--model", "fake"], out, "cannot be decoded", "damaged", source=src)


# ----------------------------------------------------------------------------------------------
# The output


def test_output_equal_to_input(clip):
    """-o the same path as the input would destroy the source."""
    check_refused(["submit", clip, "-o", clip, "--model", "fake"], clip + ".never", "is the input", source=clip)
    assert os.path.exists(clip)


def test_output_under_a_regular_file(tmp_path, clip):
    """-o notes.txt/out.mkv: the 'folder' is a file, so nothing can be written there."""
    (tmp_path / "notes.txt").write_text("not a folder")
    out = str(tmp_path / "notes.txt" / "out.mkv")
    check_refused(["submit", clip, "-o", out, "--model", "fake"], out, "notes.txt", "is a file, not a folder", source=clip)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs")
def test_output_folder_not_writable_even_for_root(clip):
    """A folder no file can be created in (procfs here; a read-only mount in real life): farm
    tries a real write instead of trusting permission bits, which root ignores."""
    out = "/proc/farm-out.mkv"
    check_refused(["submit", clip, "-o", out, "--model", "fake"], out, "/proc", "is not writable", source=clip)


def test_jobs_root_not_writable(tmp_path, clip):
    """--jobs-root pointing under a regular file: refused before any work, nothing written."""
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", clip, "-o", out, "--model", "fake", "--jobs-root", str(tmp_path / "file" / "jobs")], out,
                  "file/jobs", source=clip)


def test_a_bucket_url_without_its_bucket(tmp_path, clip):
    """`--jobs-root s3://` (the bucket forgotten, or lost to an empty shell variable): one line that
    names the URL and the fix, nothing written."""
    out = str(tmp_path / "out.mkv")
    line = check_refused(["submit", clip, "-o", out, "--model", "fake", "--jobs-root", "s3://"], out, source=clip)
    assert line == "error: s3:// names no bucket or host; give one, e.g. s3://bucket/path"


def test_subtitles_that_mp4_cannot_hold(tmp_path):
    """An MKV with SRT subtitles, asked for an .mp4: MP4 cannot store SRT as is, so farm refuses
    before any work, naming the stream and the container that can hold it."""
    src = make_test_clip(str(tmp_path / "subs.mkv"), frames=4, size=(32, 24), subtitles=[(0.0, 0.1, "hello")])
    out = str(tmp_path / "out.mp4")
    check_refused(["submit", src, "-o", out, "--model", "fake"], out, "stream #2 (subtitle, subrip)", ".mp4", "use an .mkv output",
                  source=src)


def test_lossless_codec_that_mpegts_cannot_hold(tmp_path, clip):
    """--codec ffv1 into .ts: MPEG-TS has no stream type for FFV1 (it would be unreadable)."""
    out = str(tmp_path / "out.ts")
    check_refused(["submit", clip, "-o", out, "--model", "fake", "--codec", "ffv1"], out, "--codec ffv1", ".ts", "use an .mkv output",
                  source=clip)


def test_output_frame_larger_than_the_encoders_accept(tmp_path):
    """A 4100-pixel-wide panorama upscaled x4 would be 16400 wide; x264 stops at 16384."""
    src = make_test_clip(str(tmp_path / "wide.mkv"), frames=2, size=(4100, 16), audio=False)
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", src, "-o", out, "--model", "fake:scale=4"], out, "16400x64", "larger than the encoders accept",
                  "--scale", source=src)


def test_not_enough_disk_space(tmp_path, clip, monkeypatch):
    """The jobs' disk has 1 MB free and the lossless intermediate needs more: refused before any
    work, saying how much is needed and what to do."""
    import farm.preflight

    monkeypatch.setattr(farm.preflight, "free_bytes", lambda location: (1_000_000, 1))
    out = str(tmp_path / "out.mkv")
    before = digest(clip)
    result = CliRunner().invoke(main, ["submit", clip, "-o", out, "--model", "fake:scale=16", "--codec", "ffv1", "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1
    line = result.stderr.strip()
    assert "not enough disk space" in line and "1.0 MB is free" in line and "--jobs-root" in line, line
    assert_nothing_written(out)
    assert digest(clip) == before


# ----------------------------------------------------------------------------------------------
# Weights


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory) -> dict[str, str]:
    import torch

    d = tmp_path_factory.mktemp("weights")
    corrupt = d / "corrupt.pth"
    corrupt.write_bytes(random.Random(1).randbytes(4096))
    torch.save([1, 2, 3], str(d / "list.pth"))
    torch.save({"encoder.conv.weight": torch.zeros(4, 3, 3, 3), "decoder.fc.bias": torch.zeros(4)}, str(d / "unknown.pth"))
    registry = d / "registry"
    write_rrdbnet_weights(str(registry / "RealESRGAN_x4plus.pth"), scale=2)
    return {"corrupt": str(corrupt), "list": str(d / "list.pth"), "unknown": str(d / "unknown.pth"), "registry": str(registry)}


@pytest.mark.parametrize(
    "kind, words",
    [
        ("corrupt", ("corrupt.pth", "is not a readable PyTorch weights file", "re-download")),
        ("list", ("list.pth", "does not hold a state dict")),
        ("unknown", ("unknown.pth", "unknown architecture", "RRDBNet and SRVGGNetCompact")),
    ],
)
def test_unusable_sr_weights(tmp_path, clip, bad_weights, kind, words):
    """--sr-weights that are damaged, are not a state dict, or are some other network's."""
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", clip, "-o", out, "--sr-weights", bad_weights[kind], "--no-face"], out, *words, source=clip,
                  in_process=kind != "corrupt")


def test_weights_of_the_wrong_scale_for_the_model(tmp_path, clip, bad_weights):
    """An x2 network saved under the x4 model's file name (with --trust-weights, so the sha256
    check does not catch it first)."""
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", clip, "-o", out, "--weights-dir", bad_weights["registry"], "--trust-weights", "--no-face"], out,
                  "is a x2 rrdb model", "realesrgan-x4plus is x4", source=clip)


def test_missing_sr_weights_file(tmp_path, clip):
    """--sr-weights pointing at a file that is not there."""
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", clip, "-o", out, "--sr-weights", str(tmp_path / "mine.pth"), "--no-face"], out, "mine.pth", "not found", source=clip)


def test_missing_registry_weights_names_the_fetch_command(tmp_path, clip):
    """A fresh machine without the official weights: the message names the file and the fix."""
    out = str(tmp_path / "out.mkv")
    line = check_refused(["submit", clip, "-o", out, "--weights-dir", str(tmp_path / "empty")], out, "RealESRGAN_x4plus.pth", "farm models fetch", source=clip)
    assert "not found" in line


# ----------------------------------------------------------------------------------------------
# Impossible options: exit 2, click's usage convention


@pytest.mark.parametrize(
    "option, words",
    [
        (["--shard-frames", "0"], ("--shard-frames", "0")),  # click's own check
        (["--scale", "0"], ("--scale must be in (0, 16]", "got 0.0")),
        (["--scale", "-2"], ("--scale must be in (0, 16]",)),
        (["--target", "big"], ("bad --target 'big'", "WxH such as 1920x1080")),
        (["--target", "0x720"], ("bad --target '0x720'",)),
        (["--pix-fmt", "yuv420p12le"], ("--codec x264 cannot encode --pix-fmt yuv420p12le", "yuv420p10le")),
        (["--codec", "ffv1", "--pix-fmt", "yuv420p"], ("--pix-fmt does not apply to --codec ffv1",)),
    ],
)
def test_impossible_options_are_usage_errors(tmp_path, clip, option, words):
    """Options that can never work exit with status 2 and say which option and what is allowed."""
    out = str(tmp_path / "out.mkv")
    check_refused(["submit", clip, "-o", out, "--model", "fake", *option], out, *words, code=2, source=clip)


# ----------------------------------------------------------------------------------------------
# Damage in the middle of the video


@pytest.fixture(scope="module")
def damaged_intra(tmp_path_factory) -> str:
    """A PNG-in-MOV screen recording (every frame a keyframe) whose frame 6 has damaged bytes."""
    d = tmp_path_factory.mktemp("damaged")
    clean = make_test_clip(str(d / "screen.mov"), frames=12, size=(32, 24), codec="png", pix_fmt="rgb24", audio=False)

    def flip(n: int, data: bytes) -> bytes:
        if n != 6:
            return data
        damaged = bytearray(data)
        for k in range(len(data) // 2, len(data) // 2 + 40):
            damaged[k] ^= 0x5A
        return bytes(damaged)

    return rewrite_video_packets(clean, str(d / "damaged.mov"), flip)


def test_decode_error_in_a_shard_names_the_frame(damaged_intra):
    """Reading frames [4, 9) of a file damaged at frame 6 fails naming frame 6, after handing
    over frames 4 and 5 exactly once: nothing is skipped, nothing repeated."""
    from farm.errors import DecodeError
    from farm.video.decode import decode_shard
    from farm.video.probe import probe

    src = probe(damaged_intra)
    got = []
    with pytest.raises(DecodeError, match=r"^frame 6 \(pts \d+\) cannot be decoded \(.*\): the file is damaged there"):
        for number, _ in decode_shard(damaged_intra, src.video_stream, src.index, 4, 9):
            got.append(number)
    assert got == [4, 5]


def test_decode_error_in_an_inter_coded_stream_names_the_damaged_frame(tmp_path):
    """An H.264 file with B-frames whose seventh packet (in decode order) is garbage: the error
    names the frame that packet holds (found by presentation time), not where threads noticed."""
    from farm.errors import DecodeError
    from farm.video.decode import decode_shard
    from farm.video.probe import probe

    clean = make_test_clip(str(tmp_path / "clean.mkv"), frames=24, size=(32, 24), bframes=2, gop=12, audio=False)
    rng = random.Random(3)
    damaged = rewrite_video_packets(clean, str(tmp_path / "damaged.mkv"), lambda n, d: bytes(rng.randrange(256) for _ in d) if n == 6 else d)
    src = probe(damaged)
    frame = src.index.pts.index(video_packets(damaged)[6][0])
    with pytest.raises(DecodeError, match=rf"^frame {frame} \(pts \d+\) cannot be decoded"):
        list(decode_shard(damaged, src.video_stream, src.index, 0, 24))


@pytest.mark.ray
def test_job_with_a_damaged_frame_fails_naming_it(damaged_intra, tmp_path, local_ray):
    """A whole job over the damaged recording with one attempt per shard: one line naming the
    shard and frame 6, exit 1, no output, the source untouched, and the damaged shard is not
    recorded as done (a later run redoes it)."""
    from farm.storage.jobdir import JobDir

    out = str(tmp_path / "out.mkv")
    before = digest(damaged_intra)
    result = CliRunner().invoke(main, ["submit", damaged_intra, "-o", out, "--model", "fake", "--codec", "ffv1", "--shard-frames", "4",
                                       "--workers", "1", "--max-attempts", "1", "--device", "cpu", "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "shard 1 [4, 8)" in lines[0] and "frame 6" in lines[0] and "cannot be decoded" in lines[0], lines[0]
    assert not os.path.exists(out)
    assert digest(damaged_intra) == before
    jobs_root = str(tmp_path / ".farm-jobs")
    (job_id,) = os.listdir(jobs_root)
    done = {(r.start, r.stop) for r in JobDir(jobs_root, job_id).receipts()}
    assert (4, 8) not in done
