"""DivX/XviD-style clips: MPEG-4 ASP in AVI, with B-frames packed into one AVI chunk as DivX 5 wrote
them (the case ``mpeg4_unpack_bframes`` exists for)."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Sequence, cast

from farm.testing.clips import pattern_frame, write_tone

# ----------------------------------------------------------------------------------------------
# Legacy MPEG-4 ASP (DivX-style) clips

_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 part 2 VOP start code
_DIVX_PACKED_USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p"  # the trailing 'p' says "packed B-frames"


def make_mpeg4_avi(
    path: str,
    *,
    frames: int = 24,
    size: tuple[int, int] = (32, 24),
    fps: int = 24,
    bframes: int = 1,
    gop: int = 12,
    packed: bool = False,
    audio: str | None = "ac3",
    seed: int = 0,
) -> str:
    """Write an MPEG-4 ASP (the ``mpeg4`` encoder, as DivX/Xvid) AVI with ``bframes`` B-frames
    and an ``audio`` track (``ac3``, ``libmp3lame`` or None).

    In AVI every packet's timestamp is its decode-order counter. With ``packed`` the video is
    repacked as DivX 5 wrote it (see :func:`pack_bframes`), which FFmpeg's ``mpeg4_unpack_bframes``
    filter undoes.
    """
    import av

    width, height = size
    time_base = Fraction(1, fps)
    with av.open(os.devnull, "w", format="avi") as scratch:
        enc = cast("av.video.stream.VideoStream", scratch.add_stream("mpeg4", rate=fps))
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.codec_context.time_base = time_base
        enc.options = {"g": str(gop), "bf": str(bframes), "b_strategy": "0", "qscale": "4"}
        payloads: list[tuple[bytes, bool]] = []
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(i, width, height, seed), format="rgb24")
            frame.pts, frame.time_base = i, time_base
            payloads += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
        payloads += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
        extradata = enc.codec_context.extradata
    if packed:
        payloads = pack_bframes(payloads)
    with av.open(path, "w", format="avi") as out:
        video = cast("av.video.stream.VideoStream", out.add_stream("mpeg4", rate=fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = time_base
        if extradata:
            video.codec_context.extradata = extradata
        track = None
        if audio:
            track = cast("av.audio.stream.AudioStream", out.add_stream(audio, rate=48000))
            track.layout = "mono"
        out.start_encoding()
        for n, (data, key) in enumerate(payloads):
            packet = av.Packet(data)
            packet.stream, packet.time_base = video, time_base
            packet.pts = packet.dts = n
            packet.is_keyframe = key
            out.mux(packet)
        if track is not None:
            write_tone(out, track, frames / fps, 440.0)
    return path


def pack_bframes(packets: Sequence[tuple[bytes, bool]]) -> list[tuple[bytes, bool]]:
    """Repack an unpacked MPEG-4 part 2 stream's ``(payload, is_keyframe)`` packets DivX-style:
    the first B-VOP of each run joins the reference VOP's packet before it, the run's other
    B-VOPs each move one packet earlier, and a tiny not-coded N-VOP packet fills the place freed
    at the end of the run, so there is still one packet per frame
    (``I0 P3 B1 B2`` becomes ``[I0] [P3 B1] [B2] [N]``). A 'p'-flagged DivX user-data string is
    put before the first VOP, as DivX 5 wrote it, so decoders know the stream is packed."""
    bits = _time_increment_bits(b"".join(p for p, _ in packets[:1]))
    nvop = _nvop(bits)
    out: list[tuple[bytes, bool]] = []
    pending_b = False  # inside a run of B-VOPs whose first moved into the reference packet
    for data, key in packets:
        if _vop_type(data) == "B":
            if pending_b:
                out.append((data, key))  # later B-VOPs of the run each move one packet earlier
            else:
                prev, prev_key = out[-1]
                out[-1] = (prev + data, prev_key)
                pending_b = True
            continue
        if pending_b:
            out.append((nvop, False))
            pending_b = False
        out.append((data, key))
    if pending_b:
        out.append((nvop, False))
    first, key = out[0]
    at = first.find(_VOP)
    out[0] = (first[:at] + _DIVX_PACKED_USER_DATA + first[at:], key)
    return out


def _vop_type(data: bytes) -> str:
    at = data.find(_VOP)
    return "IPBS"[data[at + 4] >> 6] if at >= 0 else "?"


def _time_increment_bits(data: bytes) -> int:
    """The width of vop_time_increment, from the video object layer header (ISO 14496-2 6.2.3)."""
    at = next(i for i in range(len(data) - 4) if data[i : i + 3] == b"\x00\x00\x01" and 0x20 <= data[i + 3] <= 0x2F)
    value, pos = int.from_bytes(data[at + 4 : at + 24], "big"), 0
    width = 160

    def read(n: int) -> int:
        nonlocal pos
        pos += n
        return (value >> (width - pos)) & ((1 << n) - 1)

    read(9)  # random_accessible_vol, video_object_type_indication
    if read(1):  # is_object_layer_identifier
        read(7)
    if read(4) == 15:  # aspect_ratio_info: extended PAR
        read(16)
    if read(1):  # vol_control_parameters
        read(3)
        if read(1):  # vbv_parameters
            read(79)
    read(3)  # video_object_layer_shape (rectangular), marker
    resolution = read(16)
    return max(1, (resolution - 1).bit_length())


def _nvop(time_increment_bits: int) -> bytes:
    """A not-coded P-VOP (vop_coded = 0): DivX's placeholder packet after a packed B-frame."""
    bits = "01" + "0" + "1" + "0" * time_increment_bits + "1" + "0"  # type P, time 0, not coded
    bits += "0" + "1" * (-(len(bits) + 1) % 8)  # next_start_code() stuffing
    return _VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")
