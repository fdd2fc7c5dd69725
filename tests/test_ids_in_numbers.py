"""A study's all-digit ID (an MRN, an accession number) typed into a number attribute is not
kept: AcquisitionNumber holding the MRN is emptied at the top level and in a sequence item (the
byte rewrite hands such a sequence to the walk), the verifier refuses it, and ordinary numbers
(InstanceNumber 1, an AcquisitionNumber of 2) stay as they were."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from uploader.deid import batch, engine
from uploader.deid.identifiers import collect
from uploader.errors import VerificationError
from uploader.runconfig import build_settings
from uploader.sample import Patient, write_study

from .conftest import KEY

MRN = "7734219"


def test_an_mrn_typed_into_a_number_is_emptied(tmp_path: Path) -> None:
    patient = Patient(name="QUENNELL^ISOLDE", patient_id=MRN, accession="20240315")
    files = [f for f in write_study(tmp_path / "in", slices=2, patient=patient) if f.suffix == ""]
    cts = sorted(f for f in files if dcmread(f).Modality == "CT")
    first = dcmread(cts[0])
    first.AcquisitionNumber = MRN
    item = Dataset()
    item.ReferencedSOPInstanceUID = first.SOPInstanceUID
    item.ReferencedFrameNumber = "0" + MRN  # leading zeros are the same number
    first.SourceImageSequence = [item]
    first.save_as(cts[0])
    second = dcmread(cts[1])
    second.AcquisitionNumber = "2"
    second.save_as(cts[1])
    summary = batch.anonymise_tree(
        tmp_path / "in", tmp_path / "out", build_settings(KEY, None, "RXH"), jobs=1
    )
    assert not summary.failed, summary.failed
    outputs = {
        dcmread(p).InstanceNumber: dcmread(p)
        for p in (tmp_path / "out").rglob("*.dcm")
        if dcmread(p).Modality == "CT"
    }
    one, two = outputs[first.InstanceNumber], outputs[second.InstanceNumber]
    assert one.AcquisitionNumber in ("", None)
    assert one.SourceImageSequence[0].ReferencedFrameNumber in ("", None)
    assert str(two.AcquisitionNumber) == "2" and str(one.InstanceNumber) == str(
        first.InstanceNumber
    )
    for p in (tmp_path / "out").rglob("*.dcm"):
        assert MRN.encode() not in p.read_bytes()


def test_the_verifier_refuses_an_mrn_left_in_a_number(tmp_path: Path) -> None:
    patient = Patient(name="QUENNELL^ISOLDE", patient_id=MRN)
    ct = next(
        f for f in write_study(tmp_path, slices=1, patient=patient) if f.name.startswith("IM")
    )
    original = dcmread(ct)
    settings = build_settings(KEY, None, "RXH")
    out = engine.deidentify(
        dcmread(ct), settings, study=collect(original, kept=settings.profile.kept_tags)
    )
    out.dataset.AcquisitionNumber = MRN  # as if the engine had kept it
    try:
        engine.check_output(
            out.dataset, collect(original, kept=settings.profile.kept_tags), set(out.uid_map),
            settings.private, settings.profile,
        )  # fmt: skip
    except VerificationError as exc:
        assert "AcquisitionNumber: ID" in str(exc)
    else:
        raise AssertionError("the verifier kept an MRN in AcquisitionNumber")
