"""The enhance worker (a plain class; Ray wraps it when spawned), one model on one device: it decodes
only its shard, enhances, encodes a chunk in the job's output codec and commits it with a receipt.
Over 300 lines: start, progress reports and the shard's encode loop are one object's state."""

from __future__ import annotations

import functools
import logging
import os
import platform
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import ray

from farm.actors.first_frame import FirstFrameCheck
from farm.actors.metrics import WorkerMetrics
from farm.actors.pipeline import END, Pipeline
from farm.enhance.enhancer import Enhancer, build_enhancer, resolve_device
from farm.enhance.factories import Factories, resolve_factories
from farm.enhance.weights import check_node_weights
from farm.errors import FarmError, InputError, ProbeError, ShardGivenBack, StorageError
from farm.plan import output_sar
from farm.receipt import PartRecord, Receipt
from farm.storage.jobdir import JobDir
from farm.spec import JobSpec
from farm.video.decode import decode_shard
from farm.video.encode import ChunkWriter, chunk_settings
from farm.video.encode_process import SLOTS as ENCODER_SLOTS
from farm.video.encode_process import EncoderProcess, ProcessChunkWriter, shm_room
from farm.video.join import join_parts, shard_index
from farm.video.mux import ChunkRef

log = logging.getLogger(__name__)
T = TypeVar("T")  # what a written chunk becomes: a committed part's record, or the segment's (frames, description)

#: Frames buffered between the decode, enhance and encode stages.
QUEUE_FRAMES = 4


@dataclass
class ShardProgress:
    """What a worker is doing, for heartbeats and the live view."""

    shard: int | None = None
    frames: int = 0  # done in the current shard
    total: int = 0
    started: float = 0.0
    updated: float = field(default_factory=time.time)
    shards_done: int = 0
    frames_done: int = 0  # over the worker's life
    busy_s: float = 0.0  # time spent inside shards


