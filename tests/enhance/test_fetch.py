"""Weights: `farm models fetch` against a weights server on loopback (downloads with progress,
resumes, refuses a wrong file, idempotent), the once-per-node hash cache, and a worker that refuses
to start on a damaged registry file."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import re
import threading

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.enhance import fetch, hashes, weights
from farm.enhance.fetch import Fetched
from farm.enhance.registry import SR_MODELS, WeightsFile
from farm.errors import UnknownModel, WeightsError

SIZE = 1 << 20  # 1 MiB: four chunks of the downloader's 256 KiB


def payload(seed: int, size: int = SIZE) -> bytes:
    """Deterministic bytes standing in for a weights file."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


class WeightsServer:
    """A static file server on 127.0.0.1 with Range support that logs every request, and can
    drop the connection part-way through a file once (a network failure mid-download)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[dict] = []
        self.cut_after: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/")
                data = server.files.get(name)
                entry = {"path": name, "range": self.headers.get("Range"), "status": 404, "sent": 0}
                server.log.append(entry)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if entry["range"]:
                    start = int(entry["range"].removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        entry["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:]
                entry["status"] = 206 if start else 200
                self.send_response(entry["status"])
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cut = server.cut_after.pop(name, None)
                if cut is not None:
                    body = body[:cut]
                    self.close_connection = True
                self.wfile.write(body)
                entry["sent"] = len(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = WeightsServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def node_cache(tmp_path, monkeypatch):
    """Each test gets its own node-local hash cache."""
    cache = tmp_path / "node-cache"
    monkeypatch.setenv("FARM_NODE_CACHE_DIR", str(cache))
    return cache


def registry(**files: bytes) -> dict[str, WeightsFile]:
    """Registry entries whose expected sha256 is that of the given test files."""
    return {
        name: WeightsFile(f"{name}.pth", f"https://example.invalid/{name}.pth", hashlib.sha256(data).hexdigest())
        for name, data in files.items()
    }


class Recorder:
    """Records what fetch reports to a progress display."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, name, file, total, done):
        self.events.append(("start", name, file, total, done))

    def advance(self, name, nbytes):
        self.events.append(("advance", name, nbytes))

    def finish(self, name, outcome):
        self.events.append(("finish", name, outcome))

    def of(self, name):
        advanced = sum(e[2] for e in self.events if e[0] == "advance" and e[1] == name)
        rest = [e for e in self.events if e[1] == name and e[0] != "advance"]
        return rest, advanced


