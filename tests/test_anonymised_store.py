"""The anonymised node's store and the staff decisions on it, on a temp file.

No processes, no network: each test runs in milliseconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from anonymised_node.store import PUSH_STATES, AnonState, AnonStore
from anonymised_node.web.decisions import Refused, decide

CT = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"


@pytest.fixture
def store(tmp_path: Path) -> AnonStore:
    return AnonStore(tmp_path / "anonymised.sqlite")


def _manifest(store: AnonStore, study: str, uids: list[str], protocol: str = "PACE-C") -> None:
    store.manifest(
        study,
        {
            "study_uid": study,
            "protocol": protocol,
            "subject": "S-1",
            "session": "S-1_CT01",
            "instances": len(uids),
            "sop_instance_uids": uids,
        },
    )


def _add(store: AnonStore, sop: str, study: str = "2.25.1", digest: str = "d") -> bool:
    return store.add_instance(
        study_uid=study,
        sop_uid=sop,
        sop_class=CT if sop.endswith("1") else RTSTRUCT,
        path=f"/received/{sop}.dcm",
        protocol="PACE-C",
        subject="S-1",
        session="S-1_CT01",
        digest=digest,
    )


def _ready(store: AnonStore, study: str = "2.25.1") -> int:
    _manifest(store, study, [f"{study}.1", f"{study}.2"])
    _add(store, f"{study}.1", study)
    _add(store, f"{study}.2", study)
    (found,) = [s for s in store.studies() if s.study_uid == study]
    return found.id


def test_a_study_is_ready_when_every_announced_instance_arrived(store: AnonStore) -> None:
    _manifest(store, "2.25.1", ["2.25.1.1", "2.25.1.2"])
    announced = store.announced("2.25.1")
    assert announced is not None and announced.sop_uids == {"2.25.1.1", "2.25.1.2"}
    assert _add(store, "2.25.1.1")
    (study,) = store.studies()
    assert study.state == AnonState.RECEIVING
    assert _add(store, "2.25.1.2")
    assert store.studies(AnonState.READY)[0].id == study.id
    assert store.audit_rows(study.id)[-1].action == "receiving -> ready"


def test_a_resent_copy_replaces_the_stored_one_only_with_other_bytes(store: AnonStore) -> None:
    study_id = _ready(store)
    assert not _add(store, "2.25.1.1", digest="d")  # the same bytes: nothing changes
    assert [r.action for r in store.audit_rows(study_id)].count("instance replaced") == 0
    assert not _add(store, "2.25.1.1", digest="other")
    held = store.held("2.25.1.1")
    assert held is not None and (held.state, held.digest) == (AnonState.READY, "other")
    assert [r.action for r in store.audit_rows(study_id)].count("instance replaced") == 1


def test_set_state_sets_only_the_fields_given(store: AnonStore) -> None:
    study_id = _ready(store)
    store.set_state(study_id, AnonState.FAILED, "worker", "down", reason="down", attempts=2)
    store.set_state(study_id, AnonState.APPROVED, "alice", "push retried", next_attempt=0)
    study = store.study(study_id)
    assert study is not None
    assert (study.state, study.reason, study.attempts) == (AnonState.APPROVED, "down", 2)
    with pytest.raises(KeyError):
        store.set_state(99, AnonState.APPROVED, "alice")
    with pytest.raises(ValueError, match="sent"):
        store.set_state(study_id, "sent", "alice")  # type: ignore[arg-type]


def test_the_push_worker_claims_approved_studies_in_turn(store: AnonStore) -> None:
    first, second = _ready(store, "2.25.1"), _ready(store, "2.25.2")
    assert store.claim(PUSH_STATES, 60.0) is None  # nothing approved yet
    assert store.ready_in(["PACE-C"]) == [first, second] and store.ready_in(["LUNG"]) == []
    store.set_state(first, AnonState.APPROVED, "alice")
    claimed = store.claim(PUSH_STATES, 60.0)
    assert claimed is not None and claimed.id == first
    assert store.claim(PUSH_STATES, 60.0) is None  # leased
    store.mark_uploaded(["2.25.1.1", "2.25.1.2"])
    assert all(up for _u, _c, _p, up in store.instances(first))
    store.set_state(first, AnonState.UPLOADED, "worker", uploaded_at=time.time() - 10)
    assert store.uploaded_before(time.time()) == [first]
    store.set_state(first, AnonState.UPLOADED, "retention", purged=True)
    assert store.uploaded_before(time.time()) == []
    assert store.held_study("2.25.1") is None and store.held_study("2.25.2") == second


def test_queue_listing_counts_and_refusals(store: AnonStore) -> None:
    first, second = _ready(store, "2.25.1"), _ready(store, "2.25.2")
    store.set_state(second, AnonState.REJECTED, "alice", "wrong patient", reason="wrong patient")
    assert [s.id for s in store.listing()] == [first, second]
    assert [s.id for s in store.listing(state="rejected")] == [second]
    assert [s.id for s in store.listing(protocol="LUNG")] == []
    assert [s.id for s in store.listing(study_id=first)] == [first]
    counts = {(c.study_id, c.sop_class): c.n for c in store.instance_counts()}
    assert counts == {(first, CT): 1, (first, RTSTRUCT): 1, (second, CT): 1, (second, RTSTRUCT): 1}
    assert [c.study_id for c in store.instance_counts(second)] == [second, second]
    assert store.protocols() == ["PACE-C"]
    assert store.study_uids() == {first: "2.25.1", second: "2.25.2"}
    store.refuse("k-1", ["PatientName: a person name"])
    store.refuse("k-2", [])
    assert [r.uid_digest for r in store.refusals()] == ["k-1", "k-2"]
    assert [r.uid_digest for r in store.refusals(newest_first=True)] == ["k-2", "k-1"]
    assert store.counts()["refused_instances"] == 2 and store.counts()["rejected"] == 1


def test_staff_decisions_follow_the_states(store: AnonStore) -> None:
    study_id = _ready(store)
    with pytest.raises(Refused, match="needs a reason"):
        decide(store, study_id, "reject", "  ", "alice", admin=False)
    with pytest.raises(Refused, match="only a failed push"):
        decide(store, study_id, "retry", "", "alice", admin=False)
    with pytest.raises(Refused, match="unknown decision"):
        decide(store, study_id, "delete", "", "alice", admin=True)
    assert decide(store, study_id, "reject", "wrong trial", "alice", admin=False) == "rejected"
    with pytest.raises(Refused, match="cannot approve a study that is rejected"):
        decide(store, study_id, "approve", "", "alice", admin=False)
    with pytest.raises(Refused, match="only an administrator"):
        decide(store, study_id, "reopen", "", "alice", admin=False)
    decide(store, study_id, "reopen", "", "root", admin=True)
    decide(store, study_id, "approve", "", "bob", admin=False)
    study = store.study(study_id)
    assert study is not None and study.state == AnonState.APPROVED and study.reason == ""
    store.set_state(study_id, AnonState.FAILED, "worker", attempts=8, next_attempt=1e18)
    assert decide(store, study_id, "retry", "", "bob", admin=False) == "queued to push again"
    study = store.study(study_id)
    assert study is not None and (study.state, study.attempts) == (AnonState.APPROVED, 0)
    actors = [(r.actor, r.action) for r in store.audit_rows(study_id)][-4:]
    assert actors == [
        ("root", "rejected -> ready"),
        ("bob", "ready -> approved"),
        ("worker", "approved -> failed"),
        ("bob", "failed -> approved"),
    ]
    with pytest.raises(Refused, match="no study 99"):
        decide(store, 99, "approve", "", "bob", admin=False)
