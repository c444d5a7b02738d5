#!/usr/bin/env bash
# Set up .venv/ at the repository root with farm and everything it needs.
#   scripts/setup.sh          the product
#   scripts/setup.sh --test   plus the test tools
# torch comes first: basicsr 1.4.2 ships only an sdist whose setup.py imports torch, so it is
# built without build isolation after torch. farm installs the torchvision shim basicsr needs at
# import time by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
python=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$python" -m venv .venv
# (the grep only hides a harmless warning about local package indexes; pip's status is kept)
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }
pip install --upgrade pip wheel setuptools
pip install torch==2.14.1 torchvision==0.29.1
pip install --no-build-isolation basicsr==1.4.2
pip install -e ".${extras}"
.venv/bin/python -c "import farm.enhance.enhancer as e; e.install_torchvision_shim(); import basicsr, realesrgan, gfpgan, facexlib, av, ray" \
  || { echo "setup failed: farm's dependencies do not import" >&2; exit 1; }
echo "farm is installed in .venv/ (try: .venv/bin/farm --help)"
