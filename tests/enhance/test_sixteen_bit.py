"""10-bit sources go through the models' 16-bit path for every frame, faces included: no frame
falls back to 8 bits because it is dark, and restored faces keep the frame's bit depth."""

from __future__ import annotations

import numpy as np
import pytest

from farm.config import ModelConfig
from farm.enhance.enhancer import build_enhancer
from farm.plan import plan_geometry
from farm.testing.clips import pattern_frame
from farm.testing.fakes import face_row, frame_key, write_face_script
from tests.enhance.test_fast_paths import TinyParser, narrow_gfpgan
from tests.helpers import max_abs_diff, reference_upsampler


def enhancer(width: int, height: int, **model):
    config = ModelConfig(device="cpu", precision="fp32", **model)
    return build_enhancer(config, lambda scale: plan_geometry(width, height, scale, None, None), "cpu")


def test_near_black_16_bit_frame_stays_16_bit(tiny_x4):
    """The first frames of a fade-in from black in a 10-bit film are below 0.4 % grey.
    RealESRGANer takes any frame whose values stay under 257 for an 8-bit one (and would make it
    257 times too bright); farm keeps it 16-bit. The reference is RealESRGANer's 16-bit output for
    the same frame plus one bright pixel in the far corner, which makes RealESRGANer take its
    16-bit path; away from that corner (beyond the network's reach) the two must agree."""
    dark = (pattern_frame(5, 96, 24)[:, :, ::-1].astype(np.uint16) * 200 // 255).copy()
    assert dark.max() <= 256
    got = enhancer(96, 24, sr_weights=tiny_x4, face=False).enhance(dark, 0)
    marked = dark.copy()
    marked[0, -1] = 65535
    reference = reference_upsampler(tiny_x4, 4)
    expected, _ = reference.enhance(marked)
    assert got.dtype == expected.dtype == np.uint16
    assert max_abs_diff(got[:, : 4 * 48], expected[:, : 4 * 48]) <= 1
    misread, _ = reference.enhance(dark)  # what RealESRGANer makes of the dark frame itself
    assert misread.dtype == np.uint8
    assert max_abs_diff(got, misread.astype(np.uint16) * 257) > 10_000


@pytest.mark.slow
def test_faces_keep_the_frames_bit_depth(tiny_x4, face_weights, tmp_path):
    """A 10-bit interview: the restored face is pasted into the 16-bit background in 16 bits.
    The 16-bit output of a frame equals, to within 8-bit rounding, 257 times the output of the
    same picture in 8 bits; before, faces came out nearly black on 16-bit frames."""
    frame8 = np.ascontiguousarray(pattern_frame(3, 96, 96)[:, :, ::-1])
    frame16 = frame8.astype(np.uint16) * 257
    # GFPGANer's detector sees 16-bit frames scaled to 0..255 as floats.
    script = write_face_script(str(tmp_path / "faces.json"), {
        frame_key(frame8): [face_row(20, 18, 56)],
        frame_key(frame16 / 65535 * 255): [face_row(20, 18, 56)],
    })
    faces = enhancer(96, 96, sr_weights=tiny_x4, face_weights=face_weights["gfpgan"], weights_dir=face_weights["dir"],
                     face_detector=f"scripted:{script}", trust_weights=True)
    # The networks' size is not the point here (the paste-back's bit depth is): a narrow GFPGAN
    # and a stand-in parser, behind the same wrappers, keep the two faces cheap on a CPU.
    faces.restorer.face_helper.face_parse = TinyParser()
    faces._guard.network = narrow_gfpgan()
    background = enhancer(96, 96, sr_weights=tiny_x4, face=False)
    out8, out16 = faces.enhance(frame8, 0), faces.enhance(frame16, 1)
    assert (out8.dtype, out16.dtype) == (np.uint8, np.uint16)
    assert faces.faces_found == 2
    assert max_abs_diff(out8, background.enhance(frame8, 0)) > 10  # the face really changed the frame
    assert np.abs(out16 / 257 - out8).max() <= 3
