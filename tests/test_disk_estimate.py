"""The disk estimate before work: chunks are in the output codec, so chunks and output are each
about the codec's expected size (bits per pixel by codec and CRF), not a lossless intermediate."""

from __future__ import annotations

from farm.prepare import estimate_bytes, output_bytes_per_pixel


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
