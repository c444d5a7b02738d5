"""The model wrapper: architectures read from weights, clear weight errors, tiles on
out-of-memory, and no silently swallowed failures."""

from __future__ import annotations

import numpy as np
import pytest

from farm.config import ModelConfig
from farm.enhance.arch import load_state_dict, sr_arch_from_state_dict
from farm.enhance.enhancer import build_enhancer
from farm.enhance.weights import check_weights
from farm.errors import EnhanceError, MissingWeights, OutOfDeviceMemory, WeightsError
from farm.plan import plan_geometry
from farm.testing.clips import pattern_frame
from farm.testing.weights import write_compact_weights, write_rrdbnet_weights
from tests.helpers import max_abs_diff, reference_upsampler


def enhancer(weights: str, tile: int = 0, width: int = 40, height: int = 32):
    return build_enhancer(ModelConfig(sr_weights=weights, face=False, tile=tile, device="cpu"),
                          lambda s: plan_geometry(width, height, s, None, None), "cpu")


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_shape_is_read_from_the_weights(tmp_path, scale):
    path = write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=scale, num_feat=12, num_block=3, num_grow_ch=6)
    arch = sr_arch_from_state_dict(load_state_dict(path), path)
    assert (arch.kind, arch.scale) == ("rrdb", scale)
    assert arch.params == {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 12, "num_block": 3, "num_grow_ch": 6, "scale": scale}


def test_compact_shape_is_read_from_the_weights(tmp_path):
    path = write_compact_weights(str(tmp_path / "c.pth"), scale=2, num_feat=10, num_conv=5)
    arch = sr_arch_from_state_dict(load_state_dict(path), path)
    assert (arch.kind, arch.scale) == ("compact", 2)
    assert arch.params["num_conv"] == 5 and arch.params["num_feat"] == 10


def test_tiled_output_equals_realesrganer_tiled(tmp_path):
    weights = write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=4)
    frame = pattern_frame(5, 40, 32)
    got = enhancer(weights, tile=16).enhance(frame, 0)
    expected = reference_upsampler(weights, 4, tile=16).enhance(frame)[0]
    assert max_abs_diff(got, expected) <= 1


def test_out_of_memory_retries_the_frame_with_tiles(tmp_path):
    """A frame too large for the device is redone in tiles, not dropped; the result equals the
    tiled reference."""
    weights = write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=2)
    e = enhancer(weights, width=600, height=40)
    model = e.upsampler.model

    class SmallDevice:  # refuses inputs wider than 300 px, like a GPU out of memory
        def __call__(self, x):
            if x.shape[-1] > 300:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return model(x)

    e.upsampler.model = SmallDevice()
    frame = pattern_frame(1, 600, 40)
    got = e.enhance(frame, 17)
    expected = reference_upsampler(weights, 2, tile=256).enhance(frame)[0]
    assert max_abs_diff(got, expected) <= 1
    assert e.upsampler.tile_size == 0  # back to whole frames for the next one


def test_out_of_memory_even_in_the_smallest_tile_fails_loudly(tmp_path):
    e = enhancer(write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=2))

    def no_memory(x):
        raise RuntimeError("CUDA out of memory")

    e.upsampler.model = no_memory
    with pytest.raises(OutOfDeviceMemory, match="frame 3"):
        e.enhance(pattern_frame(0, 40, 32), 3)


def test_other_model_errors_name_the_frame(tmp_path):
    e = enhancer(write_rrdbnet_weights(str(tmp_path / "w.pth"), scale=2), tile=16)

    def broken(x):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")

    e.upsampler.model = broken
    with pytest.raises(EnhanceError, match="frame 9.*CUDNN"):
        e.enhance(pattern_frame(0, 40, 32), 9)


def test_corrupt_and_foreign_weights_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        check_weights(ModelConfig(sr_weights=str(corrupt), face=False))
    import torch

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="not hold a state dict"):
        check_weights(ModelConfig(sr_weights=str(tmp_path / "list.pth"), face=False))
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="unknown architecture"):
        check_weights(ModelConfig(sr_weights=str(tmp_path / "other.pth"), face=False))
    with pytest.raises(MissingWeights):
        check_weights(ModelConfig(sr_weights=str(tmp_path / "absent.pth"), face=False))


def test_registry_file_of_the_wrong_scale_is_refused(tmp_path):
    """RealESRGAN_x4plus.pth that is really an x2 model (renamed by mistake)."""
    write_rrdbnet_weights(str(tmp_path / "RealESRGAN_x4plus.pth"), scale=2)
    with pytest.raises(WeightsError, match="x2 rrdb model, but realesrgan-x4plus is x4"):
        check_weights(ModelConfig(weights_dir=str(tmp_path), face=False, trust_weights=True))


def test_registry_file_with_wrong_checksum_is_refused(tmp_path):
    write_rrdbnet_weights(str(tmp_path / "RealESRGAN_x4plus.pth"), scale=4)
    with pytest.raises(WeightsError, match="not the official RealESRGAN_x4plus.pth.*--trust-weights"):
        check_weights(ModelConfig(weights_dir=str(tmp_path), face=False))


def test_fake_enhancer_is_nearest_neighbour():
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    e = build_enhancer(ModelConfig(model="fake:scale=2"), lambda s: plan_geometry(3, 2, s, None, None), "cpu")
    out = e.enhance(frame, 0)
    assert out.shape == (4, 6, 3) and (out[::2, ::2] == frame).all() and (out[1::2, 1::2] == frame).all()
