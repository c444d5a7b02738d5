"""``farm preview``: a few frames through exactly the job's pipeline (its checks, decode and enhancer)
on one PNG contact sheet, source beside output at the output's full size. Just over 300 lines:
picking, running and drawing share the job's geometry; split, each would be a fragment."""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from farm.config import JobConfig, ModelConfig
from farm.enhance.enhancer import Enhancer, build_enhancer, resolve_device
from farm.enhance.factories import Factories, resolve_factories
from farm.enhance.upscale import place
from farm.enhance.weights import check_weights
from farm.errors import OutputError, UsageError
from farm.media import FrameIndex
from farm.plan import Geometry
from farm.spec import JobSpec, frames_per_second
from farm.video.decode import decode_shard
from farm.video.probe import probe
from farm.video.scenes import detect_scene_cuts

log = logging.getLogger(__name__)

#: Frames on a sheet when neither --frames nor --at is given.
DEFAULT_FRAMES = 4
#: Height of the label strip above each row, and the gap between panels, in pixels.
LABEL_H = 22
GAP = 4
#: Face crops are shown this many pixels high (before and after, side by side).
FACE_CROP_H = 160
PANELS = ("nearest", "lanczos", "after")


@dataclass(frozen=True)
class PreviewFrame:
    """One previewed frame: ``number`` is the output frame number, ``source_frame`` the source's."""

    number: int
    source_frame: int
    time_s: float
    before: np.ndarray  # the decoded source frame, BGR, as the model receives it
    after: np.ndarray  # the output frame (the canvas), as the encoder receives it
    faces: tuple[tuple[int, int, int, int], ...] = ()  # face boxes (x0, y0, x1, y1) in source pixels


