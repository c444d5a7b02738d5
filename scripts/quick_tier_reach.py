"""Which farm modules the quick test tier leaves unexercised.

Runs ``pytest -m "not slow"`` under coverage.py, measuring the test processes and the Python
processes they start (xdist workers, `farm` CLI subprocesses, encoder processes), and lists each
farm module in which no line inside a function ran: importing a module runs its top level, so only
code in a function body counts as reached. Exits 1 when any module is listed.

Ray's worker processes are not counted: Ray kills them at shutdown before coverage.py can write
their data. A module whose code the quick tier runs only inside a Ray actor is therefore listed
too, so an empty list is a true answer and a listed module is one to check.

    .venv/bin/python scripts/quick_tier_reach.py            # the quick tier, as the README runs it
    .venv/bin/python scripts/quick_tier_reach.py -- -q tests/video   # any other pytest arguments
    .venv/bin/python scripts/quick_tier_reach.py --report reach.json  # keep coverage.py's JSON report

Needs the test extras (``bash scripts/setup.sh --test``), which include coverage.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unreached(report: dict) -> tuple[list[str], list[str]]:
    """(modules with functions none of which ran a line, modules with no function at all)."""
    missed, bare = [], []
    for path, entry in sorted(report["files"].items()):
        bodies = [f for name, f in entry["functions"].items() if name]  # "" is the module's top level
        if not bodies:
            bare.append(path)
        elif not any(f["summary"]["covered_lines"] for f in bodies):
            missed.append(path)
    return missed, bare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", help="also keep coverage.py's JSON report here")
    parser.add_argument("pytest_args", nargs="*", default=["-q", "-n", "2", "-m", "not slow", "-p", "no:cacheprovider"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="farm-reach-") as work:
        config = os.path.join(work, "coveragerc")
        with open(config, "w") as f:
            f.write("[run]\n"
                    "source_pkgs = farm\n"
                    "parallel = true\n"
                    f"data_file = {os.path.join(work, 'data', 'coverage')}\n"
                    # _exit: a process that leaves with os._exit still writes its data.
                    "patch = subprocess, _exit\n")
        os.makedirs(os.path.join(work, "data"))

        def coverage(command: str, *rest: str, check: bool = True) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "coverage", command, f"--rcfile={config}", *rest], cwd=ROOT, check=check)

        tests = coverage("run", "-m", "pytest", *args.pytest_args, check=False)
        coverage("combine", "-q")
        out = os.path.join(work, "report.json")
        coverage("json", "-q", "-o", out)
        with open(out) as f:
            report = json.load(f)
        if args.report:
            shutil.copyfile(out, args.report)
    missed, bare = unreached(report)
    measured = len(report["files"])
    print(f"{measured} farm modules measured; tests exited {tests.returncode}")
    for path in bare:
        print(f"  no functions (import only): {os.path.relpath(path, ROOT)}")
    for path in missed:
        print(f"  NOT REACHED: {os.path.relpath(path, ROOT)}")
    print(f"{len(missed)} of {measured - len(bare)} modules with functions not reached")
    return 1 if missed or tests.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
