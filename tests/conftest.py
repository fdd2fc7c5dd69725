"""Shared fixtures: a pinned site key, sample studies with planted identifiers, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from uploader.deid.engine import Settings
from uploader.deid.pseudonyms import Pseudonymiser
from uploader.runconfig import build_settings
from uploader.sample import Patient, write_study

KEY = bytes(range(32))
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PROTOCOL = ROOT / "protocols" / "example-prostate.yaml"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.key"
    path.write_text(KEY.hex() + "\n")
    return path


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A sample RT study (8 CT slices, RTSTRUCT, RTPLAN, RTDOSE) with planted PHI."""
    root = tmp_path / "in"
    write_study(root)
    return root


@pytest.fixture
def settings() -> Settings:
    return build_settings(KEY, None, "RXH")


@pytest.fixture
def protocol_settings() -> Settings:
    return build_settings(KEY, EXAMPLE_PROTOCOL, "RXH")


@pytest.fixture
def pseudo() -> Pseudonymiser:
    return Pseudonymiser(KEY)


def run_cli(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real ``uploader`` console script (a fresh process, as a user would)."""
    exe = Path(sys.executable).parent / "uploader"
    cmd = [str(exe), *map(str, args)]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(cmd, capture_output=True, text=True, check=check, env=env, timeout=300)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture
def patient() -> Patient:
    return Patient()


def integration_tool(name: str) -> str:
    """Return the path of a real peer tool; fail in CI when missing, skip elsewhere."""
    from shutil import which

    path = which(name)
    if path is None:
        message = f"{name} is not installed (./dev test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
