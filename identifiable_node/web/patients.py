"""What the pages show of a study's patient, read once from one of its files and kept in the
store (the worklist searches it). Never logged."""

from __future__ import annotations

from pydicom import dcmread

from identifiable_node.decisions import Patient
from identifiable_node.store import Store, Study

_TAGS = ["PatientName", "PatientBirthDate", "StudyDate", "AccessionNumber"]


def fill(store: Store) -> None:
    """Read the patient summary of every study that has none yet."""
    for study_id, path in store.unsummarised():
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
            values = [str(ds.get(k, "") or "") for k in _TAGS]
        except Exception:  # a file gone or unreadable: shown blank (ingest quarantines it)
            values = ["", "", "", ""]
        store.save_summary(study_id, *values)


def facts(store: Store, study: Study) -> Patient:
    """The patient's own data a manual ID must not look like."""
    fill(store)
    s = store.summary(study.id)
    others = tuple(i for i in study.other_ids.split("\\") if i)
    return Patient(study.patient_id, others, s["name"], s["birth_date"])
