"""The README's run command: `uploader demo` runs the whole pipeline and says it passed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_cli

pytestmark = pytest.mark.integration  # runs the `uploader demo` command


def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    result = run_cli("demo", "--workdir", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "demo passed" in result.stdout
    assert "anonymised   study -> uploaded" in result.stdout
    outcome = json.loads((tmp_path / "pipeline" / "demo-result.json").read_text())
    assert outcome == {"files": 11, "verify_rc": 0}
    repository = tmp_path / "pipeline" / "repository"
    for path in repository.rglob("*.dcm"):
        data = path.read_bytes()
        assert b"9434765919" not in data and "MÜLLER".encode("latin-1") not in data
    # it says where it left its files and how large they are, and they are small
    size = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) / (1 << 20)
    assert f"rm -r {tmp_path}" in result.stdout and "MiB of sample data" in result.stdout
    assert size < 50, f"the demo left {size:.0f} MiB"
