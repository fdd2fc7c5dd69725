"""What the queue and study pages show, read from the node's store in a few queries.

Refusals are matched to a study through its manifest's SOP Instance UIDs, by the same keyed
digest the intake records them under (the UID itself is never kept): an instance the second check
refused is never stored, so that list is the only link between the two.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from anonymised_node.store import AnonState, AnonStore

MODALITY = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.481.1": "RTIMAGE",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.8": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
}
LABEL = {
    AnonState.RECEIVING: "receiving",
    AnonState.READY: "waiting for approval",
    AnonState.APPROVED: "approved, queued to push",
    AnonState.UPLOADING: "pushing",
    AnonState.UPLOADED: "confirmed at the repository",
    AnonState.FAILED: "push failed",
    AnonState.REJECTED: "rejected",
}
SORTS = ("new", "old")  # by arrival: newest or oldest first


@dataclass
class Row:
    """One study in the queue."""

    id: int
    protocol: str
    subject: str
    session: str
    state: AnonState
    reason: str
    attempts: int
    expected: int | None
    arrived: float
    instances: int = 0
    uploaded: int = 0
    modalities: dict[str, int] = field(default_factory=dict)
    refused: list[list[str]] = field(default_factory=list)
    manifest_text: str | None = None

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The study's manifest (parsed when first asked for: the queue rarely needs it)."""
        return _manifest(self.manifest_text)

    @property
    def label(self) -> str:
        """The state in words."""
        return LABEL.get(self.state, self.state)

    @property
    def verdict(self) -> str:
        """The second check's verdict on the study."""
        if self.refused:
            return f"{len(self.refused)} instance(s) refused"
        return f"all {self.instances} passed" if self.instances else "nothing stored yet"


Digest = Callable[[str], str]  # SOP Instance UID -> the digest a refusal is recorded by


def rows(
    store: AnonStore,
    state: str = "",
    trial: str = "",
    sort: str = "new",
    *,
    study_id: int = 0,
    digest: Digest | None = None,
) -> list[Row]:
    """Studies for the queue (filtered, sorted), with their counts and refusals."""
    out = {
        r.id: Row(
            r.id,
            r.protocol,
            r.subject,
            r.session,
            r.state,
            r.reason,
            r.attempts,
            r.expected,
            r.updated,
            manifest_text=r.manifest,
        )
        for r in store.listing(state, trial, study_id)
    }
    if not out:
        return []
    # one pass over the instances, grouped (no index on study_id is assumed)
    first: dict[int, float] = {}
    for c in store.instance_counts(study_id):
        row = out.get(c.study_id)
        if row is None:
            continue
        name = MODALITY.get(c.sop_class, "OT")
        row.modalities[name] = row.modalities.get(name, 0) + c.n
        row.instances += c.n
        row.uploaded += c.uploaded
        first[row.id] = min(first.get(row.id, c.first), c.first)
    for row in out.values():
        row.arrived = first.get(row.id, row.arrived)
    refusals = refused_by_digest(store) if digest is not None else {}
    for row in out.values():
        uids = (row.manifest.get("sop_instance_uids") or []) if refusals else []
        marks = [digest(str(u)) for u in uids] if digest is not None else []
        row.refused = [refusals[m] for m in marks if m in refusals]
    newest = sort != "old"
    return sorted(out.values(), key=lambda r: (r.arrived, r.id), reverse=newest)


def _problems(text: str) -> list[str]:
    try:
        return [str(p) for p in json.loads(text)]
    except (TypeError, ValueError):
        return [str(text)]


def refused_by_digest(store: AnonStore) -> dict[str, list[str]]:
    """Problems of each refused instance, by the digest of its UID."""
    return {r.uid_digest: _problems(r.problems) for r in store.refusals()}


def unmatched_refusals(
    store: AnonStore, studies: list[Row], digest: Digest | None
) -> list[tuple[float, list[str]]]:
    """Refusals no study's manifest names (the whole study was refused, or no manifest came)."""
    found = store.refusals(newest_first=True)
    if not found:
        return []
    named = {
        digest(str(u)) for row in studies for u in row.manifest.get("sop_instance_uids") or []
    } if digest is not None else set()  # fmt: skip
    out = []
    for r in found:
        if r.uid_digest not in named:
            out.append((r.at, _problems(r.problems)))
    return out


def trials(store: AnonStore) -> list[str]:
    """Trials with studies here."""
    return store.protocols()


def _manifest(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
