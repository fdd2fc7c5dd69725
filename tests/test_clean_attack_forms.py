"""Identifiers in the forms a hospital's real data, a careless sender and an attacker write them,
planted where our other tests never put them, are gone from every output under the Basic
Profile alone, the clean options and each example protocol; TG-263 ROI names survive exactly.

Forms: titles in any case and without their dot (`DR PATEL`, `dr whitcombe`), a short surname
glued to an initial (`JPatel`), names with apostrophes, hyphens and umlauts written out, labelled
numbers of any length (`MRN: 12345`, `Hosp No 654321`), dates as `15th of March 2024` and the
study's own `15.3.24`, times as `9:41am` and `at 0941`, `0044` phone numbers, identifiers split
across the values of a multi-valued string, a name held only in a private PN element, text typed
into a time or a number, names in a device description, names of people the study does not
hold and no title marks (`reviewed by Sarah Connolly`, `HARGREAVES, TOM`, `mr pennington`).
Each is planted in kept text at the top level, three sequences deep, in SR TEXT items,
RequestAttributesSequence and ROI labels.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from uploader.deid.batch import anonymise_tree
from uploader.deid.engine import Settings
from uploader.deid.identifiers import Identifiers, Matcher, collect, fold
from uploader.deid.patterns import default_detector
from uploader.deid.policy import malformed
from uploader.deid.profile import load_profile
from uploader.runconfig import build_settings
from uploader.sample import Patient, write_study

from .conftest import KEY, ROOT
from .test_clean_removes_every_identifier import OPTION_SETS

PATIENT = Patient(
    name="O'NEILL^SIOBHAN^MARIE",
    spoken_name="Siobhan O'Neill",
    patient_id="123456",  # a 6-digit MRN
    other_id="H54321",
    birth_date="19620314",
    accession="ACC7781234",
    address="7 Larkspur Close, Tamworth, B79 7XY",
    phone="(020) 7946 0321",
    study_date="20240315",
    tag="10",
)
# (form as planted, what must not survive in the output, folded); people of the study first
FORMS: list[tuple[str, tuple[str, ...]]] = [
    ("DR PATEL", ("patel",)),
    ("Dr. Patel", ("patel",)),
    ("dr patel", ("patel",)),
    ("Patel J", ("patel",)),
    ("J. Patel", ("patel",)),
    ("PATEL, JAYESH", ("patel", "jayesh")),
    ("JPatel", ("jpatel",)),
    ("O'Neill", ("neill",)),
    ("ONeill", ("oneill",)),
    ("O\u2019Neill", ("neill",)),
    ("Smith-Jones", ("smith", "jones")),
    ("Smith Jones", ("smith", "jones")),
    ("Mueller", ("mueller",)),
    ("B. Müller", ("muller",)),
    ("D'Souza", ("souza",)),
    ("DSouza A", ("dsouza",)),
    ("Fitzgerald", ("fitzgerald",)),
    ("Quarrington", ("quarrington",)),  # named only in a private PN element
    ("Okafor C.", ("okafor",)),  # named only in an SR PNAME item
    # people the study does not name: found by their title, in any case
    ("DR WHITCOMBE", ("whitcombe",)),
    ("dr whitcombe", ("whitcombe",)),
    ("seen by dr. greenhalgh", ("greenhalgh",)),
    ("Prof O'Rourke", ("rourke",)),
    ("mrs bramwell", ("bramwell",)),
    ("mr. hollingworth", ("hollingworth",)),
    ("ASHCROFT^^^DR", ("ashcroft",)),  # a name pasted from a PN with its empty components
    ("GTV_dr_ashby_v2", ("ashby",)),  # labels join words with underscores
    # people the study does not name and no title marks: found by their given name or form
    ("reviewed by Sarah Connolly", ("connolly",)),
    ("contoured by J. Okonjo", ("okonjo",)),
    ("HARGREAVES, TOM", ("hargreaves",)),
    ("mr pennington", ("pennington",)),
    # numbers
    ("MRN: 12345", ("12345",)),
    ("Hosp No 654321", ("654321",)),
    ("Hospital Number: 778899", ("778899",)),
    ("Unit no. 99881", ("99881",)),
    ("PID 556677", ("556677",)),
    ("RN 7654321", ("7654321",)),
    ("943-476-5919", ("943-476-5919", "5919")),
    # dates and times
    ("3/15/2024", ("3/15/2024",)),
    ("15-Mar-2024", ("15-mar-2024",)),
    ("15th of March 2024", ("15th", "march 2024")),
    ("Mar 2024", ("mar 2024",)),
    ("15.3.24", ("15.3.24",)),
    ("14/03/1962", ("14/03/1962",)),
    ("at 0941", ("0941",)),
    ("9:41am", ("9:41",)),
    # phones, postcodes, e-mail
    ("(020) 7946 0321", ("7946",)),
    ("+44 (0)20 7946 0321", ("7946",)),
    ("0044 20 7946 0321", ("0044", "7946")),
    ("01632 960 123", ("01632",)),
    ("sw1a2aa", ("sw1a",)),
    ("b79 7xy", ("b79",)),
    ("J.PATEL@NHS.NET", ("@nhs.net",)),
    # the hospital's servers
    ("https://pacs.zircon.example/wado?pid=1", ("zircon",)),
    ("from 192.168.10.20:104", ("192.168.10.20",)),
    ("www.zircon-infirmary.org/ris", ("zircon-infirmary",)),
    # places and numbers the study does not hold, and great ages
    ("Threadneedle Royal Hospital", ("threadneedle",)),
    ("45 Quillington Street", ("quillington",)),
    ("Boston, MA 02114", ("02114",)),
    ("SSN 078-05-1120", ("078-05-1120",)),
    ("a 96 year old man", ("96 year",)),
]
TEXT = " ; ".join(f for f, _ in FORMS)
TOKENS = sorted({t for _, ts in FORMS for t in ts} | {"9434765919"})  # + a local code value
SPLIT = ["DR", "WHITCOMBE", "MRN", "90210", "020", "7946 0321"]  # one identifier per two values
#: Text with no identifier in it, as scanners write it: kept exactly where the options keep it.
USEFUL = {"ProtocolName": "RT PELVIS 2.5mm 120kV", "SeriesDescription": "CT Pelvis 3/3 Ax"}
ROIS = ("Lung_L", "Lung_R", "Breast", "Heart", "SpinalCord", "PTV_7000", "Prostate")


def _raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _plant(ds: Dataset) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "094100"
    ds.ImageComments = TEXT
    for kw in ("StudyDescription", "SeriesDescription", "ContentDescription"):
        setattr(ds, kw, TEXT[:64])
    ds.ManufacturerModelName = "Scanner of Dr Whitcombe"
    ds.RetrieveURL = "https://pacs.zircon.example/wado?pid=123456"
    ds.add_new(0x00081030, "LO", SPLIT) if ds.Modality == "RTDOSE" else None
    request = Dataset()
    request.RequestedProcedureDescription = "Dr. Patel 15-Mar-2024"
    request.ReasonForTheRequestedProcedure = "Hosp No 654321 MRN: 12345"
    ds.RequestAttributesSequence = [request]
    if ds.Modality == "CT":
        ds.ProtocolName = USEFUL["ProtocolName"]
        ds.SeriesDescription = USEFUL["SeriesDescription"]
        ds.OperatorsName = "PATEL^JAYESH"
        ds.PerformingPhysicianName = "Smith-Jones^Marguerite"
        ds.add_new(0x00110010, "LO", "ACME 1.0")
        ds.add_new(0x00111011, "PN", "Quarrington^Felicity")
        _raw(ds, 0x00181201, "TM", b"0941 Kellaway ")  # TimeOfLastCalibration
        _raw(ds, 0x00180088, "DS", b"Kellaway 15/03")  # SpacingBetweenSlices
        ds.AdmittingDiagnosesCodeSequence = [  # a hospital's own code list holds anything
            _code("9434765919", "99LOCAL", "local"),
            _code("399068003", "SCT", "Malignant tumor of prostate"),  # a code: kept
        ]
    if ds.Modality == "RTSTRUCT":
        ds.StructureSetLabel = "OSIOBHAN 15.3.24"
        ds.StructureSetDescription = TEXT
        for i, roi in enumerate(ds.StructureSetROISequence):
            roi.ROIDescription = FORMS[i % len(FORMS)][0]
        for i, obs in enumerate(ds.RTROIObservationsSequence):
            obs.ROIObservationLabel = FORMS[(i + 7) % len(FORMS)][0]
            obs.ROIInterpreter = "Müller^Björn"
        deep = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
        deep = deep.RTReferencedSeriesSequence[0]  # three sequences deep
        deep.ContentDescription = TEXT[:64]
        deep.add_new(0x00401010, "PN", "Fitzgerald^Aoife")
    if ds.Modality == "RTPLAN":
        ds.ReferringPhysicianName = "D'Souza^Anil"
        ds.RTPlanLabel = "DSouza A 3/15/2024"
        ds.RTPlanDescription = TEXT


def _sr(study: Dataset) -> Dataset:
    ds = Dataset()
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.33", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.StudyInstanceUID, generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "SR", PATIENT.name, PATIENT.patient_id
    ds.IssuerOfPatientID = study.IssuerOfPatientID
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]

    def item(value_type: str, **values: object) -> Dataset:
        it = Dataset()
        it.RelationshipType, it.ValueType = "CONTAINS", value_type
        it.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
        for k, v in values.items():
            setattr(it, k, v)
        return it

    inner = item("CONTAINER", ContinuityOfContent="SEPARATE")
    inner.ContentSequence = [
        item("TEXT", TextValue=TEXT),
        item("PNAME", PersonName="Okafor^Chinedu"),
        item("CODE", ConceptCodeSequence=[_code("X1", "99LOCAL", "dr whitcombe MRN: 12345")]),
    ]
    ds.ContentSequence = [item("TEXT", TextValue=TEXT), inner]
    _plant(ds)
    return ds


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attack") / "in"
    files = write_study(root, patient=PATIENT, rois=ROIS, slices=2)
    first = None
    for path in files:
        ds = dcmread(path, force=True)
        first = first or ds
        _plant(ds)
        ds.save_as(path)
    assert first is not None
    _sr(first).save_as(files[0].parent.parent / "SR Dr Patel.dcm", enforce_file_format=True)
    return root


CLEAN = OPTION_SETS["clean options"]  # the options the example protocols use
CASES = ["basic profile alone", "clean options", "example-head-neck-imrt.yaml"]
CASES += ["example-lung-sbrt.yaml", "example-prostate.yaml"]


def _settings(case: str) -> Settings:
    if case.endswith(".yaml"):
        return build_settings(KEY, ROOT / "protocols" / case, "RXH")
    base = build_settings(KEY, None, "RXH")
    return Settings(
        profile=load_profile(CLEAN if case == "clean options" else frozenset()),
        pseudonymiser=base.pseudonymiser,
        site="RXH",
        subject_pattern=base.subject_pattern,
        protected=base.protected,
    )


def _values(ds: Dataset) -> list[str]:
    """Every value but UIDs (remapped ones hold any digit run), decoded, folded."""
    out = []
    for elem in ds.iterall():
        if elem.VR in ("UI", "SQ"):
            continue
        value = elem.value
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        out.append(fold(text))
    return out


def _survivors(out: Path) -> list[str]:
    texts = [fold(str(p.relative_to(out))) for p in out.rglob("*")]
    for path in out.rglob("*.dcm"):
        texts += _values(dcmread(path))
    found = []
    for token in TOKENS:
        pattern = rf"(?<![\d.]){re.escape(token)}(?![\d.])" if token.isdigit() else None
        if any((re.search(pattern, t) if pattern else token in t) for t in texts):
            found.append(token)
    return found


@pytest.mark.parametrize("case", CASES)
def test_no_attack_form_survives_and_roi_names_do(tmp_path: Path, study: Path, case: str) -> None:
    summary = anonymise_tree(study, tmp_path / "out", _settings(case), jobs=1)
    assert not summary.failed, summary.failed
    assert summary.written == 6  # 2 CT, RTSTRUCT, RTPLAN, RTDOSE, SR
    assert _survivors(tmp_path / "out") == []
    struct = next(
        ds for p in (tmp_path / "out").rglob("*.dcm") if (ds := dcmread(p)).Modality == "RTSTRUCT"
    )
    names = [str(r.ROIName) for r in struct.StructureSetROISequence]
    if case == "basic profile alone":
        assert names == [""] * len(ROIS)  # ROIName is Z in Table E.1-1 without Clean Descriptors
    else:
        assert names == list(ROIS)
        assert any("ROIObservationLabel" in where for _f, where in summary.struck)
        ct = next(
            ds for p in (tmp_path / "out").rglob("*.dcm") if (ds := dcmread(p)).Modality == "CT"
        )
        codes = [str(c.CodeValue) for c in ct.AdmittingDiagnosesCodeSequence]
        assert codes == ["***", "399068003"]
        assert {kw: str(ct.get(kw, "")) for kw in USEFUL} == USEFUL


def test_clinical_words_after_dr_and_labels_survive() -> None:
    detector = default_detector()
    for harmless in (
        *("http://snomed.info/sct", "version 10.2.1", "1.2.840.10008.5.1.4"),
        *(
            "DR_CHEST",
            "DR CHEST PA",
            "DR Hand AP",
            "MR BRAIN T1",
            "mr brain",
            "MS lesions",
            "Case 12",
        ),
        *("ID 3", "PTV_7000", "Plan v2 2024"),
    ):
        assert detector.kinds(harmless, fold(harmless)) == [], harmless
    matcher = Matcher(Identifiers())
    cleaned, kinds = matcher.clean("MRN: 12345 seen by DR WHITCOMBE", detector)
    assert cleaned == "MRN: *** seen by ***"  # the label says what was there
    assert kinds == ["ID-like token", "person name"]


def test_the_studys_times_are_struck_where_they_are_times_not_doses() -> None:
    matcher = Matcher(Identifiers(times={"200000", "094100"}))
    for said in ("scanned at 2000", "at 0941", "0941h", "9:41am", "09.41"):
        assert Matcher.REPLACEMENT in matcher.clean(said)[0], said
    for dose in ("Boost at 2000 cGy", "PTV at 2000cGy/10", "PTV_2000", "2000 MU"):
        assert matcher.clean(dose)[0] == dose


def test_an_identifier_split_across_values_is_struck_in_each_part() -> None:
    matcher = Matcher(Identifiers())
    cleaned, kinds = matcher.clean_values(SPLIT, default_detector())
    assert cleaned == ["***", "***", "MRN", "***", "***", "***"]
    assert set(kinds) == {"person name", "ID-like token", "phone number"}
    kept, _ = matcher.clean_values(["Lung_L", "PTV_7000"], default_detector())
    assert kept == ["Lung_L", "PTV_7000"]


def test_a_name_held_only_in_a_private_pn_is_a_name_of_the_study() -> None:
    ds = Dataset()
    ds.add_new(0x00110010, "LO", "ACME 1.0")
    ds.add_new(0x00111011, "PN", "Quarrington^Felicity")
    ident = collect(ds)
    assert {"Quarrington", "Felicity"} <= ident.names
    assert "Quarrington" not in Matcher(ident).clean("checked by Quarrington")[0]


def test_short_names_with_an_initial_or_a_title_and_mac_spellings() -> None:
    ds = Dataset()
    ds.PatientName = "Wu^Li"
    ds.OperatorsName = ["MacDonald^Ewan", "Ng^Al"]
    matcher = Matcher(collect(ds))
    for said in ("L. Wu", "L Wu", "WU L", "dr wu", "DR. NG", "Mc Donald", "McDonald", "mac donald"):
        assert matcher.clean(said)[0] == "***", said
    for other in ("Lung Wu", "drawn by Ng", "Ngozi", "Machine", "Mac"):  # short: whole values only
        assert matcher.clean(other)[0] == other, other


def test_an_institution_is_found_without_its_possessive() -> None:
    ds = Dataset()
    ds.InstitutionName = "St Mary's Hospital"
    matcher = Matcher(collect(ds))
    for said in ("seen at St Mary", "ST. MARYS", "St Mary\u2019s"):
        assert "mary" not in fold(matcher.clean(said)[0]), said
    assert matcher.clean("Hospital") == ("Hospital", [])  # a common word alone is not it


def test_text_in_a_number_or_time_is_not_a_value_of_its_vr() -> None:
    for vr, value in (("TM", b"0941 Kellaway"), ("DS", b"Patel 1.5"), ("IS", b"12 JP")):
        assert malformed(vr, value), (vr, value)
    assert malformed("DA", "15 März") and malformed("DS", "1.5 Müller".encode())
    for vr, value in (("TM", b"094100.123"), ("DS", b"-1.5e3\\2 "), ("DA", b"20240315")):
        assert not malformed(vr, value), (vr, value)
    assert not malformed("DS", b"0,5\\0,5")  # a comma decimal names nobody: geometry stays
    assert not malformed("AS", b"062Y") and not malformed("IS", b"1A")  # a stray letter


def test_a_site_pattern_table_is_a_setting_of_both_nodes(tmp_path: Path) -> None:
    from anonymised_node.config import Config as AnonConfig
    from anonymised_node.config import NodeSettings as AnonNode
    from anonymised_node.service import audit_patterns
    from identifiable_node.config import NodeSettings
    from identifiable_node.trials import Trials
    from uploader.errors import ConfigError

    table = tmp_path / "site.yaml"
    table.write_text('patterns:\n  - {kind: ward, regex: "(?<![a-z])seacole ward(?![a-z])"}\n')
    text = "CT seen on Seacole Ward"
    assert default_detector(audit=True).kinds(text, fold(text)) == []  # not without the table
    assert "site_patterns" in NodeSettings.model_fields and "site_patterns" in AnonNode.model_fields
    # identifiable node: every trial's cleaner and verifier use the site's table
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    (protocols / "p.yaml").write_text((ROOT / "protocols" / "example-prostate.yaml").read_text())
    trials = Trials(protocols, KEY, "RXH", None, {}, site_patterns=table)
    settings = trials.settings("PACE-C")
    assert Matcher(Identifiers()).clean(text, settings.patterns)[0] == "CT seen on ***"
    # anonymised node: the intake's audit refuses kept text holding the site's rows
    gate = audit_patterns(AnonConfig(node=AnonNode(site_patterns=table)))
    assert gate.kinds(text, fold(text)) == ["ward"]
    assert audit_patterns(AnonConfig()).kinds(text, fold(text)) == []
    table.write_text("patterns:\n  - {kind: x, regex: '(unclosed'}\n")
    with pytest.raises(ConfigError, match="does not compile"):
        Trials(protocols, KEY, "RXH", None, {}, site_patterns=table)
    with pytest.raises(ConfigError, match="does not compile"):
        audit_patterns(AnonConfig(node=AnonNode(site_patterns=table)))


def test_uploader_verify_takes_the_site_table(tmp_path: Path, study: Path) -> None:
    from uploader.verify_folder import audit_tree

    out, protocol = tmp_path / "out", ROOT / "protocols" / "example-prostate.yaml"
    summary = anonymise_tree(study, out, _settings("example-prostate.yaml"), jobs=1)
    assert summary.written == 6
    assert all(not problems for _f, problems in audit_tree(out, protocol).files)
    rtstruct = next(p for p in out.rglob("*.dcm") if dcmread(p).Modality == "RTSTRUCT")
    table = tmp_path / "site.yaml"
    table.write_text('patterns:\n  - {kind: ward, regex: "(?<![a-z])seacole ward(?![a-z])"}\n')
    ds = dcmread(rtstruct)
    ds.StructureSetROISequence[0].ROIDescription = "drawn on Seacole Ward"
    ds.save_as(rtstruct)
    assert all(not problems for _f, problems in audit_tree(out, protocol).files)
    flagged = [f for f, problems in audit_tree(out, protocol, table).files if problems]
    assert len(flagged) == 1