class EnhanceWorker:
    """Turns shards of one job into committed segments."""

    def __init__(self, jobs_root: str, job_id: str, worker_id: str, device: str = "auto", threads: int | None = None,
                 factories: Factories | None = None, batch: int | None = None, encode_in_process: bool | None = None) -> None:
        # Loading happens in ready(), so that a failure reaches the driver as a clear FarmError.
        # ``factories``: the driver's (farm.enhance.factories); None, in this process, reads its registry.
        self.factories = factories
        self.worker_id, self.batch = worker_id, batch  # batch: frames per model call (None: by frame size)
        self.job = JobDir(jobs_root, job_id)
        self.requested_device = device
        self.threads = threads
        # Encode in a child process (farm.video.encode_process), out of this process's GIL: on CUDA,
        # where the model thread needs the GIL at GPU speed; on a CPU the model is the bound.
        self.encode_in_process = encode_in_process
        self._encoder_process: EncoderProcess | None = None
        self.enhancer: Enhancer | None = None
        self.progress_state = ShardProgress()
        self._lock = threading.Lock()
        self.node = _node_id()
        self.host = socket.gethostname()
        self.metrics = WorkerMetrics(job_id, self.node[:8], worker_id)
        # Set when the worker must leave (drain(), or SIGTERM: a spot node's notice): the shard in
        # progress stops at its next planned part boundary and is given back (ShardGivenBack).
        self._drain = threading.Event()
        self._busy = False
        self._install_sigterm()

    def __repr__(self) -> str:  # Ray shows it, once, in the dashboard's actor list
        return f"EnhanceWorker({self.worker_id} of job {self.job.job_id})"

    def _setup(self) -> Enhancer:
        self.spec: JobSpec = self.job.read_spec()
        model = self.spec.model
        factories = self.factories if self.factories is not None else resolve_factories(model)
        self.device = resolve_device(self.requested_device) if factories.needs_torch else "cpu"
        if self.threads and factories.needs_torch:
            import torch

            torch.set_num_threads(self.threads)
        # Weights come only from the weights dir, checked against the registry (once per node).
        check_node_weights(model, factories, node=f"{self.host} [{self.node[:8]}]")
        # the geometry the driver computed at submit, checked against the model loaded here
        if self.encode_in_process is None:
            self.encode_in_process = self.device == "cuda"
        enhancer = build_enhancer(model, self.spec.geometry_for, self.device, factories)
        if self.batch and hasattr(enhancer, "batch_frames"):
            enhancer.batch_frames = self.batch  # still halved after an out-of-memory, as the default
        return enhancer

    # -- health -----------------------------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        """Host, device and versions; checks the input and the job directory are reachable."""
        import av

        from farm.video.inputs import open_input

        if self.enhancer is None:
            self.enhancer = self._setup()
        try:
            with open_input(self.spec.source.location):
                pass
        except FarmError as exc:
            raise StorageError(f"worker {self.worker_id} on {self.host} cannot read the input: {exc}") from None
        self.job.check_writable(f"worker {self.worker_id} on {self.host}")
        info = {
            "worker": self.worker_id,
            "host": self.host,
            "node_id": self.node,
            "pid": os.getpid(),
            "python": platform.python_version(),
            "av": av.__version__,
        }
        info.update(self.enhancer.describe())
        return info

    # progress() has a thread of its own, so that it answers while run_shard() works (the driver's
    # heartbeat); run_shard() keeps one thread for all its calls. Giving the actor two threads for
    # everything instead (max_concurrency=2) made the same CPU forward passes about 25 % slower.
    @ray.method(concurrency_group="status")
    def progress(self) -> dict[str, Any]:
        with self._lock:
            p = self.progress_state
            return {
                "worker": self.worker_id,
                "shard": p.shard,
                "frames": p.frames,
                "total": p.total,
                "updated": p.updated,
                "shards_done": p.shards_done,
                "frames_done": p.frames_done,
                "busy_s": p.busy_s + (time.time() - p.started if p.shard is not None else 0.0),
            }

    # -- leaving ------------------------------------------------------------------------------------

    @ray.method(concurrency_group="status")
    def drain(self) -> bool:
        """Leave: finish the part in progress, commit it, give the shard back (the call running
        the shard raises :class:`~farm.errors.ShardGivenBack`) and take no more shards. Answers
        while a shard runs (the status thread); returns whether a shard was running."""
        self._drain.set()
        return self._busy

    def _install_sigterm(self) -> None:
        """Make SIGTERM (what a cloud sends a spot node's processes before taking it) a drain.

        In Ray 2.60 an actor's ``__init__`` runs in the process's main thread, and the worker's
        own handler (``ray._private.worker.Worker.main_loop``: SystemExit at once) is replaced
        here; Python runs the new one promptly even while a method runs in another thread
        (measured: 0.05 s). An idle worker still exits at once, through Ray's handler."""
        if threading.current_thread() is not threading.main_thread():
            return  # not an actor's process (a test's thread): drain() only
        try:
            previous = signal.getsignal(signal.SIGTERM)
        except ValueError:
            return

        def on_sigterm(signum, frame) -> None:
            if not self._busy and callable(previous):
                previous(signum, frame)
                return
            log.warning("worker %s got SIGTERM: giving its shard back at the next part boundary", self.worker_id)
            self._drain.set()

        if ray.is_initialized():  # only an actor's process: a plain process keeps its own handling
            signal.signal(signal.SIGTERM, on_sigterm)

    # -- work ---------------------------------------------------------------------------------------

    def run_shard(self, index: int, start: int, stop: int, attempt: int) -> Receipt:
        """Enhance source frames ``[start, stop)`` into a committed segment of output frames
        ``[k start, k stop)`` (k = 2 for ``--deinterlace double``, else 1); returns its receipt.

        A shard of several planned parts (:meth:`farm.spec.JobSpec.parts`) is encoded part by
        part, each part committed when done; parts an earlier attempt committed are reused (the
        decode starts at the first missing one), and at the end the parts are joined by packet
        copy into the one segment, whose bytes are therefore the same however many attempts
        made them. Asked to leave (:meth:`drain`, SIGTERM), the worker stops at the next part
        boundary and raises ShardGivenBack: at most the part in progress is lost.

        The input not readable here now (an automount gap, a network share that went away: the
        driver read it before any work) is a StorageError, retryable, not the input's fault.

        Raises:
            ShardGivenBack: the worker is leaving; the parts it finished are committed.
            FarmError: naming the shard and frame; the segment is not committed.
        """
        if self.enhancer is None:
            self.enhancer = self._setup()
        if self._drain.is_set():
            raise ShardGivenBack(f"shard {index} [{start}, {stop}): worker {self.worker_id} is leaving; it took no frames", 0)
        t0 = time.time()
        k = self.spec.frames_per_source_frame
        with self._lock:
            self._busy = True
            self.progress_state.shard, self.progress_state.frames, self.progress_state.total = index, 0, (stop - start) * k
            self.progress_state.started = self.progress_state.updated = t0
        token = uuid.uuid4().hex[:8]
        name = self.job.segment_name(index, token)
        scratch = self.job.scratch_segment(name)
        planned = self.spec.parts(start, stop)
        timings = {"decode_s": 0.0, "enhance_s": 0.0, "encode_s": 0.0}
        faces_before = getattr(self.enhancer, "faces_found", 0)
        model_before = getattr(self.enhancer, "model_s", None)
        reused: list[PartRecord] = []
        try:
            if len(planned) == 1:  # one part: the chunk is the segment, as before parts
                ((frames, video),) = self._encode(index, planned, lambda part: scratch, lambda path, part, w: (w.frames, w.info), timings)
            else:
                have = {(r.start, r.stop): r for r in self.job.parts(index)}
                for part in planned:
                    if part not in have:
                        break
                    reused.append(have[part])
                with self._lock:
                    self.progress_state.frames = k * sum(r.stop - r.start for r in reused)
                todo = planned[len(reused):]

                def commit(path: str, part: tuple[int, int], writer: Any) -> PartRecord:
                    return self.job.commit_part(path, index, part[0], part[1], writer.frames, writer.info)

                made = self._encode(index, todo, lambda part: self.job.scratch_part(index, *part), commit, timings) if todo else []
                frames, video = self._join(index, start, stop, reused + made, scratch)
            size, digest = self.job.commit_segment(scratch, name)
        except ShardGivenBack as exc:
            self.job.discard_scratch(scratch)
            kept = exc.frames_kept + sum(r.stop - r.start for r in reused)
            self._log_attempt(index, token, attempt, start, stop, t0, timings, given_back=kept, parts_reused=len(reused))
            raise ShardGivenBack(f"shard {index} [{start}, {stop}): {exc}; {kept} of its {stop - start} frames are kept in parts", kept) from None
        except FarmError as exc:
            self.job.discard_scratch(scratch)
            self._log_attempt(index, token, attempt, start, stop, t0, timings, error=str(exc))
            kind = StorageError if type(exc) in (InputError, ProbeError) else type(exc)  # see above
            raise kind(f"shard {index} [{start}, {stop}): {exc}") from None
        except OSError as exc:  # a read or write that failed below PyAV or fsspec: transient storage
            self.job.discard_scratch(scratch)
            self._log_attempt(index, token, attempt, start, stop, t0, timings, error=repr(exc))
            raise StorageError(f"shard {index} [{start}, {stop}) on {self.host}: {exc}") from None
        except Exception as exc:
            self.job.discard_scratch(scratch)
            self._log_attempt(index, token, attempt, start, stop, t0, timings, error=repr(exc))
            raise
        finally:
            self._finish_progress(t0)
        if len(planned) > 1:
            try:  # in the segment now; a part left behind is only disk, reused by nobody
                self.job.remove_parts(index)
            except (FarmError, OSError) as exc:
                log.warning("cannot remove the parts of shard %d: %s", index, exc)
        if model_before is not None:  # the enhance stage's time in the networks and transfers
            timings["model_s"] = getattr(self.enhancer, "model_s") - model_before
        faces = getattr(self.enhancer, "faces_found", 0) - faces_before
        receipt = Receipt(
            shard=index, start=start, stop=stop, segment=name,
            frames=stop - start,  # source frames, as the shard plan counts them
            output_frames=frames, bytes=size, sha256=digest, seconds=round(time.time() - t0, 3), faces=faces, video=video,
            worker=self.worker_id, node=self.node, host=self.host, attempt=attempt,
            timings={k: round(v, 3) for k, v in timings.items()},
        )
        self.job.write_receipt(name, receipt)
        self.metrics.shard_done(frames, time.time() - t0, faces, size)
        self._log_attempt(index, token, attempt, start, stop, t0, timings, receipt=receipt.to_json(), parts_reused=len(reused))
        with self._lock:
            self.progress_state.shards_done += 1
        return receipt

    def _join(self, index: int, start: int, stop: int, parts: list[PartRecord], scratch: str) -> tuple[int, dict[str, Any]]:
        """Join shard ``index``'s committed ``parts`` into the segment file ``scratch``."""
        k = self.spec.frames_per_source_frame
        refs = [ChunkRef(functools.partial(self.job.open_part, r), k * (r.start - start), k * (r.stop - start),
                         f"part [{r.start}, {r.stop}) of shard {index}", r.video) for r in parts]
        video = join_parts(refs, shard_index(self.spec.output_index, k * start, k * stop), scratch)
        return k * (stop - start), video

    def _encode(self, index: int, parts: list[tuple[int, int]], chunk_path: Callable[[tuple[int, int]], str],
                keep: Callable[[str, tuple[int, int], Any], T], timings: dict[str, float]) -> list[T]:
        """Decode, enhance and encode the consecutive ``parts`` of shard ``index``, one chunk each.

        Each part's chunk is written at ``chunk_path(part)``; once whole, ``keep(path, part,
        writer)`` says what it became (a committed part's record, or the segment's frames and
        description), and the result is those, one per part. A chunk that fails or ends short is
        removed. Asked to leave, the worker stops at the next part boundary and raises
        ShardGivenBack.

        A batch of frames never spans two parts, so every part is enhanced in the same batches
        wherever the decode started (a resumed shard's parts are the same bytes)."""
        source = self.spec.source
        k = self.spec.frames_per_source_frame
        out_index = self.spec.output_index  # the output's frames and times (two per frame for double)
        start, stop = parts[0][0], parts[-1][1]
        out_bounds = [k * a for a, _ in parts] + [k * stop]  # output frame numbers of the part boundaries

        def produce() -> Iterator:
            t = time.perf_counter()
            for item in decode_shard(source.location, source.video_stream, source.index, start, stop, high_bit_depth=source.high_bit_depth,
                                     colour=source.colour, deinterlace=self.spec.deinterlace, field_order=source.field_order):
                timings["decode_s"] += time.perf_counter() - t
                yield item
                t = time.perf_counter()

        results: list[T] = []
        short: list[str] = []  # a part that ended short of its frames

        def consume(next_item: Callable[[], Any]) -> None:
            first = next_item()
            if first is END:
                return
            number, pixels = first
            h, w = pixels.shape[:2]
            out = self.spec.out
            # Decided by the job alone (codec, frame size, the whole video's timing): every chunk
            # gets the same settings, so chunks concatenate and a redone chunk is identical.
            settings = chunk_settings(out.codec, out.crf, out.preset, out.pix_fmt, (w, h), pixels.dtype.itemsize > 1,
                                      out_index.pts, out_index.time_base, colour=source.colour,
                                      sample_aspect_ratio=output_sar(source.sample_aspect_ratio, self.spec.model.target, self.spec.model.square_pixels),
                                      encoder=self.spec.encoder)
            item = first
            for i, part in enumerate(parts):
                if item is END:
                    return  # stopped at a part boundary (a drain): the parts so far are committed
                path = chunk_path(part)
                try:
                    with self._chunk_writer(path, settings, pixels) as writer:
                        while item is not END and item[0] < out_bounds[i + 1]:
                            t = time.perf_counter()
                            writer.write(item[1], out_index.pts[item[0]])
                            timings["encode_s"] += time.perf_counter() - t
                            item = next_item()
                    if writer.frames != out_bounds[i + 1] - out_bounds[i]:
                        # the decode ended early: its error (raised by finish()) says why; else the count does
                        short.append(f"chunk holds {writer.frames} frames, expected {out_bounds[i + 1] - out_bounds[i]}")
                        self.job.discard_scratch(path)
                        return
                    results.append(keep(path, part, writer))
                except BaseException:
                    self.job.discard_scratch(path)
                    raise

        enhancer = self.enhancer
        assert enhancer is not None
        enhance_batch = getattr(enhancer, "enhance_batch", None)
        batch_size = getattr(enhancer, "batch_size", None)
        check = FirstFrameCheck(getattr(enhancer, "geometry", None), self.spec.model.sr_weights or self.spec.model.model) if start == 0 else None
        drained = False
        with Pipeline(produce, consume, QUEUE_FRAMES) as pipeline:
            expected = out_bounds[0]
            part = 0  # the part the next frame is in
            ended = False
            while not ended:
                while part + 1 < len(parts) and expected >= out_bounds[part + 1]:
                    part += 1
                if expected in out_bounds[1:-1] and self._drain.is_set():
                    drained = True  # leaving: the parts before this boundary are (being) committed
                    break
                batch: list = []
                # Frames of a batch go through the model together; the queue keeps the decoder ahead.
                want = batch_size(source.height, source.width) if batch_size else 1
                want = max(1, min(want, out_bounds[part + 1] - expected))  # never across a part boundary (1 at the end: END)
                while len(batch) < want:
                    item = pipeline.take()
                    if item is END:
                        ended = True
                        break
                    assert item[0] == expected + len(batch), f"decoder gave frame {item[0]}, expected {expected + len(batch)}"
                    batch.append(item)
                if not batch:
                    break
                numbers = [number for number, _ in batch]
                t = time.perf_counter()
                if enhance_batch is not None and len(batch) > 1:
                    outs = enhance_batch([frame for _, frame in batch], numbers)
                else:
                    outs = [enhancer.enhance(frame, number) for number, frame in batch]
                timings["enhance_s"] += time.perf_counter() - t
                if check is not None and not check.done:  # the job's first shard: before any frame is encoded
                    check.see([frame for _, frame in batch], outs, numbers)
                for number, out in zip(numbers, outs):
                    pipeline.give((number, out))
                expected += len(batch)
                with self._lock:
                    self.progress_state.frames += len(batch)
                    self.progress_state.frames_done += len(batch)
                    self.progress_state.updated = time.time()
            if check is not None and not drained:
                check.finish()
            pipeline.finish()
            if drained:
                kept = sum(b - a for a, b in parts[:len(results)])  # the parts committed so far
                raise ShardGivenBack(f"worker {self.worker_id} is leaving; it committed {len(results)} parts from frame {start}", kept)
        if short:
            raise StorageError(short[0])
        if len(results) != len(parts):
            raise StorageError(f"chunk holds 0 frames, expected {out_bounds[-1] - out_bounds[0]}" if len(parts) == 1
                               else f"{len(results)} of {len(parts)} parts encoded from frame {start}")
        return results

    def _chunk_writer(self, scratch: str, settings, first: Any) -> ChunkWriter | ProcessChunkWriter:
        """The chunk's writer: in the encoder process when this worker encodes out of process and
        /dev/shm holds its frame slots (else, with a warning, in this process)."""
        if self.encode_in_process:
            need = first.nbytes * ENCODER_SLOTS
            room = shm_room()
            if room is None or room >= 2 * need:
                if self._encoder_process is None:
                    self._encoder_process = EncoderProcess(ENCODER_SLOTS)
                return ProcessChunkWriter(scratch, settings, self._encoder_process)
            log.warning("/dev/shm has %d bytes free, the encoder process needs %d: encoding in the worker's process "
                        "(give the node a larger /dev/shm, docker: --shm-size)", room, need)
            self.encode_in_process = False
        return ChunkWriter(scratch, settings)

    def _finish_progress(self, t0: float) -> None:
        with self._lock:
            self._busy = False
            self.progress_state.busy_s += time.time() - t0
            self.progress_state.shard = None
            self.progress_state.updated = time.time()

    def _log_attempt(self, index: int, token: str, attempt: int, start: int, stop: int, t0: float, timings: dict, **extra) -> None:
        record = {
            "shard": index,
            "frames": [start, stop],
            "attempt": attempt,
            "worker": self.worker_id,
            "host": self.host,
            "node": self.node,
            "device": self.device,
            "started": round(t0, 3),
            "finished": round(time.time(), 3),
            "seconds": round(time.time() - t0, 3),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            **extra,
        }
        try:
            self.job.write_log(index, token, record)
        except FarmError as exc:  # a log that cannot be written must not fail finished work
            log.warning("cannot write the log of shard %d: %s", index, exc)


def _node_id() -> str:
    """The Ray node this runs on (several simulated nodes can share a host name)."""
    if ray.is_initialized():  # ray is imported above: this module is a Ray actor's
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()