def test_fetch_downloads_with_progress_and_places_verified_files(server, tmp_path):
    """A fresh machine fetches two weights files from a mirror: each is streamed with progress,
    checked, and placed under its registry name; nothing else is left in the weights dir."""
    sr, face = payload(1), payload(2, SIZE // 2)
    server.files = {"sr.pth": sr, "face.pth": face}
    progress = Recorder()
    wdir = tmp_path / "weights"
    results = fetch.fetch(str(wdir), registry=registry(sr=sr, face=face), base_url=server.url, progress=progress)
    assert results == [
        Fetched("sr", "sr.pth", str(wdir / "sr.pth"), "downloaded", SIZE, 0, source="github"),
        Fetched("face", "face.pth", str(wdir / "face.pth"), "downloaded", SIZE // 2, 0, source="github"),
    ]
    assert (wdir / "sr.pth").read_bytes() == sr and (wdir / "face.pth").read_bytes() == face
    assert sorted(os.listdir(wdir)) == ["face.pth", "sr.pth"]
    assert progress.of("sr") == ([("start", "sr", "sr.pth", SIZE, 0), ("finish", "sr", "downloaded")], SIZE)
    assert progress.of("face") == ([("start", "face", "face.pth", SIZE // 2, 0), ("finish", "face", "downloaded")], SIZE // 2)
    assert [(e["path"], e["range"], e["status"]) for e in server.log] == [("sr.pth", None, 200), ("face.pth", None, 200)]


def test_interrupted_download_resumes_with_only_the_missing_bytes(server, tmp_path):
    """The connection drops 600 kB into a file: nothing is placed, the partial file is kept, and
    the next fetch asks only for the rest (HTTP Range) and places the whole, verified file."""
    data = payload(3)
    server.files = {"sr.pth": data}
    server.cut_after = {"sr.pth": 600_000}
    wdir = tmp_path / "weights"
    reg = registry(sr=data)
    [first] = fetch.fetch(str(wdir), registry=reg, base_url=server.url)
    kept = os.path.getsize(wdir / "sr.pth.part")
    assert kept >= 2 * fetch.CHUNK_BYTES  # whole chunks written before the drop survive
    assert dataclasses.replace(first, error=None) == Fetched("sr", "sr.pth", str(wdir / "sr.pth"), "failed")
    # (the exception's name, in parentheses, is requests' and may vary between its versions)
    assert re.fullmatch(
        re.escape(f"download of sr.pth from {server.url}/sr.pth stopped after {kept} bytes (") + r"\w+"
        + re.escape("); run the same command again to resume it"),
        first.error,
    ), first.error
    assert not (wdir / "sr.pth").exists()

    progress = Recorder()
    [second] = fetch.fetch(str(wdir), registry=reg, base_url=server.url, progress=progress)
    assert second == Fetched("sr", "sr.pth", str(wdir / "sr.pth"), "resumed", SIZE - kept, kept, source="github")
    assert server.log[-1] == {"path": "sr.pth", "range": f"bytes={kept}-", "status": 206, "sent": SIZE - kept}
    assert progress.of("sr") == ([("start", "sr", "sr.pth", SIZE, kept), ("finish", "sr", "resumed")], SIZE - kept)
    assert (wdir / "sr.pth").read_bytes() == data
    assert os.listdir(wdir) == ["sr.pth"]


def test_complete_part_file_is_placed_without_downloading_again(server, tmp_path):
    """A fetch killed between the last byte and the rename left a whole .part: the server says
    there is nothing more (416), the part verifies, and it is placed."""
    data = payload(4, 4096)
    server.files = {"sr.pth": data}
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "sr.pth.part").write_bytes(data)
    [result] = fetch.fetch(str(wdir), registry=registry(sr=data), base_url=server.url)
    assert result == Fetched("sr", "sr.pth", str(wdir / "sr.pth"), "resumed", 0, 4096, source="github")
    assert [(e["range"], e["status"]) for e in server.log] == [("bytes=4096-", 416)]
    assert (wdir / "sr.pth").read_bytes() == data and os.listdir(wdir) == ["sr.pth"]


def test_wrong_sha256_leaves_nothing_in_place(server, tmp_path):
    """A mirror serves a different file under the registry's name: it is downloaded, fails the
    hash, and neither the file nor its partial download is left behind."""
    server.files = {"sr.pth": payload(5)}
    wdir = tmp_path / "weights"
    reg = registry(sr=payload(6))
    [result] = fetch.fetch(str(wdir), registry=reg, base_url=server.url)
    actual = hashlib.sha256(payload(5)).hexdigest()
    assert result == Fetched(
        "sr", "sr.pth", str(wdir / "sr.pth"), "failed",
        error=f"{server.url}/sr.pth gave a sr.pth whose sha256 is {actual[:12]}…, not the registry's "
        f"{reg['sr'].sha256[:12]}…; nothing was placed (a wrong mirror or a changed release?)",
    )
    assert os.listdir(wdir) == []


def test_fetch_is_idempotent(server, tmp_path):
    """Running `farm models fetch` again (a second `ray up`, a container restart) downloads
    nothing: present, verified files are left alone."""
    data = payload(7)
    server.files = {"sr.pth": data}
    wdir = tmp_path / "weights"
    reg = registry(sr=data)
    fetch.fetch(str(wdir), registry=reg, base_url=server.url)
    mtime = os.stat(wdir / "sr.pth").st_mtime_ns
    progress = Recorder()
    assert fetch.fetch(str(wdir), registry=reg, base_url=server.url, progress=progress) == [
        Fetched("sr", "sr.pth", str(wdir / "sr.pth"), "present", source="github")
    ]
    assert len(server.log) == 1  # only the first fetch's request
    assert os.stat(wdir / "sr.pth").st_mtime_ns == mtime
    assert progress.events == [("start", "sr", "sr.pth", SIZE, SIZE), ("finish", "sr", "present")]


def test_a_different_file_under_a_registry_name_is_kept_unless_forced(server, tmp_path):
    """A user's own weights saved under a registry name are not overwritten by a plain fetch;
    --force replaces them with the official file."""
    data = payload(8, 4096)
    server.files = {"sr.pth": data}
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "sr.pth").write_bytes(b"my fine-tuned weights")
    reg = registry(sr=data)
    [kept] = fetch.fetch(str(wdir), registry=reg, base_url=server.url)
    mine = hashlib.sha256(b"my fine-tuned weights").hexdigest()
    assert kept.outcome == "failed" and kept.error == (
        f"{wdir / 'sr.pth'} is there but is not the official sr.pth (sha256 {mine[:12]}…); "
        "pass --force to replace it, or keep it and pass --trust-weights to `farm submit`"
    )
    assert (wdir / "sr.pth").read_bytes() == b"my fine-tuned weights" and server.log == []
    [forced] = fetch.fetch(str(wdir), registry=reg, base_url=server.url, force=True)
    assert forced == Fetched("sr", "sr.pth", str(wdir / "sr.pth"), "downloaded", 4096, 0, source="github")
    assert (wdir / "sr.pth").read_bytes() == data


def test_names_select_registry_entries():
    """Names on the command line may be registry names, file names, or file names without .pth."""
    assert list(weights.select(["realesrgan-x4plus", "GFPGANv1.4.pth", "detection_Resnet50_Final"])) == [
        "realesrgan-x4plus",
        "gfpgan-1.4",
        "face-detector",
    ]
    with pytest.raises(UnknownModel, match=r"^unknown weights 'x5'; known: realesrgan-x4plus, .*face-parser \(or their file names\)$"):
        weights.select(["x5"])


def test_cli_fetch_refuses_a_mirror_with_wrong_files(server, tmp_path):
    """`farm models fetch` against the real registry, from a mirror that serves a different file:
    exit status 1, one line naming the file and both hashes, and an empty weights dir."""
    junk = payload(9, 4096)
    server.files = {"realesr-general-x4v3.pth": junk}
    wdir = tmp_path / "weights"
    result = CliRunner().invoke(main, ["models", "fetch", "realesr-general-x4v3", "--weights-dir", str(wdir), "--base-url", server.url])
    official = SR_MODELS["realesr-general-x4v3"].weights.sha256
    actual = hashlib.sha256(junk).hexdigest()
    assert result.exit_code == 1
    assert result.stdout == f"0 downloaded, 0 already present, 1 failed; weights dir {wdir}\n"
    assert result.stderr.splitlines()[-1] == (
        f"error: {server.url}/realesr-general-x4v3.pth gave a realesr-general-x4v3.pth whose sha256 is {actual[:12]}…, "
        f"not the registry's {official[:12]}…; nothing was placed (a wrong mirror or a changed release?)"
    )
    assert os.listdir(wdir) == []


def test_cli_list_and_verify_report_a_damaged_file(tmp_path):
    """A truncated GFPGANv1.4.pth in the weights dir: `models list` shows it present, `models
    verify` hashes it, names it, and exits 1."""
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "GFPGANv1.4.pth").write_bytes(b"truncated")
    listed = CliRunner().invoke(main, ["models", "list", "--weights-dir", str(wdir), "--json"])
    assert listed.exit_code == 0
    states = {f["name"]: (f["state"], f["size"]) for f in json.loads(listed.stdout)}
    assert states == {
        "realesrgan-x4plus": ("missing", None),
        "realesrgan-x2plus": ("missing", None),
        "realesr-general-x4v3": ("missing", None),
        "realesrgan-x4plus-anime-6b": ("missing", None),
        "realesr-animevideov3": ("missing", None),
        "gfpgan-1.4": ("present", 9),
        "gfpgan-1.3": ("missing", None),
        "face-detector": ("missing", None),
        "face-parser": ("missing", None),
    }
    verified = CliRunner().invoke(main, ["models", "verify", "--weights-dir", str(wdir)])
    assert verified.exit_code == 1
    assert verified.stderr == (
        "error: GFPGANv1.4.pth is missing or not official; run `farm models fetch --force` for them, "
        "or pass --trust-weights to farm submit for files you changed on purpose\n"
    )


def test_hash_is_computed_once_per_node(tmp_path, monkeypatch):
    """Eight workers starting together on one node check the same 1 MiB file: it is hashed
    once; after the file changes it is hashed again."""
    path = tmp_path / "w.pth"
    path.write_bytes(payload(10))
    calls = []
    real = hashes.sha256_file
    monkeypatch.setattr(hashes, "sha256_file", lambda p: calls.append(p) or real(p))
    digests = []
    threads = [threading.Thread(target=lambda: digests.append(hashes.file_sha256(str(path)))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert digests == [hashlib.sha256(payload(10)).hexdigest()] * 8
    assert calls == [str(path)]
    path.write_bytes(payload(11))
    assert hashes.file_sha256(str(path)) == hashlib.sha256(payload(11)).hexdigest()
    assert calls == [str(path)] * 2


def test_weights_dir_must_be_a_path():
    """Weights are loaded by torch from paths: an object-store URL is refused with the fix."""
    from farm.errors import UsageError

    with pytest.raises(UsageError, match=r"^--weights-dir must be a path .* not s3://bucket/weights; mount the storage"):
        fetch.fetch("s3://bucket/weights")


# ----------------------------------------------------------------------------------------------
# Workers


@pytest.fixture
def registry_job(tmp_path, monkeypatch):
    """A job for the registry model realesrgan-x4plus whose weights dir holds tiny random RRDBNet
    weights; the test's registry entry carries their sha256, so the driver's check passes."""
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.job import open_job
    from farm.storage.fs import sha256_file
    from farm.testing.clips import make_test_clip
    from farm.testing.weights import write_rrdbnet_weights

    wdir = tmp_path / "weights"
    wdir.mkdir()
    path = write_rrdbnet_weights(str(wdir / "RealESRGAN_x4plus.pth"), scale=4, num_feat=4, num_block=1, num_grow_ch=4)
    entry = SR_MODELS["realesrgan-x4plus"]
    monkeypatch.setitem(SR_MODELS, "realesrgan-x4plus", dataclasses.replace(entry, weights=dataclasses.replace(entry.weights, sha256=sha256_file(path))))

    def make(trust_weights: bool = False):
        clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=4, size=(16, 16))
        model = ModelConfig(model="realesrgan-x4plus", face=False, weights_dir=str(wdir), precision="fp32", device="cpu", trust_weights=trust_weights)
        cfg = JobConfig(input=clip, output=str(tmp_path / "out.mkv"), model=model, out=OutputConfig(codec="ffv1"), jobs_root=str(tmp_path / "jobs"))
        return open_job(cfg)

    return path, make


def test_worker_refuses_to_start_on_a_damaged_registry_file(registry_job, monkeypatch):
    """The driver's machine had good weights, but this node's copy of RealESRGAN_x4plus.pth is
    truncated: the worker refuses to start, naming the file and the fixes. Workers on a node with
    the good file start, and the node hashes it once for all of them."""
    from farm.actors.worker import EnhanceWorker

    path, make = registry_job
    calls = []
    real = hashes.sha256_file
    monkeypatch.setattr(hashes, "sha256_file", lambda p: calls.append(p) or real(p))
    p = make()
    for i in range(2):
        info = EnhanceWorker(p.job.jobs_root, p.job.job_id, f"w{i}", "cpu").ready()
        assert (info["device"], info["model_scale"]) == ("cpu", 4)
    assert calls == [path]  # the driver's check; both workers found it in the node's cache

    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    actual = real(path)
    expected = SR_MODELS["realesrgan-x4plus"].weights.sha256
    with pytest.raises(WeightsError) as failure:
        EnhanceWorker(p.job.jobs_root, p.job.job_id, "w3", "cpu").ready()
    assert str(failure.value) == (
        f"{path} is not the official RealESRGAN_x4plus.pth (sha256 {actual[:12]}…, expected {expected[:12]}…); "
        "re-fetch it with `farm models fetch --force`, or pass --trust-weights if you changed it on purpose"
    )


def test_trust_weights_lets_a_worker_load_changed_registry_weights(registry_job):
    """A user fine-tuned x4plus and saved it under the registry's file name: with
    --trust-weights the worker loads it without the hash check."""
    from farm.actors.worker import EnhanceWorker
    from farm.testing.weights import write_rrdbnet_weights

    path, make = registry_job
    p = make(trust_weights=True)
    write_rrdbnet_weights(path, scale=4, num_feat=4, num_block=1, num_grow_ch=4, seed=1)
    info = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu").ready()
    assert (info["device"], info["model_scale"]) == ("cpu", 4)


def test_worker_without_the_weights_names_the_file_and_the_command(registry_job):
    """A node whose weights dir lacks the file (storage not mounted there): the worker's error
    names the missing file and how to fetch it."""
    from farm.actors.worker import EnhanceWorker
    from farm.errors import MissingWeights

    path, make = registry_job
    p = make()
    os.unlink(path)
    wdir = os.path.dirname(path)
    with pytest.raises(MissingWeights) as failure:
        EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu").ready()
    assert str(failure.value) == (
        f"{path} not found (model realesrgan-x4plus); run `farm models fetch --weights-dir {wdir}` "
        "or pass --weights-dir pointing at a folder that has it"
    )


@pytest.mark.parametrize("which", ["sr", "face"])
def test_worker_refuses_a_node_whose_own_weights_file_differs(tmp_path, which, face_weights):
    """`--sr-weights /models/mine.pth` (or `--face-weights`) was hashed on the driver's machine;
    another node holds a different file at that path. Its worker refuses to start, naming the
    node, the path, both hashes and the fix, instead of mixing two models' frames in one output."""
    import socket

    from farm.actors.worker import EnhanceWorker
    from farm.config import JobConfig, ModelConfig, OutputConfig
    from farm.job import open_job
    from farm.storage.fs import sha256_file
    from farm.testing.clips import make_test_clip
    from farm.testing.weights import write_gfpgan_weights, write_rrdbnet_weights

    sr = write_rrdbnet_weights(str(tmp_path / "mine.pth"), scale=2, num_feat=4, num_block=1, num_grow_ch=4)
    face = write_gfpgan_weights(str(tmp_path / "face.pth"))
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=4, size=(16, 16))
    model = ModelConfig(sr_weights=sr, face=which == "face", face_weights=face, weights_dir=face_weights["dir"],
                        face_detector=f"scripted:{tmp_path / 'none.json'}", trust_weights=True, precision="fp32", device="cpu")
    (tmp_path / "none.json").write_text("{}")
    p = open_job(JobConfig(input=clip, output=str(tmp_path / "out.mkv"), model=model, out=OutputConfig(codec="ffv1"),
                          jobs_root=str(tmp_path / "jobs")))
    path = sr if which == "sr" else face
    recorded = sha256_file(path)
    # The other node's file: same name and size, other weights.
    if which == "sr":
        write_rrdbnet_weights(path, scale=2, num_feat=4, num_block=1, num_grow_ch=4, seed=1)
    else:
        write_gfpgan_weights(path, seed=1)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    found = sha256_file(path)
    assert found != recorded
    worker = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu")
    with pytest.raises(WeightsError) as failure:
        worker.ready()
    assert str(failure.value) == (
        f"node {socket.gethostname()} [{worker.node[:8]}] has another file at {path} (sha256 {found}, the job's is {recorded}); "
        "copy the submitted file to that path on every node, or put it on shared storage"
    )
