"""A submit's inputs as one (input, output) pair per source file: files, folders (their video files,
not recursive) and globs, local or on fsspec storage, with ``-o`` as an output template. Writes nothing."""

from __future__ import annotations

import fnmatch
import os
import string
from dataclasses import dataclass
from typing import Sequence

from farm.errors import InputError, UsageError
from farm.storage.fs import TMP_MARK, Storage, is_url, normalize, split_location

#: What a folder's video files end with (case does not matter).
VIDEO_EXTENSIONS = ("mp4", "m4v", "mkv", "mov", "avi", "mpg", "mpeg", "ts", "m2ts", "mts", "vob", "dv", "webm", "wmv", "flv", "3gp",
                    "ogv", "mxf", "y4m")
#: The names an output template may use.
PLACEHOLDERS = ("stem", "name", "ext", "parent")


@dataclass(frozen=True, slots=True)
class BatchItem:
    input: str  # one source file, normalized
    output: str  # its output, from the template


def is_pattern(arg: str) -> bool:
    return any(c in arg for c in "*?[")


def expand_inputs(args: Sequence[str], output: str, codec: str = "x264") -> list[BatchItem]:
    """One item per source file, in the order of ``args`` (each folder's and glob's files sorted by
    name; a glob's wildcards in its last part only; a file reached twice counts once, where it came first).
    Folders and globs skip hidden names, farm's ``.tmp-`` files, and files that are another input's
    output (a folder resubmitted with its outputs inside it).

    ``output`` may name each output with ``{stem}`` (the file name without extension), ``{name}``,
    ``{ext}`` and ``{parent}`` (the input's folder's name). An existing folder, or a name ending in
    ``/``, means ``<folder>/{stem}_x4.mkv`` (``<folder>/{stem}_x4/`` with ``--codec png``). A single
    plain file with no placeholder keeps the plain meaning: ``output`` is its output.

    Raises:
        InputError: an argument matching no file (a folder with no video file).
        UsageError: several inputs with no placeholder, an unknown placeholder, two inputs sharing
            an output, or an output that is one of the inputs.
    """
    files: list[str] = []
    listed: set[str] = set()  # found in a folder or by a glob, not named
    for arg in args:
        found = _files(arg)
        if len(found) > 1 or is_pattern(arg) or _is_dir(arg):
            listed.update(found)
        for f in found:
            if f not in files:
                files.append(f)
    template = _template(output, codec)
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        raise UsageError(f"-o uses {{{unknown[0]}}}; an output template knows {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    if not names and (len(files) > 1 or any(is_pattern(a) or _is_dir(a) for a in args)):
        raise UsageError("-o must name each output: use a template such as 'out/{stem}_x4.mkv'")
    outputs = {_output(template, f) for f in files}
    # Resubmitting `season1/ -o 'season1/{stem}_x4.mkv'` finds last run's outputs in the folder:
    # they are outputs, not new inputs.
    files = [f for f in files if not (f in listed and f in outputs)]
    items: list[BatchItem] = []
    seen: dict[str, str] = {}
    for f in files:
        out = _output(template, f)
        if out in files:
            raise UsageError(f"the output of {f} is {out}, one of the inputs; pick another -o")
        if out in seen:
            raise UsageError(f"{seen[out]} and {f} would both write {out}; add {{parent}} or {{name}} to -o")
        seen[out] = f
        items.append(BatchItem(f, out))
    return items


def _output(template: str, f: str) -> str:
    parent, name = split_location(f)
    stem, ext = os.path.splitext(name)
    return normalize(template.format(stem=stem, name=name, ext=ext.lstrip("."), parent=os.path.basename(parent.rstrip("/"))))


def _template(output: str, codec: str) -> str:
    if output.endswith("/") or (not is_url(output) and os.path.isdir(output) and codec != "png"):
        return output.rstrip("/") + ("/{stem}_x4/" if codec == "png" else "/{stem}_x4.mkv")
    return output


def _is_dir(arg: str) -> bool:
    return not is_pattern(arg) and _isdir(Storage(normalize(arg)))


def _listed(name: str) -> bool:
    """A folder's or glob's file that counts: not hidden (a Mac's ``._ep1.vob``), not a write under
    way (a ``.tmp-`` name of farm's own)."""
    return not name.startswith(".") and TMP_MARK not in name


def _isdir(storage: Storage) -> bool:
    return bool(storage.fs.isdir(storage.root))


def _files(arg: str) -> list[str]:
    location = normalize(arg)
    if is_pattern(arg):
        parent, pattern = split_location(location)
        storage = Storage(parent)
        found = [f"{parent}/{n}" for n in storage.list() if fnmatch.fnmatchcase(n, pattern) and _listed(n) and not storage.fs.isdir(f"{storage.root}/{n}")]
        if not found:
            raise InputError(f"{arg} matches no file; check the pattern (quote it so that the shell does not expand it)")
        return found
    storage = Storage(location)
    if _isdir(storage):
        found = [f"{location}/{n}" for n in storage.list() if n.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS and "." in n and _listed(n)]
        if not found:
            raise InputError(f"folder {arg} holds no video file (looked for .{', .'.join(VIDEO_EXTENSIONS)})")
        return found
    if not storage.fs.exists(storage.root):
        raise InputError(f"input {arg} does not exist; check the path")
    return [location]
