"""The disk estimate before work: chunks are in the output codec, so chunks and output are each
about the codec's expected size (bits per pixel by codec and CRF), not a lossless intermediate."""

from __future__ import annotations

from farm.cost import estimate_bytes, output_bytes_per_pixel


def test_lossy_estimate_follows_codec_and_crf():
    """A 1000-frame 1080p x264 job at CRF 18: 0.3 bits per pixel, so about 78 MB of chunks and
    78 MB of output; CRF 24 halves it, CRF 12 doubles it; x265 needs two thirds of x264's."""
    pixels = 1000 * 1920 * 1080
    assert estimate_bytes(1000, (1920, 1080), False, "x264", 18) == (int(pixels * 0.3 / 8),) * 2
    assert estimate_bytes(1000, (1920, 1080), False, "x264", 24) == (int(pixels * 0.15 / 8),) * 2
    assert estimate_bytes(1000, (1920, 1080), False, "x264", 12) == (int(pixels * 0.6 / 8),) * 2
    assert estimate_bytes(1000, (1920, 1080), False, "x265", 18) == (int(pixels * 0.2 / 8),) * 2


def test_lossless_estimate_and_caps():
    """FFV1, x264-lossless and PNG: 2 bytes per pixel, 4 for 16-bit sources; a lossy codec at
    CRF 0 (lossless in x264) counts as lossless, and at CRF 1 never more; an unknown codec
    counts as lossless."""
    assert estimate_bytes(10, (100, 100), False, "ffv1") == (200_000, 200_000)
    assert estimate_bytes(10, (100, 100), True, "png") == (400_000, 400_000)
    assert output_bytes_per_pixel("x264-lossless", 18, False) == 2.0
    assert output_bytes_per_pixel("x264", 0, True) == 4.0
    assert output_bytes_per_pixel("x264", 1, False) == 0.3 / 8 * 2 ** (17 / 6)
    assert output_bytes_per_pixel("x265", 6, False) == 0.2 / 8 * 4
    assert output_bytes_per_pixel("some-new-codec", 18, False) == 2.0


def test_the_estimate_is_shown_before_work(tmp_path):
    """A user about to start a long job sees, before the first frame, how much disk its chunks
    and its output will take; field-rate deinterlacing (twice the frames) counts twice."""
    from io import StringIO

    from rich.console import Console

    from farm.cli.view import LiveView
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.job import open_job
    from farm.progress import Progress
    from farm.testing.legacy import make_interlaced_clip

    clip = make_interlaced_clip(str(tmp_path / "tff.mkv"), frames=10, size=(64, 48))
    notes = []
    for mode in ("on", "double"):
        cfg = JobConfig(input=clip, output=str(tmp_path / f"{mode}.mkv"), jobs_root=str(tmp_path / "jobs"),
                        model=ModelConfig(model="fake:scale=2", face=False, deinterlace=mode), out=OutputConfig(codec="ffv1"))
        notes.append(open_job(cfg).disk_note)
    one = 10 * 128 * 96 * 2  # frames x output pixels x 2 bytes (FFV1)
    assert notes == [f"about {one / 1e6:.1f} MB of chunks still to write and {one / 1e6:.1f} MB of output (ffv1)",
                     f"about {2 * one / 1e6:.1f} MB of chunks still to write and {2 * one / 1e6:.1f} MB of output (ffv1)"]

    out = StringIO()
    view = LiveView(Console(file=out, force_terminal=False, width=200))
    with view:
        view.update(Progress("job-1", "running", 0, 10, 0, 1, 0.0, None, disk=notes[0]))
    assert out.getvalue().splitlines()[0] == f"job-1 disk: {notes[0]}"
