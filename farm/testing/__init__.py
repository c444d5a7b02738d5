"""Test tools shipped with farm, so the whole pipeline (Ray included) runs on a CPU in seconds and the
real model code paths run with small random weights of the real architectures: fakes behind the
seams (fakes), synthetic clips (clips, legacy), random weights (weights), a local multi-node Ray
cluster (cluster). Production code never imports this package."""

from farm.testing.clips import *  # noqa: F401,F403
from farm.testing.fakes import *  # noqa: F401,F403
from farm.testing.legacy import *  # noqa: F401,F403
from farm.testing.mpeg4 import *  # noqa: F401,F403
from farm.testing.weights import *  # noqa: F401,F403
