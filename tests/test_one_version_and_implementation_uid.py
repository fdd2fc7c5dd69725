"""One version (the installed distribution's) and one implementation class UID (ours, under
2.25) in everything we write: the acceptor's file meta and association, and the
de-identified files."""

from __future__ import annotations

import re
from importlib.metadata import version
from io import BytesIO
from pathlib import Path

from pydicom import dcmread

import uploader
from uploader.deid.batch import anonymise_tree
from uploader.dicomnet import dimse
from uploader.runconfig import build_settings
from uploader.sample import write_study
from uploader.version import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_the_distributions() -> None:
    assert uploader.__version__ == version("secure-dicom-uploader")
    assert f"SDU_{uploader.__version__}"[:16] == IMPLEMENTATION_VERSION_NAME
    assert re.fullmatch(r"2\.25\.[1-9][0-9]{0,38}", IMPLEMENTATION_CLASS_UID)
    assert int(IMPLEMENTATION_CLASS_UID[5:]) < 1 << 128  # a UUID's integer
    code = [
        p
        for d in ("uploader", "identifiable_node", "anonymised_node")
        for p in (ROOT / d).rglob("*.py")
    ]
    quoted = re.compile(rf"[\"']{re.escape(uploader.__version__)}[\"']")
    for path in code:
        text = path.read_text(encoding="utf-8")
        assert not quoted.search(text), path  # no version written into the code
        if path.name != "version.py":
            assert IMPLEMENTATION_CLASS_UID not in text, path


def test_received_and_de_identified_files_name_us_the_same_way(tmp_path: Path) -> None:
    meta = dimse.file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "CT1")
    received = dcmread(BytesIO(meta + b"\x08\x00\x60\x00\x02\x00\x00\x00CT"))
    assert received.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert received.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME

    write_study(tmp_path / "in", slices=1, rt=())
    summary = anonymise_tree(
        tmp_path / "in", tmp_path / "out", build_settings(bytes(32), None, "SITE01")
    )
    assert summary.written == 1
    (out,) = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".json"]
    written = dcmread(out)
    assert written.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert written.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
