"""A job directory that a farm before ``spec_version`` wrote resumes under this one: its job.json,
submit.json and outputs.json read as the same nouns, ``farm resume`` gets the same config, and an
output it recorded is still its own."""

from __future__ import annotations

import json
import os

from farm.config import OutputConfig
from farm.job import resume_config
from farm.jobfiles import OutputRecord, SpeedSettings, SubmitRecord
from farm.receipt import Receipt
from farm.storage.jobdir import OUTPUTS, SPEC, SUBMIT, JobDir
from tests.core.test_jobfiles import full_spec, unstamped


def test_a_job_directory_from_before_spec_version_resumes_the_same(tmp_path):
    """The files as the earlier writer left them (today's shapes without the stamp): the spec,
    the last submit and the outputs read back equal to what was written, `farm resume` rebuilds
    the same config, and recording another output keeps the old entry and stamps the file."""
    spec = full_spec()
    submit = SubmitRecord("/out/a.mkv", OutputConfig(codec="x265", crf=20), spec.source.location,
                          SpeedSettings(None, 1.0, None, "auto", False, 0), (3, 9))
    old_out = OutputRecord(OutputConfig(codec="x265", crf=20), 99, 123, 1.7e9)
    job = JobDir(str(tmp_path / "jobs"), spec.job_id)
    job.write_spec(spec)
    for rel, data in ((SPEC, spec.to_json()), (SUBMIT, submit.to_json()), (OUTPUTS, {"/out/a.mkv": old_out.to_json()})):
        data = {k: unstamped(v) for k, v in data.items()} if rel == OUTPUTS else unstamped(data)
        with open(os.path.join(job.location, rel), "w") as f:
            json.dump(data, f)
    assert job.read_spec() == spec
    assert job.read_submit() == submit
    assert job.outputs() == {"/out/a.mkv": old_out}
    cfg = resume_config(job.jobs_root, spec.job_id)
    assert (cfg.input, cfg.output, cfg.out, cfg.model, cfg.frames) == (spec.source.location, "/out/a.mkv", submit.out, spec.model, (3, 9))
    job.record_output("/out/b.mkv", OutputConfig(), 5, 6)
    again = job.outputs()
    assert again["/out/a.mkv"] == old_out and (again["/out/b.mkv"].bytes, again["/out/b.mkv"].mtime_ns) == (5, 6)
    assert all(entry["spec_version"] == 1 for entry in job.storage.read_json(OUTPUTS).values())


def test_a_job_without_a_recorded_submit_or_outputs_reads_as_none(tmp_path):
    """A job directory whose submit never got recorded, or whose outputs.json is damaged: no
    submit, and no output counted as the job's (so the next submit muxes again)."""
    spec = full_spec()
    job = JobDir(str(tmp_path / "jobs"), spec.job_id)
    job.write_spec(spec)
    assert job.read_submit() is None and job.outputs() == {}
    with open(os.path.join(job.location, OUTPUTS), "w") as f:
        json.dump({"/out/a.mkv": {"out": {"codec": "nope"}, "bytes": 1, "mtime_ns": 1, "at": 0}}, f)
    assert job.outputs() == {}


def test_receipts_are_written_as_before_and_read_as_receipts(tmp_path):
    """A worker commits shards 0 and 1 and the coordinator (or the mux) reads their receipts: the
    file is the receipt's JSON, the same bytes as the dict the earlier writer took; a receipt whose
    segment is gone, or that is not a receipt, vouches for nothing."""
    spec = full_spec()
    job = JobDir(str(tmp_path / "jobs"), spec.job_id)
    job.write_spec(spec)
    made = []
    for shard in (0, 1):
        name = job.segment_name(shard, "t")
        job.storage.write_bytes(job.segment_rel(name), b"chunk")
        made.append(Receipt(shard=shard, segment=name, frames=10, bytes=5, sha256="ab", start=10 * shard, stop=10 * shard + 10,
                            video={"settings": {"threads": 1}}, timings={"decode_s": 0.5}))
        job.write_receipt(name, made[-1])
    job.storage.write_json("segments/as-before.json", made[0].to_json())
    assert job.storage.read_bytes(job.receipt_rel(made[0].segment)) == job.storage.read_bytes("segments/as-before.json")
    job.storage.remove("segments/as-before.json")
    job.storage.write_bytes(job.segment_rel("000002-t.nut"), b"chunk")
    job.storage.write_json("segments/000002-t.json", {"segment": "000002-t.nut", "bytes": 5})  # no shard, no digest
    assert job.read_receipt(made[1].segment) == made[1]
    job.storage.remove(job.segment_rel(made[1].segment))
    assert job.receipts() == [made[0]]
    assert job.receipts(["000002-t.nut", "000002-t.json"]) == []
