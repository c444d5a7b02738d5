"""Opening a source for demuxing, local or on fsspec storage, with every failure turned into one
clear InputError."""

from __future__ import annotations

import contextlib
from typing import Iterator

import av

from farm.errors import InputError
from farm.storage.fs import open_location


@contextlib.contextmanager
def open_input(location: str) -> Iterator[av.container.InputContainer]:
    """Open a source for demuxing, turning every failure into one clear InputError."""
    try:
        target = open_location(location)
    except FileNotFoundError:
        raise InputError(f"input {location} does not exist; check the path") from None
    try:
        container = av.open(target, "r")
    except FileNotFoundError:
        raise InputError(f"input {location} does not exist; check the path") from None
    except IsADirectoryError:
        raise InputError(f"input {location} is a directory, not a video file") from None
    except PermissionError:
        raise InputError(f"input {location} is not readable; check its permissions") from None
    except av.error.FFmpegError as exc:
        raise InputError(
            f"input {location} is not a video farm can read ({error_reason(exc)}); if it should be one, it is damaged"
        ) from None
    try:
        yield container
    finally:
        container.close()
        if not isinstance(target, str):
            target.close()


def error_reason(exc: av.error.FFmpegError) -> str:
    return getattr(exc, "strerror", None) or str(exc)
