"""Which container can hold what: the output extension picks the container, and every source stream
and the chosen codec must fit it. Checked before any work, with a suggestion of a container that
fits, so a job never fails at its last step for a container it could not write."""

from __future__ import annotations

import contextlib
import io
import os

import av

from farm.config import CODEC_SPECS
from farm.errors import OutputError
from farm.media import SourceInfo
from farm.video.inputs import open_input

#: Output names whose extension picks the container; anything else is refused early.
CONTAINERS = {
    ".mkv": "matroska",
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".webm": "webm",
    ".ts": "mpegts",
    ".nut": "nut",
    ".avi": "avi",
}


def container_for(output: str) -> str:
    """The FFmpeg muxer for an output file name.

    Raises:
        OutputError: the extension is not one farm writes.
    """
    ext = os.path.splitext(output)[1].lower()
    if ext not in CONTAINERS:
        raise OutputError(
            f"cannot tell the container from output name {os.path.basename(output)!r}; "
            f"use one of {', '.join(sorted(CONTAINERS))} (or --codec png with a directory)"
        )
    return CONTAINERS[ext]


#: Codecs FFmpeg's MPEG-TS muxer gives a standard stream type. It writes any other codec as an
#: opaque private stream that no reader (FFmpeg included) recognises, so farm refuses those early.
MPEGTS_CODECS = frozenset(
    "mpeg1video mpeg2video mpeg4 h264 hevc vvc cavs dirac vc1 av1 mp2 mp3 aac aac_latm ac3 eac3 dts truehd "
    "opus s302m pcm_bluray dvb_subtitle dvb_teletext hdmv_pgs_subtitle hdmv_text_subtitle arib_caption "
    "smpte_klv timed_id3".split()
)
#: Containers suggested, in this order, when the requested one cannot hold a stream.
SUGGESTED = (".mkv", ".mp4", ".mov", ".nut")


def check_streams_fit(source: SourceInfo, output: str, codec: str) -> None:
    """Refuse, before any work, an output container that cannot hold the video codec or one of the
    source's other streams (which are copied unchanged).

    The answer comes from the muxer itself: a header is written to memory with the same streams the
    mux will add (FFmpeg's own codec tables decide), so nothing is guessed from extension lists.

    Raises:
        OutputError: naming the stream and suggesting a container that can hold it.
    """
    fmt = container_for(output)
    ext = os.path.splitext(output)[1].lower()
    encoder = CODEC_SPECS[codec].encoder
    with open_input(source.location) as src:
        others = [s for s in src.streams if s.index != source.video_stream]
        if _header_error(fmt, encoder, others) is None:
            return
        if _header_error(fmt, encoder, []) is not None:
            raise OutputError(
                f"--codec {codec} cannot be stored in {ext} ({fmt}); {_suggest(ext, encoder, [])}"
            )
        for stream in others:
            if _header_error(fmt, encoder, [stream]) is not None:
                raise OutputError(
                    f"source stream #{stream.index} ({stream.type}, {_codec_name(stream)}) cannot be copied into "
                    f"{ext} ({fmt}); {_suggest(ext, encoder, others)}"
                )
        raise OutputError(f"the source's streams together cannot be stored in {ext} ({fmt}); {_suggest(ext, encoder, others)}")


def _codec_name(stream) -> str:
    ctx = stream.codec_context
    return ctx.codec.canonical_name if ctx is not None else "none"


def _header_error(fmt: str, encoder: str, templates: list) -> str | None:
    """Why a ``fmt`` file with a video stream of ``encoder`` plus copies of ``templates`` cannot
    be written, or None if its header writes."""
    if fmt == "mpegts":
        codecs = [av.codec.Codec(encoder, "w").canonical_name] + [_codec_name(s) for s in templates]
        unreadable = [c for c in codecs if c not in MPEGTS_CODECS]
        if unreadable:
            return f"MPEG-TS has no stream type for {', '.join(unreadable)}"
    out = av.open(io.BytesIO(), "w", format=fmt)
    try:
        # A real, tiny encoder: some muxers (Matroska with H.264) need its extradata for the header.
        video = out.add_stream(encoder, rate=25, width=64, height=48, pix_fmt=_trial_pix_fmt(encoder))
        if encoder == "libx265":
            video.options = {"x265-params": "log-level=error"}
        for stream in templates:
            if stream.type == "attachment":
                if fmt != "matroska":
                    return f"{fmt} holds no attachments"
                continue
            out.add_stream_from_template(stream)
        out.start_encoding()
    except (ValueError, av.error.FFmpegError) as exc:
        return str(exc)
    finally:
        with contextlib.suppress(ValueError, av.error.FFmpegError):
            out.close()
    return None


def _trial_pix_fmt(encoder: str) -> str:
    spec = next(spec for spec in CODEC_SPECS.values() if spec.encoder == encoder)
    return spec.pix_fmt_8bit


def _suggest(ext: str, encoder: str, templates: list) -> str:
    for candidate in SUGGESTED:
        if candidate != ext and _header_error(CONTAINERS[candidate], encoder, templates) is None:
            return f"use an {candidate} output"
    return "remove the stream first (e.g. `ffmpeg -i IN -map 0 -map -0:N -c copy OUT.mkv`)"
