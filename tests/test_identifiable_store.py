"""The identifiable node's store on a temp file: every method, and the transitions it allows.

No processes, no network: each test runs in milliseconds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from identifiable_node.store import (
    STATES,
    BulkStatus,
    SetAsideKind,
    Store,
    StudyState,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "node.sqlite")


def _add(store: Store, sop: str, study: str = "1.2.3", **kw: str) -> bool:
    fields = {
        "series_uid": "1.2.3.1",
        "modality": "CT",
        "path": f"/spool/{sop}.dcm",
        "patient_id": "MRN001",
        "other_ids": "",
        "protocol": None,
        "source": "scp",
        **kw,
    }
    return store.add_instance(study_uid=study, sop_uid=sop, **fields)  # type: ignore[arg-type]


def test_instances_make_one_study_and_duplicates_are_refused(store: Store) -> None:
    assert _add(store, "1.1") and _add(store, "1.2")
    assert not _add(store, "1.1")  # known: no second row, no empty study
    (study,) = store.studies()
    assert study.state == StudyState.RECEIVING and study.patient_id == "MRN001"
    assert [i.sop_uid for i in store.instances(study.id)] == ["1.1", "1.2"]
    assert store.known_paths() == {"/spool/1.1.dcm", "/spool/1.2.dcm"}
    assert store.counts() == {**{str(s): 0 for s in STATES}, "receiving": 1}
    assert [r.action for r in store.audit_rows(study.id)] == ["study created"]


def test_an_assignment_made_before_retrieval_is_used(store: Store) -> None:
    store.assign("1.2.3", "PACE-C", subject="S-042", session="")
    _add(store, "1.1")
    (study,) = store.studies()
    assert study.protocol == "PACE-C" and study.decided == {"subject": "S-042"}


def test_a_claim_holds_a_lease_and_release_moves_the_state(store: Store) -> None:
    _add(store, "1.1")
    claimed = store.claim("w1", 60.0)
    assert claimed is not None and claimed.state == StudyState.RECEIVING
    assert store.claim("w2", 60.0) is None  # leased
    assert store.release(
        claimed.id, StudyState.COMPLETE, "w1", "2 modalities", lease="w1", protocol="PACE-C"
    )
    study = store.study(claimed.id)
    assert study is not None and (study.state, study.protocol) == (StudyState.COMPLETE, "PACE-C")
    assert store.audit_rows(claimed.id)[-1].action == "receiving -> complete"
    again = store.claim("w2", 60.0)
    assert again is not None and again.id == claimed.id


def test_release_keeps_the_fields_it_is_not_given(store: Store) -> None:
    _add(store, "1.1")
    claimed = store.claim("w1", 60.0)
    assert claimed is not None
    store.release(claimed.id, StudyState.PSEUDONYMISED, "w1", subject="S-1", session="S-1_CT01")
    store.release(claimed.id, StudyState.PSEUDONYMISED, "w1", attempts=3, retry_in=30.0)
    study = store.study(claimed.id)
    assert study is not None
    assert (study.subject, study.session, study.attempts) == ("S-1", "S-1_CT01", 3)
    assert store.claim("w1", 60.0) is None  # its retry time has not come


def test_release_refuses_a_state_that_does_not_exist(store: Store) -> None:
    _add(store, "1.1")
    with pytest.raises(ValueError, match="sent"):
        store.release(1, "sent", "w1")  # type: ignore[arg-type]


def test_a_late_instance_reopens_the_study_and_the_old_claim_loses(store: Store) -> None:
    _add(store, "1.1")
    claimed = store.claim("w1", 60.0)
    assert claimed is not None
    store.release(claimed.id, StudyState.VALIDATED, "w1", lease="w1")
    claimed = store.claim("w1", 60.0)
    assert claimed is not None
    _add(store, "1.2")
    assert not store.release(claimed.id, StudyState.PSEUDONYMISED, "w1", lease="w1")
    study = store.study(claimed.id)
    assert study is not None and study.state == StudyState.RECEIVING


@pytest.mark.parametrize("state", [StudyState.OPTED_OUT, StudyState.QUARANTINED])
def test_a_late_instance_leaves_a_stopped_study_alone(store: Store, state: StudyState) -> None:
    _add(store, "1.1")
    store.release(1, state, "w1")
    _add(store, "1.2")
    study = store.study(1)
    assert study is not None and study.state == state


def test_a_conflicting_copy_stops_a_study_being_worked_on(store: Store) -> None:
    _add(store, "1.1")
    store.release(1, StudyState.VALIDATED, "w1")
    assert store.conflict("1.1", "/q/1.1", "other bytes") == 1
    study = store.study(1)
    assert study is not None and study.state == StudyState.NEEDS_REVIEW
    assert "other bytes" in study.reason
    (aside,) = store.set_aside_rows(1)
    assert (aside.kind, aside.path) == (SetAsideKind.CONFLICT, "/q/1.1")
    assert store.conflict("9.9", "/q/9.9", "unknown instance") is None


def test_setting_an_instance_aside_takes_it_out_of_its_study(store: Store) -> None:
    _add(store, "1.1")
    _add(store, "1.2")
    store.set_aside(1, SetAsideKind.QUARANTINED, "/q/1.2", "unreadable", sop_uid="1.2")
    assert [i.sop_uid for i in store.instances(1)] == ["1.1"]
    assert [a.kind for a in store.set_aside_rows()] == [SetAsideKind.QUARANTINED]


def test_staff_decisions_merge_and_send_the_study_back(store: Store) -> None:
    _add(store, "1.1")
    store.release(1, StudyState.NEEDS_REVIEW, "w1", reason="2 checks failed")
    store.decide(1, "alice", override=True)
    store.decide(1, "bob", relabel={"prost": "Prostate"}, subject="S-9")
    study = store.study(1)
    assert study is not None and study.state == StudyState.COMPLETE and study.reason == ""
    assert study.decided == {"override": True, "relabel": {"prost": "Prostate"}, "subject": "S-9"}
    last = store.audit_rows(1)[-1]
    assert (last.actor, last.detail) == ("bob", "decision: relabel, subject")
    with pytest.raises(KeyError):
        store.decide(99, "bob", override=True)


def test_outputs_forwarding_and_links(store: Store) -> None:
    _add(store, "1.1")
    _add(store, "1.2")
    store.set_outputs([("1.1", "/out/a.dcm", "2.25.1"), ("1.2", "", "")])
    store.mark_forwarded(["1.1"])
    got = {i.sop_uid: (i.out_path, i.out_sop_uid, i.forwarded) for i in store.instances(1)}
    assert got == {"1.1": ("/out/a.dcm", "2.25.1", 1), "1.2": ("", "", 0)}
    store.link("PACE-C", "MRN001", "1.2.3", "S-1", "S-1_CT01")
    store.link("LUNG", "MRN002", "1.2.4", "L-1", "L-1_CT01")
    assert [k.subject for k in store.links()] == ["L-1", "S-1"]
    assert [k.study_uid for k in store.links("PACE-C")] == ["1.2.3"]


def test_bulk_rows_resume_where_they_stopped(store: Store) -> None:
    store.add_bulk_rows("j", [(2, {"accession": "A1"}), (3, {"patient_id": "P2"})])
    store.add_bulk_rows("j", [(2, {"accession": "changed"})])  # recorded once
    assert store.pending_bulk_rows("j") == [(2, {"accession": "A1"}), (3, {"patient_id": "P2"})]
    store.finish_bulk_row("j", 2, BulkStatus.DONE, matched=1, arrived=5, failed=0, message="")
    store.finish_bulk_row(
        "j", 3, BulkStatus.NO_MATCH, matched=0, arrived=0, failed=0, message="nothing matched"
    )
    assert store.pending_bulk_rows("j") == [(3, {"patient_id": "P2"})]
    assert [(r.line, r.status, r.arrived) for r in store.bulk_rows("j")] == [
        (2, BulkStatus.DONE, 5),
        (3, BulkStatus.NO_MATCH, 0),
    ]


def test_states_are_stored_as_the_same_strings(store: Store) -> None:
    _add(store, "1.1")
    store.release(1, StudyState.NEEDS_REVIEW, "w1")
    raw = sqlite3.connect(store.path).execute("SELECT state FROM studies").fetchone()[0]
    assert raw == "needs_review" and type(raw) is str
    assert store.audit_rows(1)[-1].action == "receiving -> needs_review"
