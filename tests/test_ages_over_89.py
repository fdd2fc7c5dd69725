"""An age over 89 identifies (HIPAA Safe Harbor; TCIA's practice): where the options keep the
patient's age (Retain Patient Characteristics, as the example protocols do), an age of 90 or
more is written as 090Y ("90 or older"), at the top level and in sequence items; younger ages
stay exactly; both verifiers refuse an older age left in place; and an age over 89 written in
kept text ("95 year old", "aged 93") is struck under the clean options."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from uploader.deid import batch, engine
from uploader.deid.identifiers import collect
from uploader.deid.policy import PrivatePolicy, age_over_89
from uploader.deid.profile import Option, load_profile
from uploader.deid.verify import audit
from uploader.errors import VerificationError
from uploader.runconfig import build_settings
from uploader.sample import write_study

from .conftest import KEY, ROOT

PROTOCOL = ROOT / "protocols" / "example-head-neck-imrt.yaml"  # retains patient characteristics


@pytest.mark.parametrize(
    ("value", "over"),
    [("095Y", True), ("090Y", False), ("90", True), ("089Y", False), ("95", True), ("101Y", True),
     ("999M", False), ("052W", False), ("", False), ("089Y\\093Y", True), (b"094Y", True)],
)  # fmt: skip
def test_which_ages_are_over_89(value: str | bytes, over: bool) -> None:
    assert age_over_89(value) is over


@pytest.mark.parametrize(
    "value",
    ["1080M", "4700W", "32900D", "95.5Y", "+95Y", "095Y.", "095YY", "095-Y", "90,5Y", "0095.0Y"],
)
def test_ages_of_90_or_more_in_off_standard_forms_are_over_89(value: str) -> None:
    """Not the standard's nnnX, but read as 90 years or more by anyone (more than three digits
    of months, weeks or days; a decimal; a sign; a stray character): kept as they are, these
    were written and passed both verifiers."""
    assert age_over_89(value)
    assert age_over_89(f"030Y\\{value}")


@pytest.mark.parametrize("value", ["089Y", "1079M", "4695W", "32870D", "89.9Y", "+045Y", "045Y."])
def test_younger_ages_in_off_standard_forms_are_not(value: str) -> None:
    assert not age_over_89(value)


def _study(tmp_path: Path, ages: dict[str, str]) -> Path:
    src = tmp_path / "in"
    files = [f for f in write_study(src, slices=3) if f.suffix == ""]
    cts = sorted(f for f in files if dcmread(f).Modality == "CT")
    for ct, (where, age) in zip(cts, ages.items(), strict=False):
        ds = dcmread(ct)
        ds.StudyDescription = "CT HEAD NECK"
        if where == "top":
            ds.PatientAge = age
        elif where == "item":  # an age kept in an item (the byte rewrite hands it to the walk)
            item = Dataset()
            item.PatientAge = age
            item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            ds.SourceImageSequence = [item]
            ds.PatientAge = "060Y"
        else:
            ds.PatientAge = "060Y"
            ds.StudyDescription = where
        ds.save_as(ct)
    return src


def test_a_kept_age_over_89_is_written_as_90_or_older(tmp_path: Path) -> None:
    src = _study(tmp_path, {"top": "095Y", "item": "093Y"})
    settings = build_settings(KEY, PROTOCOL, "RXH")
    assert Option.RETAIN_PATIENT_CHARACTERISTICS in settings.profile.options
    summary = batch.anonymise_tree(src, tmp_path / "out", settings, jobs=1)
    assert not summary.failed and not summary.withheld, (summary.failed, summary.withheld)
    ages, items = set(), set()
    for p in (tmp_path / "out").rglob("*.dcm"):
        ds = dcmread(p)
        if ds.Modality != "CT":
            continue
        ages.add(str(ds.PatientAge))
        for item in ds.get("SourceImageSequence") or []:
            items.add(str(item.get("PatientAge", "")))
        assert b"095Y" not in p.read_bytes() and b"093Y" not in p.read_bytes()
    assert "090Y" in ages and "095Y" not in ages
    assert items == {"090Y"}


def test_younger_ages_stay_exactly(tmp_path: Path) -> None:
    src = _study(tmp_path, {"top": "089Y"})
    settings = build_settings(KEY, PROTOCOL, "RXH")
    batch.anonymise_tree(src, tmp_path / "out", settings, jobs=1)
    ages = {
        str(dcmread(p).PatientAge)
        for p in (tmp_path / "out").rglob("*.dcm")
        if dcmread(p).Modality == "CT"
    }
    assert "089Y" in ages and "090Y" not in ages


def test_both_verifiers_refuse_an_age_over_89_left_in_place(tmp_path: Path) -> None:
    ct = next(f for f in write_study(tmp_path, slices=1) if f.name.startswith("IM"))
    original = dcmread(ct)
    original.PatientAge = "060Y"
    settings = build_settings(KEY, PROTOCOL, "RXH")
    ident = collect(original, kept=settings.profile.kept_tags)
    out = engine.deidentify(original, settings, study=ident)
    out.dataset.PatientAge = "096Y"  # as if the engine had kept it
    with pytest.raises(VerificationError, match="PatientAge: an age over 89"):
        engine.check_output(
            out.dataset, ident, set(out.uid_map), settings.private, settings.profile
        )
    profile = load_profile(frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS}))
    problems = audit(out.dataset, profile, PrivatePolicy(()), False, ours=())
    assert any("PatientAge" in p and "age over 89" in p for p in problems), problems
    out.dataset.PatientAge = "090Y"
    assert not [p for p in audit(out.dataset, profile, PrivatePolicy(()), False) if "Age" in p]


@pytest.mark.parametrize(
    "text", ["CT HEAD 95 year old male", "PLANNING CT aged 93", "92-yr-old F", "RT age: 104"]
)
def test_an_age_over_89_in_kept_text_is_struck(tmp_path: Path, text: str) -> None:
    src = _study(tmp_path, {text: ""})
    settings = build_settings(KEY, PROTOCOL, "RXH")  # clean_descriptors: descriptions kept
    summary = batch.anonymise_tree(src, tmp_path / "out", settings, jobs=1)
    assert not summary.failed, summary.failed
    descriptions = {
        str(dcmread(p).get("StudyDescription", "")) for p in (tmp_path / "out").rglob("*.dcm")
    }
    assert not any(d == text for d in descriptions)
    assert any("***" in d for d in descriptions), descriptions
    assert any(w.endswith("age over 89") or "age over 89" in w for _f, w in summary.struck)


@pytest.mark.parametrize(
    "text",
    ["095 years old", "age:095", "Age: 095", "age of 95", "95y old", "aged 0093", "95 y old"],
)
def test_an_age_over_89_with_leading_zeros_or_a_y_before_old_is_found(text: str) -> None:
    """Forms the rows missed: the zero of an age string before the number, "age of", and
    a bare y when "old" follows."""
    from uploader.deid.identifiers import fold
    from uploader.deid.patterns import default_detector

    for detector in (default_detector(), default_detector(audit=True)):
        assert "age over 89" in detector.kinds(text, fold(text)), text


@pytest.mark.parametrize("text", ["089 years old", "age of 89", "X 95 Y 92", "95 y", "V95 y"])
def test_younger_ages_and_coordinates_are_not(text: str) -> None:
    from uploader.deid.identifiers import fold
    from uploader.deid.patterns import default_detector

    assert "age over 89" not in default_detector().kinds(text, fold(text)), text


def _sr_age(value: str, unit: str = "a") -> Dataset:
    """A NUM content item "Subject Age" (DCM 121033), as dose reports and other SR carry it."""
    num = Dataset()
    num.RelationshipType, num.ValueType = "CONTAINS", "NUM"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "121033", "DCM"
    concept.CodeMeaning = "Subject Age"
    num.ConceptNameCodeSequence = [concept]
    measured = Dataset()
    measured.NumericValue = value
    units = Dataset()
    units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = unit, "UCUM", unit
    measured.MeasurementUnitsCodeSequence = [units]
    num.MeasuredValueSequence = [measured]
    return num


@pytest.mark.parametrize(
    ("value", "unit", "written"),
    [("95", "a", "90"), ("1200", "mo", "1080"), ("45", "a", "45"), ("89", "a", "89")],
)
def test_an_sr_subject_age_over_89_is_written_as_90(
    tmp_path: Path, value: str, unit: str, written: str
) -> None:
    """An age in an SR's content tree (a NUM item "Subject Age", nested): kept as it was by
    every profile, 95 years stayed 95; now written as 90 (in its unit), younger ages exact."""
    ct = next(f for f in write_study(tmp_path, slices=1) if f.name.startswith("IM"))
    for protocol in (PROTOCOL, None):
        ds = dcmread(ct)
        container = Dataset()
        container.RelationshipType, container.ValueType = "CONTAINS", "CONTAINER"
        container.ContentSequence = [_sr_age(value, unit)]
        ds.ContentSequence = [container]
        settings = build_settings(KEY, protocol, "RXH")
        ident = collect(ds, kept=settings.profile.kept_tags)
        out = engine.deidentify(ds, settings, study=ident).dataset
        measured = out.ContentSequence[0].ContentSequence[0].MeasuredValueSequence[0]
        assert str(measured.NumericValue) == written


def test_both_verifiers_refuse_an_sr_age_over_89_left_in_place(tmp_path: Path) -> None:
    ct = next(f for f in write_study(tmp_path, slices=1) if f.name.startswith("IM"))
    original = dcmread(ct)
    settings = build_settings(KEY, PROTOCOL, "RXH")
    ident = collect(original, kept=settings.profile.kept_tags)
    out = engine.deidentify(original, settings, study=ident)
    out.dataset.ContentSequence = [_sr_age("96")]  # as if the engine had kept it
    with pytest.raises(VerificationError, match="an age over 89"):
        engine.check_output(
            out.dataset, ident, set(out.uid_map), settings.private, settings.profile
        )
    problems = audit(out.dataset, settings.profile, PrivatePolicy(()), False, ours=())
    assert any("age over 89" in p for p in problems), problems
    out.dataset.ContentSequence = [_sr_age("90")]
    assert not [
        p for p in audit(out.dataset, settings.profile, PrivatePolicy(()), False) if "age" in p
    ]
