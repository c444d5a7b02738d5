"""A benchmark or chaos script starts its own Ray beside whatever else runs on the machine: it must
bind loopback only, live in a temp dir of its own, and turn token authentication off only when
the script asks."""

from __future__ import annotations

import os

import pytest

from farm.testing.rayenv import isolate_ray

KEYS = ("RAY_TMPDIR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")


@pytest.fixture
def clean_env(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_a_script_gets_its_own_temp_dir_on_loopback_with_auth_by_default(clean_env):
    tmp = isolate_ray("bench")
    assert os.path.isdir(tmp) and os.path.basename(tmp).startswith("farm-bench-ray-")
    assert {k: os.environ.get(k) for k in KEYS} == {"RAY_TMPDIR": tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                                                    "RAY_AUTH_MODE": None}
    os.rmdir(tmp)


def test_a_temp_dir_the_user_set_is_kept_and_auth_off_only_when_asked(clean_env, tmp_path):
    clean_env.setenv("RAY_TMPDIR", str(tmp_path))
    assert isolate_ray("scale", auth=False) == str(tmp_path)
    assert {k: os.environ.get(k) for k in KEYS} == {"RAY_TMPDIR": str(tmp_path), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                                                    "RAY_AUTH_MODE": "disabled"}
