"""The package's layers, held by a test: which room may import which, which third-party libraries
each room may touch, who may print, and no import cycles. A newcomer reads the design from
``farm/``'s folders; this test keeps the folders honest.

The imports are read from the source (every ``import``, at module level or inside a function: a
lazy import is still a dependency), so the test needs none of the libraries it polices."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The rooms, from the core out, and the rooms each may import (its own always allowed). Arrows run
#: one way: cli -> driver -> actors -> job -> preflight/doctor -> storage/video/enhance -> fs -> core.
#: ``job`` opens a job (identity, ownership, spec: it writes); ``preflight`` only checks.
#: ``fs`` is storage's lowest part (fsspec, atomic writes, hashing), read by video and the models.
LOW = {"core", "fs"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "fs": {"core"},
    "video": LOW,
    "enhance": LOW,
    "storage": LOW,
    "preflight": LOW | {"video", "storage"},
    "job": LOW | {"video", "enhance", "storage", "preflight"},
    "doctor": LOW | {"enhance", "storage"},
    "actors": LOW | {"video", "enhance", "storage", "doctor"},
    "driver": LOW | {"video", "enhance", "storage", "job", "actors"},
    # preview, estimate, tune: the job's own checks, decode, enhancer and workers on a sample
    "sampling": LOW | {"video", "enhance", "storage", "job", "actors"},
    # the demo command gets its real clip with the shipped test tools (farm.testing.footage)
    "cli": LOW | {"video", "enhance", "storage", "job", "doctor", "actors", "driver", "sampling", "testing"},
    "testing": LOW | {"video", "enhance", "storage", "preflight", "actors", "driver", "cli"},
    "top": LOW | {"driver", "cli"},
}
#: The test tools production code may use: clip makers, random weights and real footage (no fakes).
SHIPPED_MEDIA = ("farm.testing.clips", "farm.testing.weights", "farm.testing.footage")
#: Third-party libraries a room must not import (the core is pure: no I/O library at all).
FORBIDDEN: dict[str, set[str]] = {
    "core": {"av", "ray", "torch", "fsspec", "cv2", "click", "rich", "realesrgan", "gfpgan", "basicsr", "facexlib"},
    "video": {"ray", "torch", "realesrgan", "gfpgan", "basicsr", "facexlib", "click", "rich"},
    "enhance": {"av", "ray", "fsspec", "click", "rich"},
    "fs": {"av", "ray", "torch", "click", "rich"},
    "storage": {"ray", "torch", "click", "rich"},
    "preflight": {"ray", "click", "rich"},
    "job": {"ray", "click", "rich"},
    "doctor": {"ray", "click", "rich"},
    "actors": {"click", "rich"},
    "driver": {"click", "rich"},
    "sampling": {"ray", "click", "rich"},
}
#: Rooms that may import Ray: the thin actor shells and the driver (and the test cluster).
RAY_ROOMS = {"actors", "driver", "testing"}
#: Rooms that may print (click.echo, print, rich consoles, writes to stdout/stderr).
PRINTING_ROOMS = {"cli"}
CORE_MODULES = {"errors", "result", "config", "plan", "ledger", "media", "spec", "progress", "receipt", "lease", "events", "records", "recovery", "owner", "cost", "jobfiles", "queue"}


def room_of(module: str, imported: bool = False) -> str:
    """The room of a ``farm...`` module name. The package root, imported, is only its
    ``__version__`` (its other names are lazy), so it counts as core."""
    parts = module.split(".")
    if parts == ["farm"] and imported:
        return "core"
    if parts == ["farm"] or parts[1:] == ["__main__"]:
        return "top"
    if module == "farm.storage.fs":
        return "fs"
    head = parts[1]
    if head in CORE_MODULES:
        return "core"
    if head in ("session", "rayjob", "follow", "runner"):
        return "driver"
    if head in ("identity", "batch"):
        return "job"
    return head


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    imported: str  # module name (farm modules resolved to the deepest module that exists)
    line: int


def modules(package_dir: str, package: str = "farm") -> dict[str, str]:
    """Module name -> path, for every .py file of the package."""
    found = {}
    for dirpath, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), os.path.dirname(package_dir))
                mod = rel[:-3].replace(os.sep, ".")
                found[mod.removesuffix(".__init__")] = os.path.join(dirpath, name)
    return found


def imports(mods: dict[str, str]) -> list[Import]:
    out = []
    for mod, path in mods.items():
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [Import(mod, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                base = node.module
                named = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                out += [Import(mod, m, node.lineno) for m in named] or [Import(mod, base, node.lineno)]
    return out


def prints(mods: dict[str, str]) -> list[tuple[str, int, str]]:
    """(module, line, what) for every call that writes to the terminal."""
    found = []
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            what = None
            if isinstance(f, ast.Name) and f.id in ("print", "Console"):
                what = f.id
            elif isinstance(f, ast.Attribute):
                if f.attr in ("echo", "secho") or f.attr == "Console":
                    what = f.attr
                elif f.attr == "write" and isinstance(f.value, ast.Attribute) and f.value.attr in ("stdout", "stderr"):
                    what = f"{f.value.attr}.write"
            if what:
                found.append((mod, node.lineno, what))
    return found


def violations(package_dir: str) -> list[str]:
    """Every broken rule in the package at ``package_dir``, one line each."""
    mods = modules(package_dir)
    out = []
    for imp in imports(mods):
        src = room_of(imp.importer)
        top = imp.imported.split(".")[0]
        where = f"{mods[imp.importer]}:{imp.line}"
        if top == "farm":
            dst = room_of(imp.imported, imported=True)
            if dst != src and dst not in ALLOWED[src]:
                out.append(f"{where}: {src} imports {dst} ({imp.importer} -> {imp.imported})")
            if imp.imported.startswith("farm.testing") and src != "testing" and imp.imported not in SHIPPED_MEDIA:
                out.append(f"{where}: production code imports the test fakes ({imp.imported})")
        else:
            if top in FORBIDDEN.get(src, set()):
                out.append(f"{where}: {src} imports {top}")
            if top == "ray" and src not in RAY_ROOMS:
                out.append(f"{where}: {src} imports ray (only actors/ and the driver may)")
    for mod, line, what in prints(mods):
        if room_of(mod) not in PRINTING_ROOMS | {"testing"}:
            out.append(f"{mods[mod]}:{line}: {room_of(mod)} prints ({what}); only the CLI prints")
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(mods)]
    return out


def enclosing_packages(module: str) -> list[str]:
    """The packages whose ``__init__`` Python runs before ``module`` (``farm.cli.base``:
    ``farm.cli``), the root ``farm`` left out."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def cycles(mods: dict[str, str]) -> list[list[str]]:
    """Strongly connected groups of farm modules that import each other (Tarjan). Importing
    ``a.b.c`` runs ``a.b``'s ``__init__`` first, so it counts as importing that package too: an
    ``__init__`` that imports its own modules closes a cycle through any of them that imports a
    sibling. The package root is left out: everything imports it for ``__version__``, and it
    imports lazily, on first use."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for imp in imports(mods):
        for imported in [imp.imported, *enclosing_packages(imp.imported)]:
            if imported in mods and imported != imp.importer and "farm" not in (imp.importer, imported):
                graph[imp.importer].add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_farm_keeps_its_layers():
    """A contributor adds an import that runs against the design (the core loading PyAV, a video
    module reaching for the models, a print outside the CLI, a cycle): this test names the line."""
    assert violations(os.path.join(ROOT, "farm")) == []


def test_importing_the_core_loads_no_io_library():
    """Reading a job's settings, its plan or its ledger (e.g. `farm status` on a laptop) must not
    load PyAV, Ray, torch or fsspec: checked in a fresh interpreter, so lazy imports count too."""
    code = (
        "import sys; import farm.errors, farm.config, farm.plan, farm.ledger, farm.media, farm.spec; "
        "print(sorted(m for m in ('av', 'ray', 'torch', 'fsspec', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


BREAKS = {
    "core imports av": ("farm/config.py", "import av\n", "core imports av"),
    "core imports a video module": ("farm/plan.py", "from farm.video import probe\n", "core imports video"),
    "the job directory imports a video module": ("farm/storage/jobdir.py", "from farm.video import probe\n", "storage imports video"),
    "video imports the models": ("farm/video/decode.py", "from farm.enhance import upscale\n", "video imports enhance"),
    "video imports ray": ("farm/video/decode.py", "import ray\n", "video imports ray"),
    "models import a container library": ("farm/enhance/upscale.py", "import av\n", "enhance imports av"),
    "ray outside actors and driver": ("farm/storage/jobdir.py", "import ray\n", "storage imports ray (only actors/ and the driver may)"),
    "a print outside the CLI": ("farm/video/decode.py", "def f():\n    print('hi')\n", "only the CLI prints"),
    "production code imports the fakes": ("farm/actors/worker.py", "from farm.testing import fakes\n", "imports the test fakes"),
    "an import cycle": ("farm/video/index.py", "def f():\n    import farm.video.mux\n", "import cycle: "),
    "a package __init__ that imports its own modules": ("farm/cli/__init__.py", "from farm.cli import commands\n", "import cycle: farm.cli -> farm.cli.commands"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_rule_catches_its_break(tmp_path, name):
    """Each rule is checked by breaking it on purpose in a copy of the package: the check must name
    the break (a layering test that cannot fail protects nothing)."""
    path, code, expected = BREAKS[name]
    package = tmp_path / "farm"
    subprocess.run(["cp", "-r", os.path.join(ROOT, "farm"), str(package)], check=True)
    target = tmp_path / path
    with open(target, "a") as f:
        f.write("\n" + textwrap.dedent(code))
    found = violations(str(package))
    assert any(expected in line for line in found), found
