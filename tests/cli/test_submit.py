"""The whole local pipeline through the CLI: probe, shard, enhance with the real model code (tiny
random weights), encode segments, mux, verify; compared with the libraries' own output."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from farm.cli.main import main
from tests.helpers import decode_all, max_abs_diff, packet_pts, reference_upsampler, stream_packets

pytestmark = [pytest.mark.ray]


def run_cli(args: list[str]):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def assert_enhanced_exactly(source: str, output: str, upsampler, outscale=None) -> None:
    src_times, src_frames = decode_all(source)
    out_times, out_frames = decode_all(output)
    assert out_times == src_times
    assert len(out_frames) == len(src_frames)
    for i, (frame, got) in enumerate(zip(src_frames, out_frames)):
        expected, _ = upsampler.enhance(frame, outscale=outscale)
        assert max_abs_diff(got, expected) <= 1, f"frame {i}"


def test_cfr_bframes_audio_is_exact(local_ray, cfr_clip, tiny_x4, tmp_path):
    """A phone clip with B-frames and AAC audio, upscaled x4 on two CPU workers in 8 shards: every
    frame is what RealESRGANer gives for that source frame, at the source's timestamps, and the
    audio is the source's, packet for packet."""
    out = str(tmp_path / "out.mp4")
    run_cli(["submit", cfr_clip, "-o", out, "--sr-weights", tiny_x4, "--no-face", "--codec", "ffv1",
             "--workers", "2", "--shard-frames", "8", "--device", "cpu", "--quiet"])
    assert packet_pts(out) == packet_pts(cfr_clip)
    assert_enhanced_exactly(cfr_clip, out, reference_upsampler(tiny_x4, 4))
    assert stream_packets(out, "audio") == stream_packets(cfr_clip, "audio")
    assert len(stream_packets(out, "audio")[0]) > 50


@pytest.mark.slow
def test_vfr_and_partial_last_shard(local_ray, vfr_clip, tiny_x4, tmp_path):
    """A variable-frame-rate recording (61 frames, three rates) with a last shard shorter than the
    others stays variable-rate: same timestamps, same frames as the reference."""
    out = str(tmp_path / "out.mkv")
    run_cli(["submit", vfr_clip, "-o", out, "--sr-weights", tiny_x4, "--no-face", "--codec", "ffv1",
             "--workers", "2", "--shard-frames", "7", "--device", "cpu", "--quiet"])
    tb, pts = packet_pts(out)
    assert (tb, pts) == packet_pts(vfr_clip)
    assert len(set(np.diff(pts))) >= 3  # still variable
    assert_enhanced_exactly(vfr_clip, out, reference_upsampler(tiny_x4, 4))
    assert stream_packets(out, "audio") == stream_packets(vfr_clip, "audio")


@pytest.mark.slow
def test_default_lossy_output_keeps_every_timestamp(local_ray, vfr_clip, tiny_x4, tmp_path):
    """The default x264 CRF 18 output has every source frame at its source time."""
    out = str(tmp_path / "out.mkv")
    run_cli(["submit", vfr_clip, "-o", out, "--sr-weights", tiny_x4, "--no-face", "--workers", "2", "--device", "cpu", "--quiet"])
    assert packet_pts(out) == packet_pts(vfr_clip)
    times, frames = decode_all(out)
    assert frames[0].shape == (32 * 4, 48 * 4, 3)


def test_target_1080p_fits_and_pads(local_ray, tmp_path, tiny_x4):
    """--target 1080p on a 4:3 source: 1920x1080 frames, the picture 1440x1080 in the middle,
    black bars at the sides, as the old script's ffmpeg scale+pad produced."""
    from farm.testing.clips import make_test_clip

    clip = make_test_clip(str(tmp_path / "43.mkv"), frames=4, size=(64, 48), audio=False)
    out = str(tmp_path / "out.mkv")
    run_cli(["submit", clip, "-o", out, "--sr-weights", tiny_x4, "--no-face", "--codec", "ffv1",
             "--target", "1080p", "--workers", "1", "--device", "cpu", "--quiet"])
    up = reference_upsampler(tiny_x4, 4)
    _, src = decode_all(clip)
    _, got = decode_all(out)
    for frame, out_frame in zip(src, got):
        assert out_frame.shape == (1080, 1920, 3)
        assert not out_frame[:, :240].any() and not out_frame[:, -240:].any()
        expected, _ = up.enhance(frame, outscale=1080 / 48)
        assert expected.shape == (1080, 1440, 3)
        assert max_abs_diff(out_frame[:, 240:1680], expected) <= 1


def test_scale_2_with_x4_model(local_ray, tmp_path, tiny_x4):
    """--scale 2 with an x4 model gives half the model's size, as RealESRGANer's outscale does."""
    from farm.testing.clips import make_test_clip

    clip = make_test_clip(str(tmp_path / "c.mkv"), frames=5, size=(64, 48), audio=False)
    out = str(tmp_path / "out.mkv")
    run_cli(["submit", clip, "-o", out, "--sr-weights", tiny_x4, "--no-face", "--codec", "ffv1",
             "--scale", "2", "--workers", "1", "--device", "cpu", "--quiet"])
    assert_enhanced_exactly(clip, out, reference_upsampler(tiny_x4, 4), outscale=2)
    _, frames = decode_all(out)
    assert frames[0].shape == (96, 128, 3)


@pytest.mark.slow
def test_face_path_equals_gfpganer(local_ray, tmp_path, tiny_x4, face_weights):
    """A face on one frame and none on the others: every output frame is exactly what GFPGANer
    (with RealESRGANer as its background upsampler) returns for that frame. (One face: the
    full-width GFPGAN and ParseNet cost seconds per face on a CPU; several faces, overlapping and
    cut by the edges, are in tests/enhance/test_fast_paths.py.)"""
    from farm.enhance.patches import facexlib_setup, install_torchvision_shim
    from farm.testing.clips import make_test_clip
    from farm.testing.fakes import face_row, frame_key, write_face_script

    clip = make_test_clip(str(tmp_path / "faces.mkv"), frames=4, size=(96, 96), audio=True)
    _, frames = decode_all(clip)
    script = write_face_script(str(tmp_path / "faces.json"), {frame_key(frames[2]): [face_row(20, 18, 56)]})
    out = str(tmp_path / "out.mkv")
    run_cli(["submit", clip, "-o", out, "--sr-weights", tiny_x4, "--face-weights", face_weights["gfpgan"],
             "--weights-dir", face_weights["dir"], "--face-detector", f"scripted:{script}", "--trust-weights",
             "--codec", "ffv1", "--workers", "1", "--shard-frames", "2", "--device", "cpu", "--quiet"])

    install_torchvision_shim()
    import torch
    from gfpgan import GFPGANer

    with facexlib_setup(face_weights["dir"], f"scripted:{script}"):
        restorer = GFPGANer(model_path=face_weights["gfpgan"], upscale=4, arch="clean", channel_multiplier=1,
                            bg_upsampler=reference_upsampler(tiny_x4, 4), device=torch.device("cpu"))
    _, got = decode_all(out)
    background = reference_upsampler(tiny_x4, 4)
    for i, (frame, out_frame) in enumerate(zip(frames, got)):
        _, restored, expected = restorer.enhance(frame, has_aligned=False, only_center_face=False, paste_back=True, weight=0.5)
        assert len(restored) == (1 if i == 2 else 0)
        assert max_abs_diff(out_frame, expected) <= 1, f"frame {i}"
        if i == 2:  # the face really changed this frame
            assert max_abs_diff(out_frame, background.enhance(frame)[0]) > 10
