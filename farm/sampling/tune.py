"""``farm tune``: measure, on a sample of the user's own video, the settings that change speed and not
output, and keep the fastest in a profile (``tune.toml``) that the next ``farm submit`` uses.
Encoder threads are not tuned: a chunk redone on another node must be byte-identical."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from farm.errors import UsageError
from farm.plan import cpu_plan
from farm.receipt import Receipt

log = logging.getLogger(__name__)

#: Two candidates within this share of each other's speed are a tie; the earlier (simpler) wins.
TIE = 0.03


@dataclass(frozen=True, slots=True)
class Candidate:
    """One combination of speed settings."""

    workers: int  # CPU: workers on the machine; CUDA: workers per GPU (--gpus-per-worker 1/workers)
    threads: int | None  # torch threads per CPU worker (None on CUDA)
    batch: int  # frames per model call
    precision: str = "fp32"
    compile: bool = False
    tile: int = 0

    def label(self) -> str:
        parts = [f"{self.workers:g} worker{'s' if self.workers != 1 else ''}" + (f" x {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else " per GPU")]
        parts.append(f"batch {self.batch}")
        if self.threads is None:
            parts.append(self.precision)
        if self.compile:
            parts.append("compiled")
        if self.tile:
            parts.append(f"tile {self.tile}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Measured:
    candidate: Candidate
    fps: float | None  # frames per second of the machine (all its workers); None when it failed
    error: str | None = None
    stages: Stages | None = None  # where each worker's time went, from the timed shards' receipts


@dataclass(frozen=True, slots=True)
class Stages:
    """One worker's frames per second in each stage of its pipeline (the decode, enhance and encode
    threads run at once, so the slowest thread bounds it; the enhance thread is the networks on the
    device, with their transfers, plus the host's share: faces' alignment and paste-back, resizes
    on a CPU path)."""

    decode_fps: float | None  # None: a stage that took no measurable time
    networks_fps: float | None  # None also: an enhancer that does not report its device time
    host_fps: float | None
    enhance_fps: float | None
    encode_fps: float | None

    @classmethod
    def from_receipts(cls, receipts: Sequence[Receipt]) -> Stages:
        frames = sum(r.output_frames for r in receipts)
        timings = [r.timings or {} for r in receipts]
        total = {k: sum(t.get(k, 0.0) for t in timings) for k in ("decode_s", "enhance_s", "encode_s")}
        model = sum(t["model_s"] for t in timings) if all("model_s" in t for t in timings) else None
        rate = lambda seconds: frames / seconds if seconds > 1e-6 else None  # noqa: E731
        return cls(rate(total["decode_s"]), rate(model) if model is not None else None,
                   rate(total["enhance_s"] - model) if model is not None else None, rate(total["enhance_s"]), rate(total["encode_s"]))

    def bound(self) -> str:
        """Which stage holds the worker back, in words."""
        threads = [(v, name) for v, name in ((self.decode_fps, "the decode"), (self.enhance_fps, "the enhance thread"),
                                             (self.encode_fps, "the encode")) if v is not None]
        thread = min(threads)[1] if threads else "nothing measurable"
        if thread == "the enhance thread" and self.networks_fps is not None and self.host_fps is not None:
            return "the networks (the device)" if self.networks_fps <= self.host_fps else "the host's share of the enhance thread (CPU)"
        return thread

    def line(self) -> str:
        fps = lambda v: f"{v:.1f}" if v is not None else "-"  # noqa: E731
        inner = f" = networks {fps(self.networks_fps)} fps + host {fps(self.host_fps)} fps" if self.networks_fps is not None else ""
        return (f"per worker: decode {fps(self.decode_fps)} fps, enhance {fps(self.enhance_fps)} fps{inner}, "
                f"encode {fps(self.encode_fps)} fps; bound by {self.bound()}")


def size_class(width: int, height: int) -> str:
    """Input size classes a profile is keyed by: thumb (< 0.1 Mpx), sd (to 720x576), hd (to
    1920x1080), uhd."""
    pixels = width * height
    for name, limit in (("thumb", 100_000), ("sd", 720 * 576), ("hd", 1920 * 1080)):
        if pixels <= limit:
            return name
    return "uhd"


def default_candidate(device: str, cpus: int, height: int, width: int) -> Candidate:
    """What ``farm submit`` runs without a profile or options (the worker pool's CPU plan, the
    enhancer's batch rule, fp16 on CUDA)."""
    from farm.enhance.upscale import batch_for

    batch = batch_for(device, height, width)
    if device == "cuda":
        return Candidate(1, None, batch, "fp16")
    return Candidate(*cpu_plan(cpus), batch)


def candidates(device: str, cpus: int, height: int, width: int, compile: bool = False) -> list[Candidate]:
    """The settings to measure, the default first."""
    out = [default_candidate(device, cpus, height, width)]
    if device == "cuda":
        for workers in (1, 2):
            for batch in (1, 2, 4, 8):
                if batch > 1 and batch * height * width > 4_000_000:
                    continue
                for precision in ("fp16", "fp32"):
                    out.append(Candidate(workers, None, batch, precision))
        if compile:
            out.append(Candidate(1, None, 1, "fp16", compile=True))
    else:
        for n in sorted({1, 2, cpus // 2, cpus} - {0}):
            if n > cpus:
                continue
            for batch in (1, 2):
                out.append(Candidate(n, max(1, cpus // n), batch))
    return list(dict.fromkeys(out))


def choose(measured: Sequence[Measured]) -> tuple[Measured, str]:
    """The fastest candidate (ties to the earlier one), and why, in one line."""
    ok = [m for m in measured if m.fps]
    if not ok:
        raise UsageError("no setting could be measured: " + "; ".join(f"{m.candidate.label()}: {m.error}" for m in measured))
    best = ok[0]
    for m in ok[1:]:
        if m.fps > best.fps * (1 + TIE):  # type: ignore[operator]
            best = m
    default = measured[0]
    if best is default or not default.fps:
        why = f"{best.candidate.label()} is the fastest measured ({best.fps:.3f} fps)"
        if best is default:
            why += "; it is the default, so the profile only records it"
    else:
        why = (f"{best.candidate.label()}: {best.fps:.3f} fps, {best.fps / default.fps:.2f}x the default "  # type: ignore[operator]
               f"({default.candidate.label()}: {default.fps:.3f} fps)")
    return best, why


Runner = Callable[[Candidate], float]


def measure(cands: Sequence[Candidate], run: Runner) -> list[Measured]:
    """Run each candidate; one that fails (out of memory, say) is kept with its error."""
    from farm.errors import FarmError

    out = []
    for c in cands:
        t = time.perf_counter()
        try:
            fps = run(c)
            receipts = getattr(run, "receipts", {}).get(c)
            out.append(Measured(c, fps, stages=Stages.from_receipts(receipts) if receipts else None))
            log.info("%s: %.3f fps (%.1f s)", c.label(), fps, time.perf_counter() - t)
        except (FarmError, RuntimeError, MemoryError) as exc:
            out.append(Measured(c, None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return out


# ----------------------------------------------------------------------------------------------
# The profile


def profile_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "farm", "tune.toml")


def profile_key(device_name: str, width: int, height: int) -> tuple[str, str]:
    return device_name, size_class(width, height)


def read_profile(path: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """``{device name: {size class: settings}}``; empty when there is no profile."""
    path = path or profile_path()
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        text = f.read().decode()
    try:
        import tomllib
    except ImportError:  # Python 3.10: the profile is simple enough to read without a library
        return _read_simple(text)
    return tomllib.loads(text)


def _read_simple(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    import json

    out: dict[str, dict[str, dict[str, Any]]] = {}
    table: dict[str, Any] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r'\[(".*?")\.(\w+)\]', line)
        if header:
            table = out.setdefault(json.loads(header[1]), {}).setdefault(header[2], {})
        elif table is not None and "=" in line:
            key, _, value = (p.strip() for p in line.partition("="))
            table[key] = json.loads(value)
    return out


def write_profile(entry: dict[str, Any], device_name: str, klass: str, path: str | None = None) -> str:
    """Set one profile entry (other devices' and sizes' entries are kept); returns the path."""
    path = path or profile_path()
    data = read_profile(path)
    data.setdefault(device_name, {})[klass] = entry
    lines = ["# written by `farm tune`: the fastest measured speed settings per device and input size;",
             "# `farm submit` uses them for options it is not given. Delete a table to forget it."]
    import json

    for device in sorted(data):
        for k in sorted(data[device]):
            lines.append(f"\n[{json.dumps(device)}.{k}]")
            for key, value in data[device][k].items():
                lines.append(f"{key} = {json.dumps(value)}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def entry_for(best: Measured, why: str, input_name: str) -> dict[str, Any]:
    c = best.candidate
    entry: dict[str, Any] = {"workers": c.workers, "batch": c.batch, "precision": c.precision, "compile": c.compile, "tile": c.tile}
    if c.threads is not None:
        entry["threads"] = c.threads
    entry.update({"fps": round(best.fps or 0.0, 4), "why": why, "input": input_name, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return entry


def lookup(device_name: str, width: int, height: int, path: str | None = None) -> tuple[dict[str, Any], str] | None:
    """The profile's entry for this device and input size, with a label ``device/class``."""
    klass = size_class(width, height)
    entry = read_profile(path).get(device_name, {}).get(klass)
    return (entry, f"{device_name}/{klass}") if entry else None


def as_candidate(entry: dict[str, Any]) -> Candidate:
    fields = {f.name for f in dataclasses.fields(Candidate)}
    return Candidate(**{k: v for k, v in entry.items() if k in fields})


class TuneSample:
    """The scratch jobs a tune measures on: ``cfg``'s job prepared as ``farm submit`` prepares it
    (once per precision/compile/tile variant) in a temporary jobs root, and the sample shards (a
    warm-up, then shards spread through the video, each cut to ``sample_frames``)."""

    def __init__(self, cfg, sample_frames: int, make_runner: Callable[..., Runner], device_name: str) -> None:
        self.cfg, self.sample_frames, self.make_runner = cfg, sample_frames, make_runner
        self.device_name = device_name  # the profile's key: what `farm submit` looks up
        self.device = "cpu" if device_name == "cpu" else "cuda"
        self.variants: dict[tuple, Any] = {}

    def __enter__(self) -> TuneSample:
        import tempfile

        from farm.sampling.estimate import sample_shards

        self.root = tempfile.mkdtemp(prefix="farm-tune-")
        first = self._prepare(self.cfg.model)
        source = first.spec.source
        self.width, self.height = source.width, source.height
        self.klass = size_class(self.width, self.height)
        self.cpus = os.cpu_count() or 1
        self.shards = sample_shards(first, count=8, frames=self.sample_frames)
        return self

    def __exit__(self, *exc) -> None:
        import shutil

        for prepared in self.variants.values():  # stop their renewals before the folder they write to goes
            prepared.owner.release()
        shutil.rmtree(self.root, ignore_errors=True)

    def _prepare(self, model):
        from farm.job import open_job

        # "auto" is the device's precision (fp16 on CUDA): the same job as that candidate's.
        precision = model.precision if model.precision != "auto" else ("fp16" if self.device == "cuda" else "fp32")
        key = (precision, model.compile, model.tile)
        if key not in self.variants:
            cfg = dataclasses.replace(self.cfg, model=model, jobs_root=self.root, restart=True)
            self.variants[key] = open_job(cfg)
        return self.variants[key]

    def prepared_for(self, c: Candidate):
        return self._prepare(dataclasses.replace(self.cfg.model, precision=c.precision, compile=c.compile, tile=c.tile))

    def runner(self) -> Runner:
        return self.make_runner(self.prepared_for, self.shards, self.device, self.cpus)
