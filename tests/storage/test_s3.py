"""Object storage: input, output and jobs root on S3 (a real S3 protocol server, moto, on
loopback), workers on other nodes reading and writing there, and resume after a driver kill."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.testing.clips import make_test_clip
from farm.testing.cluster import SimCluster, free_port
from tests.helpers import decode_all, kill_group, packet_pts, run_farm, start_farm

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture()
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "farm-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "farm-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("videos")
    yield fs
    server.stop()


def s3_receipts(fs) -> list[dict]:
    fs.invalidate_cache()
    return [json.loads(fs.cat_file(p)) for p in fs.glob("videos/jobs/*/segments/*.json")]


def test_s3_input_output_and_jobs_root_with_resume(s3, tmp_path, local_ray):
    """A studio keeps everything in a bucket: the source, the job directory and the output are
    s3:// URLs; the driver is killed mid-job and the same command finishes it exactly (as the
    same job run on local files, in this process, writes it)."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=64, size=(32, 24), audio=True)
    s3.put_file(clip, "videos/in.mkv")
    common = ["--model", "fake:scale=2,ms=120", "--no-face", "--codec", "ffv1", "--shard-frames", "4", "--quiet"]
    reference = str(tmp_path / "reference.mkv")
    done = CliRunner().invoke(main, ["submit", clip, "-o", reference, "--jobs-root", str(tmp_path / "jobs")] + common + ["--workers", "2"],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output

    args = ["submit", "s3://videos/in.mkv", "-o", "s3://videos/out.mkv", "--jobs-root", "s3://videos/jobs"] + common
    with SimCluster(gpu_nodes=2) as cluster:
        proc = start_farm(args + ["--address", cluster.address], str(tmp_path / "first.log"))
        deadline = time.time() + 120
        while len(s3_receipts(s3)) < 3:
            assert proc.poll() is None and time.time() < deadline, open(tmp_path / "first.log").read()
            time.sleep(0.3)
        kill_group(proc)
        before = {r["shard"]: r["segment"] for r in s3_receipts(s3)}
        assert len(before) < 16
        result = run_farm(args + ["--address", cluster.address])
        assert result.returncode == 0, result.stderr

    s3.invalidate_cache()
    assert not s3.exists("videos/out.mkv.tmp") and s3.exists("videos/out.mkv")
    out = str(tmp_path / "out.mkv")
    s3.get_file("videos/out.mkv", out)
    assert packet_pts(out) == packet_pts(reference)
    t_out, f_out = decode_all(out)
    t_ref, f_ref = decode_all(reference)
    assert t_out == t_ref and all((a == b).all() for a, b in zip(f_out, f_ref)) and len(f_out) == 64
    (ledger_path,) = s3.glob("videos/jobs/*/ledger.json")
    done = json.loads(s3.cat_file(ledger_path))["done"]
    assert all(done[str(shard)]["segment"] == segment for shard, segment in before.items())
