"""The `farm tune` profile, applied to a ``farm submit``: the profile's speed settings for this
machine's device and the input's size class, for each option the user did not give."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from farm.config import JobConfig

if TYPE_CHECKING:
    from farm.media import SourceInfo


def apply_tuned(cfg: JobConfig, ctx: click.Context, echo=lambda line: click.echo(line, err=True)) -> tuple[JobConfig, SourceInfo | None]:
    """``cfg`` with the `farm tune` profile's settings for this machine's device and the input's
    size, for each speed option the user did not set (says which it took); and the input's probe
    when one was needed for its size (the submit's preflight takes it, rather than probe again)."""
    import dataclasses as dc

    from farm.sampling.tune import lookup, profile_path

    if ctx.params.get("address") or not os.path.exists(profile_path()):
        return cfg, None
    from farm.video.probe import probe

    source = probe(cfg.input)
    found = lookup(local_device_name(cfg.model.device), source.width, source.height)
    if found is None:
        return cfg, source
    entry, label = found
    unset = lambda name: ctx.get_parameter_source(name) in (click.core.ParameterSource.DEFAULT, None)  # noqa: E731
    model, taken = cfg.model, []
    changes: dict[str, Any] = {}
    if unset("batch") and entry.get("batch"):
        changes["batch_frames"] = int(entry["batch"])
        taken.append(f"batch {entry['batch']}")
    if "threads" in entry:
        if unset("workers"):
            changes["workers"] = int(entry["workers"])
            taken.append(f"{entry['workers']} workers x {entry['threads']} threads")
    elif unset("gpus_per_worker"):
        changes["gpus_per_worker"] = 1 / float(entry["workers"])
        taken.append(f"{entry['workers']} workers per GPU")
    if "threads" not in entry and unset("fp16") and entry.get("precision"):
        model = dc.replace(model, precision=entry["precision"])
        taken.append(entry["precision"])
    if unset("compile_model") and entry.get("compile"):
        model = dc.replace(model, compile=True)
        taken.append("--compile")
    if unset("tile") and entry.get("tile"):
        model = dc.replace(model, tile=int(entry["tile"]))
        taken.append(f"tile {entry['tile']}")
    if not taken:
        return cfg, source
    echo(f"using `farm tune`'s settings for {label} from {profile_path()}: {', '.join(taken)} (options given override them)")
    return dc.replace(cfg, model=model, tuned_from=label, **changes), source


def local_device_name(device: str) -> str:
    """The device a local job's workers use, by name ("cpu" or the CUDA device's)."""
    if device == "cpu":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
