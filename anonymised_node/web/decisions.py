"""Staff decisions from the pages, through the store's one audited state change.

approve / reject: a study waiting for approval (reject needs a reason); retry: a failed push is
queued again now; reopen (admins): a rejected study goes back to the queue.
"""

from __future__ import annotations

from enum import StrEnum

from anonymised_node.store import AnonState, AnonStore


class Decision(StrEnum):
    """What staff can decide on a study."""

    APPROVE = "approve"
    REJECT = "reject"
    RETRY = "retry"
    REOPEN = "reopen"


class Refused(Exception):  # noqa: N818 - a decision that is not allowed, shown as it is
    """The decision does not apply to the study in its state (or to this user)."""


def decide(
    store: AnonStore, study_id: int, decision: str, reason: str, name: str, *, admin: bool
) -> str:
    """Apply a decision by ``name`` (the pages, the ``review`` command); return what happened.

    Raises:
        Refused: unknown study, wrong state, missing reason, or not an admin for reopen.
    """
    study = store.study(study_id)
    if study is None:
        raise Refused(f"no study {study_id}")
    try:
        kind = Decision(decision)
    except ValueError:
        raise Refused(f"unknown decision {decision!r}") from None
    reason = reason.strip()
    if kind in (Decision.APPROVE, Decision.REJECT) and study.state != AnonState.READY:
        raise Refused(f"cannot {kind} a study that is {study.state}")
    if kind == Decision.APPROVE:
        store.set_state(study_id, AnonState.APPROVED, name)
        return "approved: the push starts"
    if kind == Decision.REJECT:
        if not reason:
            raise Refused("a rejection needs a reason")
        store.set_state(study_id, AnonState.REJECTED, name, reason, reason=reason)
        return "rejected"
    if kind == Decision.RETRY:
        if study.state != AnonState.FAILED:
            raise Refused(f"only a failed push can be retried (this study is {study.state})")
        store.set_state(
            study_id, AnonState.APPROVED, name, "push retried", next_attempt=0, attempts=0
        )
        return "queued to push again"
    # Decision.REOPEN
    if not admin:
        raise Refused("only an administrator can re-open a rejected study")
    if study.state != AnonState.REJECTED:
        raise Refused(f"only a rejected study can be re-opened (this one is {study.state})")
    store.set_state(study_id, AnonState.READY, name, reason or "re-opened", reason="")
    return "re-opened: waiting for approval"
