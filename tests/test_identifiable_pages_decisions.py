"""The identifiable node's staff decisions without a server: manual IDs refused when they look
like the patient, relabels audited old -> new in the hash chain and chained with the trial's
synonyms, opted-out studies never released, purge for admins only."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from identifiable_node import decisions as staff
from identifiable_node.store import Store
from uploader.store.auditchain import verify

PATIENT = staff.Patient("9434765919", ("MRN0012345",), "MÜLLER^JÖRG^HEINRICH^DR", "19620314")
PATTERN = r"^PACE-\d{4}$"


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("9434765919", "the patient's ID"),
        ("PACE-9434765919", "the patient's ID"),
        ("mrn0012345", "NHS number or other ID"),
        ("PACE-19620314", "birth date"),
        ("muller-01", "the patient's name"),
        ("joerg", None),  # not the name as written: the pattern refuses it instead
    ],
)
def test_manual_ids_that_look_like_the_patient_are_refused(entry: str, why: str | None) -> None:
    with pytest.raises(staff.Refused) as info:
        staff.check_id(entry, "subject ID", PATTERN, PATIENT)
    message = str(info.value)
    assert (why or "does not match the trial's pattern") in message
    assert entry not in message


def test_a_manual_id_needs_the_trials_pattern_and_is_kept_as_entered() -> None:
    assert staff.check_id(" PACE-0042 ", "subject ID", PATTERN, PATIENT) == "PACE-0042"
    with pytest.raises(staff.Refused, match="does not assign its own subject IDs"):
        staff.check_id("PACE-0042", "subject ID", None, PATIENT)


def _study(store: Store, state: str = "needs_review") -> int:
    store.add_instance(
        study_uid="1.2.3", sop_uid="1.2.3.4", series_uid="1.2.3.5", modality="CT",
        path="/nowhere", patient_id="9434765919", other_ids="", protocol=None, source="test",
    )  # fmt: skip
    (study,) = store.studies()
    store.release(study.id, state, "test", reason="why")
    return study.id


def test_relabels_are_audited_old_to_new_and_chained_with_synonyms(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    study_id = _study(store)
    now = staff.relabel(store, study_id, {"Rectm": "rectum", "Prostate": ""}, "rita")
    assert now == {"Rectm": "rectum"}
    staff.relabel(store, study_id, {"Rectm": ""}, "rita")  # undone, audited too
    staff.relabel(store, study_id, {"Rectm": "rectum"}, "rita")
    details = [r.detail for r in store.audit_rows(study_id) if r.action == "ROI relabelled"]
    assert details == ["'Rectm' -> 'rectum'", "'rectum' -> 'Rectm'", "'Rectm' -> 'rectum'"]
    with store.tx() as c:  # the validation report found the synonym on the renamed ROI
        c.execute("UPDATE studies SET report=?", (json.dumps({"relabel": {"rectum": "Rectum"}}),))
    study = store.study(study_id)
    assert study is not None and study.state == "needs_review"  # relabels wait for release
    assert staff.final_relabel(study) == {"Rectm": "Rectum", "rectum": "Rectum"}
    with sqlite3.connect(tmp_path / "node.sqlite") as conn:  # in the tamper-evident chain
        assert verify(conn).ok


def test_opted_out_is_never_released_and_only_admins_purge(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    study_id = _study(store, "opted_out")
    with pytest.raises(staff.Refused, match="opt-out"):
        staff.approve(store, study_id, "rita", override=True)
    with pytest.raises(staff.Refused, match="opt-out"):
        staff.hold(store, study_id, "", "rita")
    with pytest.raises(staff.Refused, match="only an administrator"):
        staff.purge(store, study_id, "rita", admin=False)
    assert staff.purge(store, study_id, "adam", admin=True) == 0  # its file was never there
    study = store.study(study_id)
    assert study is not None and study.state == "opted_out"
    with pytest.raises(staff.Refused, match="needs a reason"):
        staff.reject(store, study_id, " ", "rita")
