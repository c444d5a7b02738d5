"""The disk a job's output takes, from its codec, CRF and size alone (pure arithmetic, no I/O):
conservative bytes per output pixel, and the chunks' and output's sizes from them. The free space
it is held against is read in :mod:`farm.preflight`."""

from __future__ import annotations


#: Bits per output pixel of the lossy codecs at CRF 18 (``--crf`` default), for the disk estimate.
#: Upscaled video is smooth (the model removes noise), so real outputs take less: x264 at CRF 18
#: gives about 0.05-0.15 bits per pixel on upscaled 1080p film; these values leave about 2x room
#: for grain, noise and animation. x265 and AV1 reach the same quality with fewer bits.
LOSSY_BITS_PER_PIXEL_AT_CRF18 = {"x264": 0.3, "x265": 0.2, "av1": 0.2}
#: Each CRF step of this many down doubles the bitrate (x264's and x265's rule of thumb).
CRF_DOUBLING_STEP = 6
#: Bytes per output pixel of the lossless codecs. FFV1 RGB of real video takes about 1.3 bytes per
#: pixel at 8 bits; 2 leaves room for grain and noise, which compress worse. PNG is about the same.
LOSSLESS_BYTES_PER_PIXEL = 2.0


def output_bytes_per_pixel(codec: str, crf: int, high_bit_depth: bool) -> float:
    """Expected bytes per output pixel of ``codec`` at ``crf`` (conservative; see the tables).

    Lossless codecs: :data:`LOSSLESS_BYTES_PER_PIXEL` (twice that for 16-bit RGB). Lossy codecs:
    :data:`LOSSY_BITS_PER_PIXEL_AT_CRF18`, doubled for every :data:`CRF_DOUBLING_STEP` below 18
    (halved above), never more than a lossless codec's; CRF 0 (lossless in x264) and a codec in
    neither table count as lossless.
    """
    lossless = LOSSLESS_BYTES_PER_PIXEL * (2 if high_bit_depth else 1)
    bits = LOSSY_BITS_PER_PIXEL_AT_CRF18.get(codec)
    if bits is None or crf <= 0:
        return lossless
    return min(lossless, bits / 8 * 2 ** ((18 - crf) / CRF_DOUBLING_STEP))


def estimate_bytes(frames: int, canvas: tuple[int, int], high_bit_depth: bool, codec: str, crf: int = 18) -> tuple[int, int]:
    """Conservative sizes of a job's chunks and of its output, in bytes.

    The chunks are in the output codec and the output is their concatenation, so both are about
    ``frames x pixels x`` :func:`output_bytes_per_pixel`.
    """
    size = int(frames * canvas[0] * canvas[1] * output_bytes_per_pixel(codec, crf, high_bit_depth))
    return size, size
