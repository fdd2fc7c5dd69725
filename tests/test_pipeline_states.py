"""The pipeline's state transitions, one worker step at a time, on a temp-file store.

A real sample RT study (with planted identifiers) is indexed as the ingest would index it, and a
``Pipeline`` with no forwarder moves it on: no processes, no network, no sleeping.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from identifiable_node.config import Config, NodeSettings, StudySettings
from identifiable_node.optout import OptOut
from identifiable_node.pipeline import Pipeline
from identifiable_node.store import Store, StudyState
from identifiable_node.trials import Trials
from uploader.sample import Patient, write_study
from uploader.store.spool import Spool, name_for

from .conftest import KEY, ROOT

PATIENT = Patient()


def _pipeline(tmp_path: Path, *, quiet_s: float = 0.0, trial: str | None = "PACE-C") -> Pipeline:
    data = tmp_path / "data"
    config = Config(
        node=NodeSettings(
            data_dir=data, protocols_dir=ROOT / "protocols", site="RXH", default_protocol=trial
        ),
        study=StudySettings(quiet_period_s=quiet_s, review_when_cleaned=False),
    )
    optout = tmp_path / "optout.txt"
    optout.write_text("")
    return Pipeline(
        config,
        store=Store(data / "node.sqlite"),
        spool=Spool(data),
        trials=Trials(ROOT / "protocols", KEY, "RXH", None, {}),
        optout=OptOut(optout),
        forwarder=None,
        owner="worker-1",
    )


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.read_bytes()[128:132] == b"DICM"
    )


def _ingest(pipeline: Pipeline, folder: Path) -> int:
    """Index every file of a study as the ingest does (spool file first, then the row)."""
    for path in _dicom_files(folder):
        ds = dcmread(path, stop_before_pixels=True)
        target = Path(pipeline.spool.spool) / name_for(str(ds.SOPInstanceUID))
        shutil.copyfile(path, target)
        pipeline.store.add_instance(
            study_uid=str(ds.StudyInstanceUID),
            sop_uid=str(ds.SOPInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            modality=str(ds.Modality),
            path=str(target),
            patient_id=str(ds.PatientID),
            other_ids="",
            protocol=None,
            source="test",
        )
    (study,) = pipeline.store.studies()
    return study.id


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_study(folder, patient=PATIENT)
    return folder


def _state(pipeline: Pipeline, study_id: int) -> StudyState:
    study = pipeline.store.study(study_id)
    assert study is not None
    return study.state


def test_a_study_goes_from_receiving_to_pseudonymised(tmp_path: Path, sample: Path) -> None:
    pipeline = _pipeline(tmp_path)
    study_id = _ingest(pipeline, sample)
    seen = [_state(pipeline, study_id)]
    for _ in range(3):
        assert pipeline.step()
        seen.append(_state(pipeline, study_id))
    assert seen == [
        StudyState.RECEIVING,
        StudyState.COMPLETE,
        StudyState.VALIDATED,
        StudyState.PSEUDONYMISED,
    ]
    study = pipeline.store.study(study_id)
    assert study is not None and study.subject and study.session
    instances = pipeline.store.instances(study_id)
    assert instances and all(i.out_path for i in instances)
    assert [(k.patient_id, k.subject) for k in pipeline.store.links()] == [
        (PATIENT.patient_id, study.subject)
    ]
    actions = [r.action for r in pipeline.store.audit_rows(study_id)]
    assert actions[-3:] == [
        "receiving -> complete",
        "complete -> validated",
        "validated -> pseudonymised",
    ]
    assert pipeline.step()  # no forwarder: it waits, pseudonymised, and is not due again yet
    assert _state(pipeline, study_id) == StudyState.PSEUDONYMISED
    assert not pipeline.step()


def test_a_study_waits_out_its_quiet_period(tmp_path: Path, sample: Path) -> None:
    pipeline = _pipeline(tmp_path, quiet_s=3600)
    study_id = _ingest(pipeline, sample)
    assert pipeline.step()
    assert _state(pipeline, study_id) == StudyState.RECEIVING
    assert not pipeline.step()  # not due again before its quiet period ends


def test_an_opted_out_patient_stops_at_complete(tmp_path: Path, sample: Path) -> None:
    pipeline = _pipeline(tmp_path)
    assert pipeline.optout.path is not None
    pipeline.optout.path.write_text(PATIENT.patient_id + "\n")
    study_id = _ingest(pipeline, sample)
    pipeline.step()
    pipeline.step()
    assert _state(pipeline, study_id) == StudyState.OPTED_OUT
    assert not pipeline.step()  # nothing more happens to it
    assert not any(i.out_path for i in pipeline.store.instances(study_id))


def test_no_trial_waits_for_staff_and_their_decision_sends_it_on(
    tmp_path: Path, sample: Path
) -> None:
    pipeline = _pipeline(tmp_path, trial=None)
    study_id = _ingest(pipeline, sample)
    pipeline.step()
    pipeline.step()
    study = pipeline.store.study(study_id)
    assert study is not None and study.state == StudyState.NEEDS_REVIEW
    assert study.reason == "no trial assigned"
    pipeline.store.decide(study_id, "staff", protocol="NOPE")
    pipeline.step()
    study = pipeline.store.study(study_id)
    assert study is not None and (study.state, study.reason) == (
        StudyState.NEEDS_REVIEW, "unknown trial NOPE",
    )  # fmt: skip
    pipeline.store.decide(study_id, "staff", protocol="PACE-C")
    pipeline.step()
    assert _state(pipeline, study_id) == StudyState.VALIDATED


def test_a_late_instance_reopens_a_validated_study(tmp_path: Path, sample: Path) -> None:
    pipeline = _pipeline(tmp_path)
    study_id = _ingest(pipeline, sample)
    pipeline.step()
    pipeline.step()
    assert _state(pipeline, study_id) == StudyState.VALIDATED
    ct = next(p for p in _dicom_files(sample) if dcmread(p).Modality == "CT")
    ds = dcmread(ct)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID + ".9"
    target = Path(pipeline.spool.spool) / name_for(str(ds.SOPInstanceUID))
    ds.save_as(target)
    assert pipeline.store.add_instance(
        study_uid=str(ds.StudyInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        modality="CT",
        path=str(target),
        patient_id=str(ds.PatientID),
        other_ids="",
        protocol=None,
        source="test",
    )
    assert _state(pipeline, study_id) == StudyState.RECEIVING
    assert pipeline.store.audit_rows(study_id)[-1].action == "reopened by a late instance"
    assert pipeline.step()
    assert _state(pipeline, study_id) == StudyState.COMPLETE
