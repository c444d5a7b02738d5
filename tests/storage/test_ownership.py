"""Who drives a job, decided on storage where every cluster and every mount path sees it: the
pure rules (farm.owner), the exclusive create on a filesystem and on S3, renewal, take-over, and
open_job touching nothing of a job another driver runs. No Ray."""

from __future__ import annotations

import os
import threading
import time

import pytest

from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.errors import ClusterError
from farm.follow import follow
from farm.job import open_job
from farm.owner import Decision, OwnerRecord, OwnerWatch, decide
from farm.progress import ProgressTracker
from farm.storage.fs import Storage
from farm.storage.jobdir import JobDir
from farm.storage.ownership import Ownership
from farm.testing.clips import make_test_clip

# -- the pure rules -----------------------------------------------------------------------------------


def test_the_first_driver_takes_generation_one():
    """A job nobody ever drove: the driver takes it."""
    assert decide(None, "me", "h1", 10, OwnerWatch(), 0.0) == Decision("take", OwnerRecord(1, "me", "h1", 10), "no owner")


def test_a_live_owner_is_followed_and_a_silent_one_taken_over_on_the_observers_clock():
    """A second submit from another machine finds the job held. While the owner's beat changes
    it follows; once the beat stays the same for the TTL of the FOLLOWER's monotonic clock (the
    owner's machine died mid-job) it takes generation 2. The owner's wall clock never matters."""
    watch = OwnerWatch()
    held = OwnerRecord(1, "A", "hostA", 7, beat=3, ttl_s=20)
    assert decide(held, "B", "hostB", 9, watch, 100.0).action == "follow"
    assert decide(held, "B", "hostB", 9, watch, 119.0).action == "follow"
    renewed = held.renewed()
    assert decide(renewed, "B", "hostB", 9, watch, 125.0).action == "follow"  # alive: the clock starts again
    assert decide(renewed, "B", "hostB", 9, watch, 144.0).action == "follow"
    taken = decide(renewed, "B", "hostB", 9, watch, 145.0)
    assert taken == Decision("take", OwnerRecord(2, "B", "hostB", 9), "its driver on hostA has not renewed it for 20 s")


def test_a_released_job_or_a_dead_local_holder_is_taken_at_once():
    """The owner finished (and released the job), or ran on this host and its process is gone:
    no wait."""
    held = OwnerRecord(4, "A", "h", 7)
    assert decide(held.release(), "B", "h", 9, OwnerWatch(), 0.0).record == OwnerRecord(5, "B", "h", 9)
    assert decide(held, "B", "h", 9, OwnerWatch(), 0.0, holder_alive=False).action == "take"
    assert decide(held, "A", "h", 7, OwnerWatch(), 0.0).action == "keep"


# -- on storage ---------------------------------------------------------------------------------------


def test_of_two_drivers_racing_exactly_one_takes_the_job(tmp_path):
    """Two submits start at the same moment from two machines: one holds the job, the other
    follows it (an exclusive create decides, with no window between check and write)."""
    wins = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        if Ownership(JobDir(str(tmp_path), "job"), me=f"d{i}", host=f"h{i}").try_take():
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert JobDir(str(tmp_path), "job").read_owner() == OwnerRecord(1, f"d{wins[0]}", f"h{wins[0]}", os.getpid())


def test_one_share_at_two_mount_paths_has_one_owner(tmp_path):
    """One NFS share mounted at /mnt/a on one machine and /srv/b on another (here: a symlink):
    both see the same owner record, so the second driver follows."""
    real = tmp_path / "share"
    real.mkdir()
    os.symlink(real, tmp_path / "other-mount")
    first = Ownership(JobDir(str(real), "job"), me="A", host="hostA")
    second = Ownership(JobDir(str(tmp_path / "other-mount"), "job"), me="B", host="hostB")
    assert first.try_take() and not second.try_take()
    assert second.holder is not None and second.holder.owner == "A"
    first.release()
    assert second.try_take()


def test_renewal_keeps_the_job_through_a_long_mux_and_a_stalled_owner_loses_it(tmp_path):
    """The owner muxes for longer than the TTL: its thread renews, so the follower does not take
    over. Then the owner stalls (its renewals stop): the follower takes the job, and the owner,
    when it wakes, finds it lost and stops with one line."""
    owner = Ownership(JobDir(str(tmp_path), "job"), me="A", host="hostA", ttl_s=0.4, renew_s=0.05)
    follower = Ownership(JobDir(str(tmp_path), "job"), me="B", host="hostB", ttl_s=0.4)
    assert owner.try_take()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the "mux"
        assert not follower.try_take()
        time.sleep(0.05)
    owner._stop.set()  # the owner stalls
    owner._thread.join()
    deadline = time.monotonic() + 5
    while not follower.try_take():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    owner.renew()
    with pytest.raises(ClusterError, match="another driver .*hostB.* took job job over"):
        owner.check()
    assert JobDir(str(tmp_path), "job").read_owner().owner == "B"


