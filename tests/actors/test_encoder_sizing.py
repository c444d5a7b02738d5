"""Encoder threads and preset sized from the cluster's CPUs per GPU when a job starts on GPUs,
recorded in the job spec, and used by every chunk (so a redone chunk is byte-identical)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from farm.actors.pool import cluster_encoder_sizing
from farm.actors.worker import EnhanceWorker
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.enhance.arch import SRArch
from farm.job import open_job
from farm.plan import HOST_MS_PER_MPX, X264_MS_PER_MPX, EncoderSizing, expected_gpu_fps, size_encoder
from farm.spec import JobSpec
from farm.testing.clips import make_test_clip

X4PLUS = SRArch("rrdb", 4, {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4})


def node(cpus: float, gpus: float, accelerator: str | None = None, alive: bool = True) -> dict:
    resources = {"CPU": cpus, "GPU": gpus, "memory": 1e9}
    if accelerator:
        resources[f"accelerator_type:{accelerator}"] = 1.0
    return {"Alive": alive, "Resources": resources, "NodeID": f"n{cpus}-{gpus}-{accelerator}"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> JobSpec:
    d = tmp_path_factory.mktemp("sizing")
    clip = make_test_clip(str(d / "clip.mp4"), frames=8, size=(64, 48))
    cfg = JobConfig(input=clip, output=str(d / "out.mkv"), model=ModelConfig(model="fake:scale=4", face=False, target=(1920, 1080)),
                    out=OutputConfig(codec="x264"), jobs_root=str(d / "jobs"), shard_frames=4)
    return open_job(cfg).spec


def test_an_h100_node_of_16_cpus_keeps_x264_medium_at_480p_to_1080p():
    """A rented H100 with 16 cores upscaling a DVD-sized 854x480 source x4 into 1080p: the encode
    gets 14 threads and x264's default preset, which those keep up with at the expected rate."""
    fps = expected_gpu_fps(X4PLUS.flop_per_input_pixel(), 854 * 480, "H100")
    assert fps == pytest.approx(989e12 * 0.5 / (35.853696e6 * 854 * 480))
    sizing = size_encoder("x264", (1920, 1080), None, 16, fps)
    host = HOST_MS_PER_MPX * 1920 * 1080 / 1e6 * fps / 1000  # 1.25 CPUs for decode, paste, conversion
    assert (sizing.threads, sizing.preset, sizing.cpus_per_gpu) == (14, "medium", 16) and 1 < host < 2
    assert X264_MS_PER_MPX["medium"] * 1920 * 1080 / 1e6 <= sizing.threads * 1000 / fps


def test_fewer_cpus_per_gpu_choose_a_faster_preset_and_say_so_when_even_ultrafast_is_short():
    """The same source at 4x (3416x1920), where decode, paste and conversion take about 4 CPUs: with
    16 CPUs per GPU x264 gets 12 threads and fast, with 8 (an 8-GPU node of 64 cores) 4 threads and
    superfast; with 5 nothing fits and the reason says the GPUs will wait."""
    fps = expected_gpu_fps(X4PLUS.flop_per_input_pixel(), 854 * 480, "H100")
    mpx = 3416 * 1920 / 1e6
    host = HOST_MS_PER_MPX * mpx * fps / 1000  # about 4 CPUs at 4x
    sixteen = size_encoder("x264", (3416, 1920), None, 16, fps)
    assert sixteen.threads == int(16 - host) == 12 and sixteen.preset == "fast"
    eight = size_encoder("x264", (3416, 1920), None, 8, fps)
    assert eight.threads == 4 and eight.preset == "superfast"
    assert X264_MS_PER_MPX["superfast"] * mpx <= 4 * 1000 / fps < X264_MS_PER_MPX["veryfast"] * mpx
    five = size_encoder("x264", (3416, 1920), None, 5, fps)
    assert five.threads == 1 and five.preset == "ultrafast" and "the GPUs will wait on the encode" in five.why


def test_the_users_preset_is_kept_and_codecs_without_presets_get_threads_only():
    """--preset slow stays the user's (the reason warns when it cannot keep up); FFV1 and an
    unknown network's rate get threads from the CPUs alone; PNG one thread."""
    fps = expected_gpu_fps(X4PLUS.flop_per_input_pixel(), 854 * 480, "H200")
    user = size_encoder("x264", (3416, 1920), "medium", 8, fps)
    assert user.preset is None and "GPUs will wait" in user.why
    assert size_encoder("ffv1", (1920, 1080), None, 8, fps) == EncoderSizing(6, None, 8, fps, f"6 threads (8 CPUs per GPU less {HOST_MS_PER_MPX * 1920 * 1080 / 1e6 * fps / 1000:.3g} for the rest)")
    assert size_encoder("x264", (1920, 1080), None, 8, None).preset is None
    assert size_encoder("png", (1920, 1080), None, 8, fps).threads == 1


def test_cluster_sizing_takes_the_tightest_node_and_the_fastest_gpu(spec):
    """A cluster of a CPU-only head, an A100 node with 12 cores per GPU and an H100 node of 8 GPUs
    and 48 cores (6 per GPU): threads from the H100 node's 6 per GPU, the rate from the H100."""
    nodes = [node(64, 0), node(24, 2, "A100"), node(48, 8, "H100"), node(4, 1, "H100", alive=False)]
    sizing = cluster_encoder_sizing(spec, nodes, X4PLUS.flop_per_input_pixel)
    fps = expected_gpu_fps(X4PLUS.flop_per_input_pixel(), 64 * 48, "H100")
    assert sizing == size_encoder("x264", spec.geometry.canvas, None, 6, fps)
    assert cluster_encoder_sizing(spec, [node(64, 0)], X4PLUS.flop_per_input_pixel) is None


@pytest.mark.parametrize("arch", [
    X4PLUS,
    SRArch("rrdb", 2, {**X4PLUS.params, "scale": 2}),
    SRArch("rrdb", 4, {**X4PLUS.params, "num_block": 6}),
    SRArch("compact", 4, {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_conv": 16, "upscale": 4, "act_type": "prelu"}),
], ids=["x4plus", "x2plus", "anime-6b", "animevideov3"])
def test_network_cost_per_pixel_is_what_torch_counts(arch):
    """The cost model's FLOPs per input pixel equal torch's own count of the built network."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = arch.build().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, 16, 16))
    assert arch.flop_per_input_pixel() == counter.get_total_flops() / 256


def test_the_sizing_is_recorded_in_the_spec_and_every_chunk_uses_it(spec, tmp_path):
    """A job sized for 5 encoder threads and preset veryfast writes chunks with exactly those, and
    the same shard redone (another node, after a failure) has the same bytes."""
    sizing = EncoderSizing(5, "veryfast", 7, 40.0, "test")
    sized = dataclasses.replace(spec, encoder=sizing)
    assert JobSpec.from_json(json.loads(json.dumps(sized.to_json()))) == sized
    from farm.storage.jobdir import JobDir

    job = JobDir(os.path.dirname(spec.source.location) + "/jobs", spec.job_id)
    job.write_spec(sized)
    worker = EnhanceWorker(job.jobs_root, job.job_id, "w1", "cpu")
    worker.ready()
    first = worker.run_shard(0, 0, 4, attempt=1)
    again = worker.run_shard(0, 0, 4, attempt=2)
    settings = first.video["settings"]
    assert settings["threads"] == 5 and settings["options"]["preset"] == "veryfast"
    assert "threads=5" in settings["options"]["x264-params"].split(":")
    assert again.sha256 == first.sha256
