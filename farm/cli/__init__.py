"""The ``farm`` command line: the group (base), the job commands, and the machine set-up commands."""

from farm.cli import commands, plan, setup  # noqa: F401  (each registers its commands on the group)
from farm.cli.base import main

__all__ = ["main"]