@dataclass(frozen=True)
class Sheet:
    """The contact sheet and where each panel lies on it: ``boxes[(row, panel)] = (x, y, w, h)``."""

    image: np.ndarray
    boxes: dict[tuple[int, str], tuple[int, int, int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class PreviewResult:
    path: str
    frames: tuple[int, ...]  # output frame numbers on the sheet, top to bottom
    times_s: tuple[float, ...]
    canvas: tuple[int, int]
    seconds: float
    device: str
    sheet: Sheet
    source_frames: tuple[int, ...]  # the source frame of each row
    index: FrameIndex  # the source's, from the probe (for --clip)


def preview_spec(cfg: JobConfig) -> tuple[JobSpec, Geometry]:
    """The job ``farm submit`` would make of ``cfg`` (in memory; nothing is written), checked as
    submit checks it: the input, the weights, the output geometry.

    Raises:
        FarmError: the same one line submit gives for the same input and options.
    """
    source = probe(cfg.input)
    model = cfg.model
    model_scale = check_weights(model)
    spec = JobSpec(job_id="preview", source=source, model=model, shard_frames=1, input_fingerprint="", created=time.time(), out=cfg.out)
    return spec, spec.geometry_for(model_scale)


def pick_frames(spec: JobSpec, count: int | None = None, at_s: Sequence[float] = ()) -> list[int]:
    """Source frame numbers to preview: the frames shown at ``at_s`` (seconds from the start), or
    ``count`` frames spread evenly, each moved to a scene cut within about a second after it.

    Raises:
        UsageError: a time outside the video, or a count below 1.
    """
    index = spec.source.index
    n = len(index)
    if at_s:
        length_s = _length_s(index)
        out = []
        for t in at_s:
            if not 0 <= t < length_s:
                raise UsageError(f"--at {t:g} is outside the video (0 to {length_s:.3f} s)")
            # The frame shown at t: the last one that starts at or before it.
            i = bisect.bisect_right(index.pts, index.pts[0] + t / index.time_base) - 1
            out.append(min(max(i, 0), n - 1))
        return sorted(set(out))
    count = DEFAULT_FRAMES if count is None else count
    if count < 1:
        raise UsageError(f"--frames must be at least 1, got {count}")
    count = min(count, n)
    spread = [int((k + 0.5) * n / count) for k in range(count)]
    window = max(2, int(round(frames_per_second(spec.source))) or 2)
    ranges = [(max(0, f - 1), min(n, f + window)) for f in spread]
    cuts = detect_scene_cuts(spec.source.location, spec.source.video_stream, index, ranges) if n > 2 else ()
    picks = []
    for f in spread:
        after = [c for c in cuts if f <= c < f + window]
        picks.append(after[0] if after else f)
    return sorted(set(picks))


def _length_s(index: FrameIndex) -> float:
    """How long the video shows: to the end of its last frame (:attr:`FrameIndex.span_s`). A single
    picture lasts one tick there, which leaves no ``--at`` to pick it by, so here it lasts a second."""
    if len(index) == 1:
        return 1.0
    start, end = index.span_s
    return float(end - start)


def load_enhancer(spec: JobSpec, device: str = "auto", factories: Factories | None = None) -> tuple[Enhancer, str]:
    """The enhancer a worker builds for ``spec`` (from ``factories``, resolved where the job is
    driven; default: this process's), and the device it runs on."""
    model = spec.model
    factories = resolve_factories(model) if factories is None else factories
    resolved = resolve_device(device) if factories.needs_torch else "cpu"
    return build_enhancer(model, spec.geometry_for, resolved, factories), resolved


def render_frames(spec: JobSpec, source_frames: Sequence[int], enhancer: Enhancer) -> list[PreviewFrame]:
    """Decode each source frame as a one-frame shard and enhance its output frame(s); with
    ``--deinterlace double`` the first of the frame's two output frames is shown.

    Raises:
        DecodeError, EnhanceError: as a worker's shard would.
    """
    source = spec.source
    out_index = spec.output_index
    frames = []
    for f in source_frames:
        decoded = decode_shard(source.location, source.video_stream, source.index, f, f + 1, high_bit_depth=source.high_bit_depth,
                               colour=source.colour, deinterlace=spec.deinterlace, field_order=source.field_order)
        number, pixels = next(iter(decoded))
        after = enhancer.enhance(pixels, number)
        frames.append(PreviewFrame(number, f, out_index.seconds(number) - out_index.seconds(0), pixels, after, face_boxes(enhancer, pixels)))
    return frames


def face_boxes(enhancer: Enhancer, frame: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    """The boxes of the faces the enhancer's own detector finds in ``frame`` (none without faces)."""
    faces = getattr(enhancer, "faces", None)
    if faces is None or frame.dtype != np.uint8:
        return ()
    helper = faces.helper
    helper.clean_all()
    helper.read_image(frame)
    helper.get_face_landmarks_5(only_center_face=False, eye_dist_threshold=5)
    boxes = tuple(tuple(int(round(v)) for v in det[:4]) for det in helper.det_faces)
    helper.clean_all()
    return boxes  # type: ignore[return-value]


def to_8_bit(image: np.ndarray) -> np.ndarray:
    return (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image


def scaled_before(frame: np.ndarray, geometry: Geometry, interpolation: str) -> np.ndarray:
    """The source frame at the output's picture size, on the output canvas."""
    import cv2

    flag = cv2.INTER_NEAREST if interpolation == "nearest" else cv2.INTER_LANCZOS4
    return place(cv2.resize(to_8_bit(frame), geometry.picture, interpolation=flag), geometry)


def contact_sheet(frames: Sequence[PreviewFrame], geometry: Geometry) -> Sheet:
    """One row per frame: nearest | Lanczos | output, a label strip above, face crops at the right."""
    import cv2

    w, h = geometry.canvas
    sx, sy = geometry.picture[0] / frames[0].before.shape[1], geometry.picture[1] / frames[0].before.shape[0]
    ox, oy = geometry.offset
    crops_w = 0
    rows_crops = []
    for fr in frames:
        crops = []
        for x0, y0, x1, y1 in fr.faces:
            box = (max(0, int(x0 * sx) + ox), max(0, int(y0 * sy) + oy), min(w, int(x1 * sx) + ox), min(h, int(y1 * sy) + oy))
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            pair = [scaled_before(fr.before, geometry, "lanczos"), to_8_bit(fr.after)]
            pieces = [p[box[1] : box[3], box[0] : box[2]] for p in pair]
            k = FACE_CROP_H / pieces[0].shape[0]
            pieces = [cv2.resize(p, (max(1, int(p.shape[1] * k)), FACE_CROP_H), interpolation=cv2.INTER_LANCZOS4) for p in pieces]
            crops.append(np.hstack([pieces[0], np.full((FACE_CROP_H, GAP, 3), 40, np.uint8), pieces[1]]))
        rows_crops.append(crops)
        crops_w = max([crops_w] + [c.shape[1] for c in crops])
    columns = len(PANELS) * (w + GAP) + (crops_w + GAP if crops_w else 0) + GAP
    row_h = LABEL_H + max(h, max((len(c) * (FACE_CROP_H + GAP) for c in rows_crops), default=0))
    sheet = np.full((len(frames) * (row_h + GAP) + GAP, columns, 3), 24, np.uint8)
    boxes: dict[tuple[int, str], tuple[int, int, int, int]] = {}
    for r, fr in enumerate(frames):
        y = GAP + r * (row_h + GAP)
        panels = {"nearest": scaled_before(fr.before, geometry, "nearest"), "lanczos": scaled_before(fr.before, geometry, "lanczos"), "after": to_8_bit(fr.after)}
        for c, name in enumerate(PANELS):
            x = GAP + c * (w + GAP)
            sheet[y + LABEL_H : y + LABEL_H + h, x : x + w] = panels[name]
            boxes[(r, name)] = (x, y + LABEL_H, w, h)
            label = {"nearest": "before (nearest)", "lanczos": "before (Lanczos)", "after": "after"}[name]
            text = f"{label}  frame {fr.number}  {timecode(fr.time_s)}" if c == 0 else label
            cv2.putText(sheet, text, (x + 2, y + LABEL_H - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
        x = GAP + len(PANELS) * (w + GAP)
        for k, crop in enumerate(rows_crops[r]):
            yy = y + LABEL_H + k * (FACE_CROP_H + GAP)
            sheet[yy : yy + FACE_CROP_H, x : x + crop.shape[1]] = crop
        if rows_crops[r]:
            cv2.putText(sheet, "faces: before | after", (x + 2, y + LABEL_H - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
    return Sheet(sheet, boxes)


def timecode(seconds: float) -> str:
    """``HH:MM:SS.mmm``."""
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def write_png(path: str, image: np.ndarray) -> None:
    """Write ``image`` (BGR) as a PNG at ``path``.

    Raises:
        OutputError: the file cannot be written.
    """
    import cv2

    try:
        ok = cv2.imwrite(path, image)
    except cv2.error as exc:
        raise OutputError(f"cannot write {path} ({exc}); choose another -o") from None
    if not ok:
        raise OutputError(f"cannot write {path}; check that its folder exists and is writable, or choose another -o")


def check_sheet_path(path: str) -> None:
    """Refuse a sheet path that is not a writable .png, before any work."""
    import os

    if not path.lower().endswith(".png"):
        raise OutputError(f"the preview sheet {path} must be a .png file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(f"the folder {parent} does not exist; create it first or choose another -o")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"the folder {parent} is not writable; choose another -o")


Renderer = Callable[[JobSpec, Sequence[int]], tuple[list[PreviewFrame], str]]


def render_here(device: str, config: ModelConfig) -> Renderer:
    """A renderer that loads the enhancer in the process it runs in, with the factories resolved
    now, for ``config`` (so a Ray task on a cluster builds what this process would)."""
    factories = resolve_factories(config)

    def render(spec: JobSpec, source_frames: Sequence[int]) -> tuple[list[PreviewFrame], str]:
        enhancer, resolved = load_enhancer(spec, device, factories)
        return render_frames(spec, source_frames, enhancer), resolved

    return render


def preview(cfg: JobConfig, sheet_path: str, *, count: int | None = None, at_s: Sequence[float] = (),
            render: Renderer | None = None) -> PreviewResult:
    """Enhance a few frames of ``cfg``'s job and write the contact sheet to ``sheet_path``.

    Args:
        render: runs the enhancement (default: in this process on ``cfg.model.device``; the CLI
            passes one that runs it on a cluster's GPU).

    Raises:
        FarmError: bad input or options (as ``farm submit``), or the sheet cannot be written.
    """
    t0 = time.perf_counter()
    check_sheet_path(sheet_path)
    spec, geometry = preview_spec(cfg)
    picks = pick_frames(spec, count, at_s)
    frames, device = (render or render_here(cfg.model.device, cfg.model))(spec, picks)
    sheet = contact_sheet(frames, geometry)
    write_png(sheet_path, sheet.image)
    log.info("preview of %d frames written to %s", len(frames), sheet_path)
    return PreviewResult(sheet_path, tuple(f.number for f in frames), tuple(f.time_s for f in frames), geometry.canvas,
                         time.perf_counter() - t0, device, sheet, tuple(f.source_frame for f in frames), spec.source.index)


# ----------------------------------------------------------------------------------------------
# --clip: a short clip made by the job machinery itself, on a frame range of the source


def clip_frames(index: FrameIndex, first: int, seconds: float) -> tuple[int, int]:
    """Source frames [first, stop) of a clip ``seconds`` long from source frame ``first``: the
    frames that start before ``seconds`` have passed, at least one, at most to the video's end.

    Raises:
        UsageError: ``seconds`` is not positive.
    """
    if not seconds > 0:
        raise UsageError(f"--clip must be a positive number of seconds, got {seconds:g}")
    end = index.pts[first] + seconds / index.time_base
    stop = bisect.bisect_left(index.pts, end)
    return first, min(len(index), max(first + 1, stop))


def default_clip_path(sheet_path: str, codec: str) -> str:
    """Next to the sheet: ``sheet.png`` -> ``sheet.mkv`` (a ``sheet.clip`` directory with --codec png)."""
    stem = sheet_path[:-4] if sheet_path.lower().endswith(".png") else sheet_path
    return stem + (".clip" if codec == "png" else ".mkv")


def clip_config(cfg: JobConfig, frames: tuple[int, int], output: str) -> JobConfig:
    """The job ``cfg`` is, restricted to source ``frames`` and written to ``output``: run by
    ``farm submit``'s own machinery (preflight, shards, workers, mux), so the clip's frames and
    pts are the whole job's over that span. It is its own job (its id includes the range), kept
    under the jobs root like any other, so the same clip again is instant."""
    return dataclasses.replace(cfg, output=output, frames=frames)
