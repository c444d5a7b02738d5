"""The package's type annotations hold: mypy (the settings in pyproject.toml) finds no error in
``farm/``. A signature that says ``FrameIndex`` while a caller may pass None is a crash waiting
for the input that takes that path."""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_mypy_finds_no_error_in_the_package(tmp_path):
    from mypy import api

    out, err, status = api.run(["--cache-dir", str(tmp_path / "mypy"), "--config-file", os.path.join(ROOT, "pyproject.toml"),
                                os.path.join(ROOT, "farm")])
    assert status == 0, out + err
    assert out.startswith("Success: no issues found"), out
