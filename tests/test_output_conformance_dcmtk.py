"""Independent tools read our output: dcmtk's dcmdump parses every file, and dicom3tools'
dciodvfy finds no IOD error in the output that the input did not already have."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from .conftest import EXAMPLE_PROTOCOL, integration_tool, run_cli

pytestmark = pytest.mark.integration


def _errors(dciodvfy: str, path: Path) -> set[str]:
    result = subprocess.run(
        [dciodvfy, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    lines = (result.stdout + result.stderr).splitlines()
    return {re.sub(r"\s+", " ", line) for line in lines if line.startswith("Error")}


def test_every_output_parses_in_dcmtk_and_adds_no_iod_errors(
    study: Path, tmp_path: Path, key_file: Path
) -> None:
    dcmdump = integration_tool("dcmdump")
    dciodvfy = integration_tool("dciodvfy")
    out = tmp_path / "out"
    result = run_cli(
        "anonymise",
        study,
        out,
        "--key-file",
        key_file,
        "--json",
        "--protocol",
        EXAMPLE_PROTOCOL,
        "--site",
        "RXH",
    )
    assert json.loads(result.stdout)["written"] == 11
    inputs = {
        dcmread(p).Modality: p for p in study.rglob("*") if p.is_file() and p.suffix != ".txt"
    }
    for path in sorted(out.rglob("*.dcm")):
        dump = subprocess.run(
            [dcmdump, "-q", str(path)], check=False, capture_output=True, text=True, timeout=60
        )
        assert dump.returncode == 0, dump.stderr
        assert "PatientIdentityRemoved" in dump.stdout or "(0012,0062) CS [YES]" in dump.stdout
        modality = dcmread(path, stop_before_pixels=True).Modality
        new_errors = _errors(dciodvfy, path) - _errors(dciodvfy, inputs[modality])
        assert new_errors == set(), f"{modality}: {sorted(new_errors)}"
