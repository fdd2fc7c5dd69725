"""A large study de-identified in worker processes gives exactly the files one process gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from identifiable_node.deidpool import MIN_PARALLEL, Task, run
from uploader.runconfig import build_settings
from uploader.sample import write_study

from .conftest import KEY

PROTOCOL = Path(__file__).resolve().parent.parent / "protocols" / "example-prostate.yaml"

pytestmark = pytest.mark.integration  # starts worker processes


def test_worker_processes_write_what_one_process_writes(tmp_path: Path) -> None:
    files = write_study(tmp_path / "study", slices=MIN_PARALLEL + 4)
    items = [(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID), p) for p in files]
    settings = build_settings(KEY, PROTOCOL, "SITE01", None)
    outputs = {}
    for processes in (1, 2):
        task = Task(tmp_path / f"out{processes}", settings, "CT", None, None)
        done = list(run(items, task, processes))
        assert [d.sop_uid for d in done] == [sop for sop, _ in items]  # in order
        assert {d.status for d in done} == {"written"}
        outputs[processes] = {Path(d.out_path).name: Path(d.out_path).read_bytes() for d in done}
    assert outputs[1] == outputs[2]
    assert len(outputs[2]) == len(files)


def test_a_missing_instance_fails_alone(tmp_path: Path) -> None:
    files = write_study(tmp_path / "study", slices=MIN_PARALLEL + 2)
    items = [(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID), p) for p in files]
    items.insert(5, ("1.2.3.4.5", tmp_path / "gone.dcm"))  # its spool file was lost
    settings = build_settings(KEY, PROTOCOL, "SITE01", None)
    done = list(run(items, Task(tmp_path / "out", settings, "CT", None, None), 2))
    assert [d.status for d in done].count("failed") == 1
    assert done[5].status == "failed" and done[5].sop_uid == "1.2.3.4.5"
    assert sum(d.status == "written" for d in done) == len(files)
