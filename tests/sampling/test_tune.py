"""`farm tune`: measures speed settings on the user's video, keeps the fastest in a profile, and
the next `farm submit` runs with them (when not given other options)."""

from __future__ import annotations

import dataclasses

import json
import os

import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.receipt import Receipt
from farm.sampling.tune import Candidate, Measured, Stages, candidates, choose, read_profile, size_class
from farm.testing.clips import make_test_clip

#: The model of the test jobs, as command-line words (the one place that picks it).
FAKE_40MS = ["--model", "fake:scale=2,ms=40"]


def test_candidates_and_choice():
    """On a 2-core machine tune tries 2 and 1 workers (threads filling the cores) at batches 1 and
    2, the default first; the fastest wins, a near-tie goes to the earlier (simpler) one."""
    cands = candidates("cpu", 2, 48, 64)
    assert cands[0] == Candidate(2, 1, 1)  # the default: a one-thread worker per core, batch by frame size
    assert cands == [Candidate(2, 1, 1), Candidate(1, 2, 1), Candidate(1, 2, 2), Candidate(2, 1, 2)]
    measured = [Measured(c, fps) for c, fps in zip(cands, [1.0, 1.02, 1.5, None])]
    best, why = choose(measured)
    assert best is measured[2]
    assert why == "1 worker x 2 threads, batch 2: 1.500 fps, 1.50x the default (2 workers x 1 thread, batch 1: 1.000 fps)"
    best, _ = choose(measured[:2])
    assert best is measured[0]  # 2 % faster is a tie
    assert [size_class(*s) for s in [(64, 48), (720, 576), (1920, 1080), (3840, 2160)]] == ["thumb", "sd", "hd", "uhd"]


def test_stages_say_which_part_of_a_worker_bounds_it():
    """On a GPU node, tune's timed shards show where a worker's time went: 48 frames whose enhance
    thread spent 1.2 s in the networks and 0.4 s on the host, 0.3 s decoding and 2.0 s encoding: the
    encode bounds it. With the encode faster, the networks do; with a slow paste-back, the host."""
    def receipt(decode, enhance, model, encode, frames=24):
        timings = {"decode_s": decode, "enhance_s": enhance, "model_s": model, "encode_s": encode}
        return Receipt(0, "000000-t.nut", frames, 0, "", output_frames=frames, timings=timings)

    stages = Stages.from_receipts([receipt(0.1, 0.8, 0.6, 1.0), receipt(0.2, 0.8, 0.6, 1.0)])
    assert dataclasses.astuple(stages) == pytest.approx((160.0, 40.0, 120.0, 30.0, 24.0))
    assert stages.bound() == "the encode"
    assert stages.line() == ("per worker: decode 160.0 fps, enhance 30.0 fps = networks 40.0 fps + host 120.0 fps, "
                             "encode 24.0 fps; bound by the encode")
    assert Stages.from_receipts([receipt(0.1, 1.6, 1.2, 0.5)]).bound() == "the networks (the device)"
    assert Stages.from_receipts([receipt(0.1, 1.6, 0.4, 0.5)]).bound() == "the host's share of the enhance thread (CPU)"
    no_model = Stages.from_receipts([Receipt(0, "000000-t.nut", 10, 0, "", output_frames=10,
                                             timings={"decode_s": 0.0, "enhance_s": 1.0, "encode_s": 0.5})])
    assert (no_model.decode_fps, no_model.networks_fps, no_model.bound()) == (None, None, "the enhance thread")


@pytest.mark.ray
def test_tune_then_submit_uses_the_profile(tmp_path, local_ray):
    """A user runs `farm tune` on their clip, then `farm submit` without speed options: the job
    runs with the chosen settings, which were among those measured, and says where they came from."""
    clip = make_test_clip(str(tmp_path / "clip.mp4"), frames=48, size=(64, 48), audio=False)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    runner = CliRunner(env=env)
    common = [clip, *FAKE_40MS, "--no-face", "--device", "cpu"]
    tuned = runner.invoke(main, ["tune", *common, "--sample-frames", "3", "--json"])
    assert tuned.exit_code == 0, tuned.output
    result = json.loads(tuned.stdout)
    measured = [{k: m[k] for k in result["chosen"]} for m in result["measured"] if m["fps"]]
    assert result["chosen"] in measured
    chosen_fps = next(m["fps"] for m in result["measured"] if {k: m[k] for k in result["chosen"]} == result["chosen"])
    # The fake model sleeps 40 ms a frame in the enhance thread and reports no device time, so every
    # setting's enhance stage is measured under 25 fps; which stage bounds a 3-frame sample is left to
    # the Stages test above (a stall of the other stages on a loaded machine can name another).
    stages = [m["stages"] for m in result["measured"] if m["fps"]]
    assert [(s["enhance_fps"] < 26, s["networks_fps"], s["host_fps"], s["decode_fps"] is not None, s["encode_fps"] is not None)
            for s in stages] == [(True, None, None, True, True)] * len(stages)
    assert chosen_fps * 1.03 >= max(m["fps"] for m in result["measured"] if m["fps"])  # the fastest, or within the tie
    path = os.path.join(env["XDG_CONFIG_HOME"], "farm", "tune.toml")
    assert result["profile"] == path
    entry = read_profile(path)["cpu"]["thumb"]
    assert {k: entry[k] for k in result["chosen"] if k in entry} == {k: v for k, v in result["chosen"].items() if k in entry}

    jobs = str(tmp_path / "jobs")
    submitted = runner.invoke(main, ["submit", *common, "-o", str(tmp_path / "out.mkv"), "--quiet", "--json", "--jobs-root", jobs])
    assert submitted.exit_code == 0, submitted.output
    chosen = result["chosen"]
    label = f"batch {chosen['batch']}"
    assert f"using `farm tune`'s settings for cpu/thumb from {path}: {label}, {chosen['workers']} workers x {chosen['threads']} threads" in submitted.output
    job_id = json.loads(submitted.stdout.strip().splitlines()[-1])["job_id"]
    settings = json.load(open(os.path.join(jobs, job_id, "submit.json")))["settings"]
    assert settings == {"workers": chosen["workers"], "gpus_per_worker": 1.0, "batch_frames": chosen["batch"], "precision": "auto",
                        "compile": False, "tile": 0, "tuned_from": "cpu/thumb"}

    # An option the user gives wins over the profile, and the job records it.
    submitted = runner.invoke(main, ["submit", *common, "-o", str(tmp_path / "out2.mkv"), "--quiet", "--json", "--jobs-root", jobs,
                                     "--workers", "1", "--batch", "3"])
    assert submitted.exit_code == 0, submitted.output
    settings = json.load(open(os.path.join(jobs, job_id, "submit.json")))["settings"]
    assert (settings["workers"], settings["batch_frames"], settings["tuned_from"]) == (1, 3, None)
