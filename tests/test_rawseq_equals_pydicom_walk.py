"""A sequence rewritten in its bytes (``uploader.deid.rawseq``) de-identifies exactly as pydicom's
walk does: on every file pydicom ships, on real TPS exports (dicompyler-core's sdist), on our
generated RT study with planted identifiers, and on thousands of corrupted copies of an
RTSTRUCT's contour sequence, the output (as pydicom reads it back), the UID map and what the
cleaner struck are the same with the fast path as with it turned off; and the fast path is
taken (the RTSTRUCT's contour sequence is written from our bytes)."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement

from uploader.deid import batch, engine, rawseq
from uploader.deid.profile import load_profile
from uploader.runconfig import build_settings
from uploader.sample import Patient, write_study

from .conftest import KEY, ROOT
from .test_clean_removes_every_identifier import OPTION_SETS

CLEAN = OPTION_SETS["clean options"]  # the options the example protocols use


def _settings(case: str) -> engine.Settings:
    if case.endswith(".yaml"):
        return build_settings(KEY, ROOT / "protocols" / case, "RXH")
    base = build_settings(KEY, None, "RXH")
    options = CLEAN if case == "clean options" else frozenset()
    return engine.Settings(
        profile=load_profile(options),
        pseudonymiser=base.pseudonymiser,
        site="RXH",
        subject_pattern=base.subject_pattern,
    )


def _run(data: bytes, settings: engine.Settings, *, fast: bool) -> Any:
    """(output as read back, UID map, struck, sequences rewritten) or the exception's class."""
    monkey = pytest.MonkeyPatch()
    taken: list[int] = []
    original = engine._Instance._raw_sequence
    if not fast:
        monkey.setattr(rawseq.Rewriter, "sequence", _refuse)
    else:

        def counting(self: Any, ds: Any, tag: int, path: tuple[int, ...]) -> bool:
            done = original(self, ds, tag, path)
            taken.extend([tag] if done else [])
            return done

        monkey.setattr(engine._Instance, "_raw_sequence", counting)
    try:
        ds = batch.read_dicom(io.BytesIO(data))
        ident = engine.collect(batch.read_dicom(io.BytesIO(data)), kept=settings.profile.kept_tags)
        out = engine.deidentify(ds, settings, study=ident)
        buffer = io.BytesIO()
        out.dataset.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        return type(exc).__name__
    finally:
        monkey.undo()
    back = dcmread(io.BytesIO(buffer.getvalue()))
    return back, out.uid_map, out.struck, taken


def _refuse(self: Any, data: bytes, path: tuple[int, ...]) -> bytes:
    raise rawseq.FallbackError


def _same(data: bytes, settings: engine.Settings) -> list[int]:
    fast, slow = _run(data, settings, fast=True), _run(data, settings, fast=False)
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow  # the same refusal, or the same failure
        return []
    assert fast[0] == slow[0], "the output differs"
    assert fast[1] == slow[1], "the UID map differs"
    assert fast[2] == slow[2], "what was struck differs"
    return list(fast[3])


def _study(tmp: Path) -> list[bytes]:
    patient = Patient(name="WHITCOMBE^AGATHA^^DR", patient_id="RXQ7734219")
    files = write_study(tmp, slices=2, rois=["Lung_L", "Whitcombe GTV", "PTV_60"], patient=patient)
    out = []
    for f in files:
        if f.suffix == ".txt":
            continue
        ds = dcmread(f)
        if ds.Modality == "RTSTRUCT":  # an observer's name and a date typed into an item
            ds.RTROIObservationsSequence[0].ROIObservationLabel = "seen by Dr Whitcombe 15/03/2024"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


CASES = ["basic profile", "clean options", "example-head-neck-imrt.yaml"]


@pytest.mark.parametrize("case", CASES)
def test_every_bundled_and_generated_file_de_identifies_the_same(tmp_path: Path, case: str) -> None:
    settings = _settings(case)
    # the files in pydicom's package (get_testdata_files also tries, for 15 s, to download more)
    names = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
    assert len(names) > 50
    taken = 0
    for name in names:
        taken += len(_same(name.read_bytes(), settings))
    for data in _study(tmp_path / "study"):
        rewritten = _same(data, settings)
        if dcmread(io.BytesIO(data)).Modality == "RTSTRUCT":
            assert 0x30060039 in rewritten, "the contour sequence was not rewritten in bytes"
        taken += len(rewritten)
    assert taken > 0


def test_real_tps_exports_de_identify_the_same() -> None:
    from .test_real_rt_exports_stay_valid import _dicompyler_data

    settings = _settings("clean options")
    files = sorted(_dicompyler_data().glob("*.dcm"))
    assert files
    for path in files:
        _same(path.read_bytes(), settings)


def test_corrupted_contour_sequences_de_identify_the_same(tmp_path: Path) -> None:
    """Bytes flipped anywhere in the RTSTRUCT's sequences, lengths and tags included: the fast
    path gives pydicom's answer or hands the sequence to pydicom, never another output."""
    settings = _settings("basic profile")
    data = next(d for d in _study(tmp_path / "s") if b"RTSTRUCT" in d[:4096])
    ds = dcmread(io.BytesIO(data))
    raw = ds.get_item(0x30060039)
    assert isinstance(raw, RawDataElement)
    start = data.index(raw.value)
    rng = random.Random(20261202)
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[start + rng.randrange(len(raw.value))] = rng.randrange(256)
        _same(bytes(mutated), settings)
