"""The ``farm`` command: the group with every command registered on it."""

from farm.cli import commands, plan, setup  # noqa: F401  (each registers its commands on the group)
from farm.cli.base import main

__all__ = ["main"]
