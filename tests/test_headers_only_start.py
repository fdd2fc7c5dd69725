"""``uploader anonymise`` and ``uploader verify`` import pydicom without numpy, Pillow, requests
and tqdm (a third of its import time): the command still reads and writes every kind of
file, and the modules stay importable for anything else in the process."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pydicom
import pydicom.data

from .conftest import run_cli

CHILD = textwrap.dedent(
    """
    import io, sys
    from uploader.hardening import harden_process
    harden_process(headers_only=True)
    skipped = [m for m in ("numpy", "PIL", "requests", "tqdm") if m in sys.modules]
    from pydicom import dcmread
    ds = dcmread(sys.argv[1])
    ds.PatientName = "X"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    again = dcmread(io.BytesIO(out.getvalue()))
    assert again.PixelData == ds.PixelData and str(again.PatientName) == "X"
    import numpy, PIL, requests, tqdm  # still importable afterwards
    print("skipped-but-loaded:", skipped)
    """
)


def test_pydicom_reads_and_writes_without_the_pixel_and_download_modules() -> None:
    ct = pydicom.data.get_testdata_file("CT_small.dcm")
    got = subprocess.run(
        [sys.executable, "-c", CHILD, str(ct)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert "skipped-but-loaded: []" in got.stdout


def test_headers_only_changes_nothing_once_pydicom_is_imported() -> None:
    code = (
        "import numpy, pydicom; from uploader.hardening import harden_process; "
        "harden_process(headers_only=True); "
        "from pydicom.pixels.utils import HAVE_NP; assert HAVE_NP; print('ok')"
    )
    got = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.strip() == "ok"


def test_the_command_line_starts_lean_and_writes_valid_output(
    tmp_path: Path, key_file: Path
) -> None:
    """The real command, started lean: a compressed and two uncompressed files are written,
    their pixels unchanged, and the output verifies."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "rtdose.dcm"):
        path = pydicom.data.get_testdata_file(name)
        assert path is not None, name
        shutil.copy(path, src / name)
    out = tmp_path / "out"
    got = run_cli("anonymise", src, out, "--key-file", key_file, "--json")
    assert got.returncode == 0, got.stderr
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 3
    pixels = sorted(pydicom.dcmread(p).PixelData for p in written)
    assert pixels == sorted(pydicom.dcmread(p).PixelData for p in src.iterdir())
    verify = run_cli("verify", out)
    assert verify.returncode == 0, verify.stdout + verify.stderr
