"""An attacker (or an odd scanner) sends values pydicom complains about: the complaint quotes the
value. De-identified in the worker processes of a large study, nothing of it may reach stderr
or the log: the workers are hardened like the node's main process, by the same function."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread

from identifiable_node.deidpool import MIN_PARALLEL
from uploader.sample import write_study

# Typed by an operator in lower case (not a valid CS value): the patient's name is cleaned out,
# the rest is kept and written, and pydicom's warning about the written value quotes it.
WARD = "ward7b"

pytestmark = pytest.mark.integration  # starts worker processes


def _plant(files: list[Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            ds = dcmread(path)
            ds.BodyPartExamined = f"{WARD} mueller"
            ds.save_as(path)


_SCRIPT = """
import logging, sys
from pathlib import Path
from pydicom import dcmread
from uploader.hardening import harden_process
from identifiable_node.deidpool import Task, run
from uploader.runconfig import build_settings

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
if sys.argv[3] == "node":
    harden_process()  # what the node's main process does; the workers must do it themselves
files = sorted(p for p in Path(sys.argv[1]).rglob("*") if p.is_file() and p.suffix != ".txt")
items = [(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID), p) for p in files]
task = Task(Path(sys.argv[2]), build_settings(bytes(range(32)), None, "RXH", None), "CT", None,
            None)
done = list(run(items, task, 2 if sys.argv[3] == 'node' else 1))
print(" ".join(sorted({d.status for d in done})), len(done))
"""


def test_a_warning_in_a_worker_process_quotes_no_value(tmp_path: Path) -> None:
    files = [p for p in write_study(tmp_path / "in", slices=MIN_PARALLEL + 2) if p.suffix != ".txt"]
    _plant(files)
    args = [sys.executable, "-c", textwrap.dedent(_SCRIPT), str(tmp_path / "in")]
    # unhardened, in one process, de-identification makes pydicom quote the planted value
    bare = subprocess.run(
        [*args, str(tmp_path / "bare"), "bare"],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert f"Invalid value for VR CS: '{WARD}" in bare.stderr  # the value (name struck) quoted
    # the node: its main process hardened, the study de-identified by two worker processes
    result = subprocess.run(
        [*args, str(tmp_path / "out"), "node"],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == str(len(files))  # every instance went through the pool
    assert "written" in result.stdout
    assert WARD not in result.stderr
    assert "Invalid value" not in result.stderr
