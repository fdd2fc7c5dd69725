"""Person names that the study does not hold and no title marks are struck from kept free text,
under the Basic Profile alone and the clean options, and the knowledge-free verifier refuses
them when left; ordinary descriptions, labels, protocol, device and ROI names come through
untouched.

Two corpora (tests/data): ``names_strike.txt``, names in the forms staff type them (``PATEL,
JOHN``, ``John Patel``, ``reviewed by Sarah Connolly``, ``contoured by J. Patel``, ``mr smith``,
``sarah connolly``), each with the words that must not survive; ``names_keep.txt``, every text
value of the public DICOM files pydicom and dicompyler-core ship and several hundred series,
study, protocol, RT, device and comment texts as scanners and staff write them (``Mark
Lesion``, ``Grace Period``, ``Will Review``, ``Varian Eclipse``, ``Jackson Pratt drain``), each
judged as written, in capitals and in lower case.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from uploader.deid.batch import anonymise_tree
from uploader.deid.engine import Settings
from uploader.deid.identifiers import Identifiers, Matcher, collect, fold
from uploader.deid.patterns import default_detector
from uploader.deid.profile import load_profile
from uploader.runconfig import build_settings
from uploader.sample import Patient, write_study
from uploader.verify_folder import audit_tree

from .conftest import KEY
from .test_clean_removes_every_identifier import OPTION_SETS

DATA = Path(__file__).parent / "data"
PERSON = "person name"


def _lines(name: str) -> list[str]:
    text = (DATA / name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


STRIKE = [
    (text, tokens.split(","))
    for text, tokens in (ln.split("\t") for ln in _lines("names_strike.txt"))
]
KEEP = _lines("names_keep.txt")
KEEP_FORMS = list(dict.fromkeys(v for t in KEEP for v in (t, t.upper(), t.lower())))
PATIENT = Patient(name="QUARRINGTON^FELICITY", spoken_name="Felicity Quarrington", tag="31")


def _names_in(text: str, audit: bool = False) -> list[str]:
    found = default_detector(audit=audit).find(text, fold(text))
    return [text[f.start : f.end] for f in found if f.kind == PERSON]


def test_the_corpora_are_large_enough_to_mean_something() -> None:
    assert len(STRIKE) >= 330 and len(KEEP) >= 1600 and len(KEEP_FORMS) >= 4600


def test_no_description_label_or_device_name_is_taken_for_a_person() -> None:
    taken = [(t, _names_in(t)) for t in KEEP_FORMS if _names_in(t)]
    assert taken == []
    assert [t for t in KEEP_FORMS if _names_in(t, audit=True)] == []


def test_every_name_form_is_struck_and_refused_by_the_verifier() -> None:
    matcher, detector = Matcher(Identifiers()), default_detector()
    left = []
    for text, tokens in STRIKE:
        cleaned = fold(matcher.clean(text, detector)[0])
        if any(t in cleaned for t in tokens):
            left.append((text, cleaned))
    assert left == []
    audit = default_detector(audit=True)
    assert [t for t, _ in STRIKE if PERSON not in audit.kinds(t, fold(t))] == []


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("PATEL, JOHN", "***"),
        ("reviewed by Sarah Connolly", "reviewed by ***"),
        ("contoured by J. Patel", "contoured by ***"),
        ("Head Neck Planning Sarah Connolly", "Head Neck Planning ***"),
        ("JOHN PATEL to review", "*** to review"),
        ("seen by mr smith", "seen by mr ***"),
        ("Mark Lesion", "Mark Lesion"),
        ("WILL REVIEW", "WILL REVIEW"),
        ("mr brain", "mr brain"),
        ("Hill Sachs lesion", "Hill Sachs lesion"),
        ("abdomen^liver", "abdomen^liver"),
        ("SMITH^JOHN", "***"),
    ],
)
def test_what_is_struck_and_what_stays(text: str, cleaned: str) -> None:
    assert Matcher(Identifiers()).clean(text, default_detector())[0] == cleaned


def _sr(study: Dataset, texts: list[str]) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.22", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.StudyInstanceUID, generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "SR", PATIENT.name, PATIENT.patient_id
    ds.IssuerOfPatientID = study.get("IssuerOfPatientID", "")
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    items = []
    for text in texts:
        item = Dataset()
        item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", text
        items.append(item)
    ds.ContentSequence = items
    return ds


#: Keep lines no other row strikes (the public files' own dates and version strings go).
PLAIN_KEEP = [t for t in KEEP if not default_detector().kinds(t, fold(t))]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The sample study with an SR report holding every name form, then the keep lines that
    the study's own people (its operator is Smith^Anna: Smith fracture goes) leave alone."""
    root = tmp_path_factory.mktemp("names") / "in"
    files = write_study(root, patient=PATIENT, slices=1, rt=("RTPLAN",))
    ident = Identifiers()
    for f in files:
        collect(dcmread(f, force=True), ident)
    keep = [t for t in PLAIN_KEEP if not Matcher(ident).hits(t)]
    first = dcmread(files[0], force=True)
    texts = [t for t, _ in STRIKE] + keep
    _sr(first, texts).save_as(files[0].parent / "SR names.dcm", enforce_file_format=True)
    return root, keep


@pytest.mark.parametrize("case", list(OPTION_SETS))
def test_names_are_struck_and_descriptions_kept_in_an_sr_report(
    tmp_path: Path, study: tuple[Path, list[str]], case: str
) -> None:
    root, keep = study
    base = build_settings(KEY, None, "RXH")
    settings = Settings(
        profile=load_profile(OPTION_SETS[case]),
        pseudonymiser=base.pseudonymiser,
        site="RXH",
        subject_pattern=base.subject_pattern,
        protected=base.protected,
    )
    out = tmp_path / "out"
    summary = anonymise_tree(root, out, settings, jobs=1)
    assert not summary.failed, summary.failed
    sr = next(ds for p in out.rglob("*.dcm") if (ds := dcmread(p)).Modality == "SR")
    values = [str(item.TextValue) for item in sr.ContentSequence]
    struck, kept = values[: len(STRIKE)], values[len(STRIKE) :]
    assert [
        (t, v)
        for (t, tokens), v in zip(STRIKE, struck, strict=True)
        if any(tok in fold(v) for tok in tokens)
    ] == []
    assert len(keep) > 1500
    assert [(t, v) for t, v in zip(keep, kept, strict=True) if t != v] == []
    assert all(not problems for _f, problems in audit_tree(out).files)
    # the verifier refuses each name written back into the report
    path = next(p for p in out.rglob("*.dcm") if dcmread(p).Modality == "SR")
    for item, (text, _tokens) in zip(sr.ContentSequence, STRIKE, strict=False):
        item.TextValue = text
    sr.save_as(path)
    problems = [p for _f, ps in audit_tree(out).files for p in ps]
    assert len(problems) == len(STRIKE) and all(PERSON in p for p in problems), problems