def test_exclusive_create_on_s3_is_a_conditional_put(monkeypatch):
    """A jobs root in a bucket: generation 1 can be created once (If-None-Match), by one of two
    drivers on two clusters."""
    from moto.server import ThreadedMotoServer

    from farm.testing.cluster import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
            monkeypatch.setenv(k, v)
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("farmjobs")
        storage = Storage("s3://farmjobs/jobs")
        assert storage.create_exclusive("x/owner.json", b"1") is True
        assert storage.create_exclusive("x/owner.json", b"2") is False
        assert storage.read_bytes("x/owner.json") == b"1"
        a = Ownership(JobDir("s3://farmjobs/jobs", "job"), me="A", host="hA")
        b = Ownership(JobDir("s3://farmjobs/jobs", "job"), me="B", host="hB")
        assert a.try_take() and not b.try_take()
        a.release()
        assert b.try_take()
        b.release()
    finally:
        server.stop()


# -- open_job and the follower -----------------------------------------------------------------------


def _cfg(tmp_path, out: str = "out.mkv", restart: bool = False) -> JobConfig:
    clip = str(tmp_path / "clip.mkv")
    if not os.path.exists(clip):
        make_test_clip(clip, frames=12, size=(32, 24))
    return JobConfig(input=clip, output=str(tmp_path / out), model=ModelConfig(model="fake:scale=2", face=False),
                     out=OutputConfig(codec="ffv1"), jobs_root=str(tmp_path / "jobs"), shard_frames=4, restart=restart)


def test_restart_of_a_job_another_driver_runs_deletes_nothing(tmp_path):
    """`farm submit --restart` while another machine's driver runs the job: this driver does not
    hold the job, so its segments, spec and submit record stay as they are; it follows."""
    first = open_job(_cfg(tmp_path))
    first.owner.release()
    other = Ownership(first.job, me="A", host="elsewhere")
    assert other.try_take()
    first.job.storage.write_bytes("segments/000000-abc.nut", b"chunk")
    spec_before = first.job.storage.read_bytes("job.json")
    submit_before = first.job.storage.read_bytes("submit.json")
    again = open_job(_cfg(tmp_path, out="other.mkv", restart=True))
    assert not again.owner.owned and again.owner.holder.owner == "A"
    assert first.job.storage.read_bytes("segments/000000-abc.nut") == b"chunk"
    assert first.job.storage.read_bytes("job.json") == spec_before
    assert first.job.storage.read_bytes("submit.json") == submit_before
    other.release()


def test_a_follower_whose_owner_died_mid_mux_takes_over(tmp_path):
    """The owner's machine dies while it muxes (the ledger says "muxing" for ever): the follower
    does not wait for ever; once the owner record goes stale it takes the job (to mux itself)."""
    p = open_job(_cfg(tmp_path))
    p.owner.release()
    job = p.job
    dead = Ownership(job, me="A", host="elsewhere", ttl_s=0.3)
    assert dead.try_take()
    dead._stop.set()  # its machine is gone: no more renewals
    job.write_ledger({"state": "muxing", "reason": None, "shards": [[s.start, s.stop] for s in p.spec.shards()], "done": {}})
    follower = Ownership(job, me="B", host="hostB", ttl_s=0.3)
    t = time.monotonic()
    assert follow(follower, job, ProgressTracker(job.job_id), lambda: False, poll_s=0.05) is False
    assert follower.owned and time.monotonic() - t < 5
    follower.release()


def test_a_second_submit_with_another_output_never_reports_a_file_nobody_wrote(tmp_path):
    """Submit A writes a.mkv; submit B of the same job with -o b.mkv followed it. When A is done,
    B does not report b.mkv as done (nobody wrote it): it takes the job over to write b.mkv."""
    p = open_job(_cfg(tmp_path, out="b.mkv"))
    p.owner.release()
    job = p.job
    owner_a = Ownership(job, me="A", host="elsewhere")
    assert owner_a.try_take()
    job.write_ledger({"state": "done", "reason": None, "shards": [[s.start, s.stop] for s in p.spec.shards()], "done": {}})
    follower = Ownership(job, me="B", host="hostB")
    threading.Timer(0.3, owner_a.release).start()  # A finishes and hands the job back
    assert follow(follower, job, ProgressTracker(job.job_id), lambda: os.path.exists(tmp_path / "b.mkv"), poll_s=0.05) is False
    assert follower.owned
    follower.release()
