"""The ``farm`` command group. The CLI is the only part of farm that prints or exits: every FarmError
becomes one line on stderr and exit status 1; option errors exit 2 (click's convention)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from farm import __version__
from farm.errors import FarmError, UsageError

DEFAULT_WEIGHTS_DIR = os.path.join(os.path.expanduser("~"), ".cache", "farm", "weights")


def weights_dir_default() -> str:
    return os.environ.get("FARM_WEIGHTS_DIR", DEFAULT_WEIGHTS_DIR)


def jobs_root_default() -> str:
    return os.environ.get("FARM_JOBS_ROOT", os.path.join(os.getcwd(), ".farm-jobs"))


def _fail(exc: FarmError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(2 if isinstance(exc, UsageError) else 1)


class FarmCommand(click.Command):
    """Runs the command and turns FarmError into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FarmError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            click.echo("interrupted; run the same command again to resume where it stopped", err=True)
            sys.exit(130)


class FarmGroup(click.Group):
    command_class = FarmCommand
    group_class = type


@click.group(cls=FarmGroup)
@click.version_option(__version__, prog_name="farm")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """farm: upscale videos with Real-ESRGAN and restore faces with GFPGAN on every GPU of a Ray
    cluster; frame-exact, resumable, and unbroken by lost machines.

    \b
    Example:
      farm submit holiday.mp4 -o holiday_x4.mkv
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
