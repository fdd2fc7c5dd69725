"""The identifiable node end to end, against real peers: dcmtk storescu sends a CT+RT study to
our SCP; the node completes, validates, pseudonymises and forwards it by STOW-RS over TLS to
Orthanc, whose certificate is made in the test."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from uploader.sample import write_study

from .peers import node, node_config, orthanc, storescu

pytestmark = pytest.mark.integration


def test_a_study_sent_by_storescu_arrives_pseudonymised_in_the_repository(tmp_path: Path) -> None:
    study = tmp_path / "study"
    # 20 slices: enough for the de-identification worker processes to take the study
    write_study(study, slices=20, rois=["prostate", "Rectum", "Bladder", "PTV_1"])
    (next(study.rglob("README.txt"))).unlink()
    with orthanc(tmp_path / "orthanc") as pacs:
        config = node_config(tmp_path / "node", pacs.https, pacs.ca)
        with node(config) as n:
            sent = storescu(n.scp_port, study)
            assert sent.returncode == 0, sent.stderr
            n.wait_state("forwarded", timeout=60)
            instances = pacs.instances()
            assert len(instances) == 23
            subjects, studies = set(), set()
            for inst in instances:
                tags = pacs.tags(inst)
                subjects.add(tags["PatientID"])
                studies.add(tags["StudyInstanceUID"])
                assert tags["PatientID"].startswith("PACE-C-RXH-")
                assert "MÜLLER" not in json.dumps(tags, ensure_ascii=False)
                assert tags["PatientIdentityRemoved"] == "YES"
            rois = [t for t in map(pacs.tags, instances) if t.get("Modality") == "RTSTRUCT"]
            names = [r["ROIName"] for r in rois[0]["StructureSetROISequence"]]
            assert names == ["Prostate", "Rectum", "Bladder", "PTV_1"]  # the synonym relabelled
            assert len(subjects) == len(studies) == 1
            n.proc.send_signal(signal.SIGTERM)
            assert n.proc.wait(15) == 0


def test_forwarding_is_refused_when_the_certificate_does_not_match(tmp_path: Path) -> None:
    from .peers import make_cert

    study = tmp_path / "study"
    write_study(study, slices=2, rois=["Prostate", "Rectum", "Bladder", "PTV_1"])
    other_ca = make_cert(tmp_path, "other")
    with orthanc(tmp_path / "orthanc") as pacs:
        config = node_config(tmp_path / "node", pacs.https, other_ca)
        with node(config) as n:
            assert storescu(n.scp_port, study).returncode == 0
            status = n.wait_state("needs_review")
            reason = status["attention"][0]["reason"]
            assert "certificate is not trusted" in reason
            assert pacs.instances() == []


def _rois_ok() -> list[str]:
    return ["Prostate", "Rectum", "Bladder", "PTV_1"]


def test_an_opted_out_patient_never_leaves_and_a_failing_study_waits(tmp_path: Path) -> None:
    from uploader.sample import Patient

    optout = tmp_path / "optout.txt"
    optout.write_text("943 476 5919\n")  # the sample patient's NHS number, written with spaces
    blocked, failing = tmp_path / "blocked", tmp_path / "failing"
    write_study(blocked, slices=2, rois=_rois_ok())
    other = Patient(patient_id="4857773456", tag="9", name="JONES^ANN")
    write_study(failing, slices=2, rois=["Prostate", "Rectm"], patient=other)  # no Bladder, a typo
    with orthanc(tmp_path / "orthanc") as pacs:
        config = node_config(
            tmp_path / "node", pacs.https, pacs.ca, optout__file=str(optout), optout__mode="deny"
        )
        with node(config) as n:
            assert storescu(n.scp_port, blocked).returncode == 0
            assert storescu(n.scp_port, failing).returncode == 0
            status = n.wait_state("opted_out")
            status = n.wait_state("needs_review")
            reasons = {a["state"]: a["reason"] for a in status["attention"]}
            assert "opt-out" in reasons["opted_out"]
            assert "validation check(s) failed" in reasons["needs_review"]
            assert pacs.instances() == []
            waiting = next(a["study"] for a in status["attention"] if a["state"] == "needs_review")
            from .conftest import run_cli

            shown = run_cli("review", "show", str(waiting), "--config", config)
            assert "FAIL structure:Bladder" in shown.stdout and "Rectm" in shown.stdout
            approve = run_cli(
                "review",
                "approve",
                str(waiting),
                "--config",
                config,
                "--override",
                "--relabel",
                "Rectm=Rectum",
                "--by",
                "radiographer1",
            )
            assert approve.returncode == 0, approve.stderr
            n.wait_state("forwarded")
            assert len(pacs.instances()) == 5  # the approved study only
            tags = [pacs.tags(i) for i in pacs.instances()]
            rs = next(t for t in tags if t.get("Modality") == "RTSTRUCT")
            assert [r["ROIName"] for r in rs["StructureSetROISequence"]] == ["Prostate", "Rectum"]
            assert all(t["PatientID"] != "9434765919" for t in tags)
            purge = run_cli("purge", "--opted-out", "--config", config)
            assert "purged 1 opted-out study" in purge.stdout


def test_watched_folder_takes_slow_writes_and_renamed_files(tmp_path: Path) -> None:
    import shutil
    import time

    study = tmp_path / "study"
    files = write_study(study, slices=2, rois=_rois_ok())
    with orthanc(tmp_path / "orthanc") as pacs:
        config = node_config(tmp_path / "node", pacs.https, pacs.ca, scp__enabled=False)
        with node(config) as n:
            incoming = tmp_path / "node" / "incoming" / "PACE-C"
            incoming.mkdir(parents=True, exist_ok=True)
            slow = files[0].read_bytes()
            with (incoming / "slow.dcm").open("wb") as f:  # written over 2 s in small pieces
                for i in range(0, len(slow), len(slow) // 8 + 1):
                    f.write(slow[i : i + len(slow) // 8 + 1])
                    f.flush()
                    time.sleep(0.25)
            for path in files[1:]:
                tmp = incoming / f".{path.name}.partial"
                shutil.copy(path, tmp)
                tmp.rename(incoming / f"{path.parent.name}_{path.name}")
            (incoming / "notes.txt").write_text("not DICOM")
            n.wait_state("forwarded")
            assert len(pacs.instances()) == 5
            data = tmp_path / "node" / "data"
            assert sorted(p.name for p in (data / "processed" / "PACE-C").iterdir()) == sorted(
                ["slow.dcm", *[f"{p.parent.name}_{p.name}" for p in files[1:]]]
            )
            quarantined = list((data / "quarantine").rglob("notes.txt.reason.txt"))
            assert quarantined and "not a readable DICOM" in quarantined[0].read_text()
            assert not any(incoming.iterdir())


@pytest.mark.parametrize("moment", ["after_receive", "while_forwarding"])
def test_kill_9_loses_and_duplicates_nothing(tmp_path: Path, moment: str) -> None:
    import time

    from .peers import free_port, wait_for

    study = tmp_path / "study"
    write_study(study, slices=6, rois=_rois_ok())
    (next(study.rglob("README.txt"))).unlink()
    with orthanc(tmp_path / "orthanc") as pacs:
        down = (
            f"https://127.0.0.1:{free_port()}/dicom-web"  # the repository is unreachable at first
        )
        url = down if moment == "while_forwarding" else pacs.https
        config = node_config(tmp_path / "node", url, pacs.ca)
        with node(config) as n:
            assert storescu(n.scp_port, study).returncode == 0
            if moment == "while_forwarding":
                wait_for(
                    lambda: "pseudonymised" in n.states(), 30, "forwarding to be retried", 0.05
                )
            spooled = len(list((n.data / "spool").rglob("*.dcm")))
            n.proc.kill()  # kill -9: no chance to tidy up
            n.proc.wait(10)
            assert n.status()["counts"]["forwarded"] == 0
        config.write_text(config.read_text().replace(down, pacs.https))  # the network is back
        time.sleep(0.5)
        with node(config) as again:
            again.wait_state("forwarded", timeout=90)
            assert len(pacs.instances()) == 9
            assert again.status()["counts"]["forwarded"] == 1
        if spooled < 9:  # killed before the spool files were written: the journal had them
            log = (config.parent / "node.log").read_text()
            assert f"start-up: {9 - spooled} journaled instance(s) written" in log, log[-3000:]


def test_calling_aet_filter_called_aet_trial_manual_ids_and_link_export(tmp_path: Path) -> None:
    from .conftest import run_cli

    study = tmp_path / "study"
    write_study(study, slices=2, rois=_rois_ok())
    manual = tmp_path / "manual.csv"
    manual.write_text("PatientID,SubjectID\n9434765919,PACE-C-RXH-000042\n")
    with orthanc(tmp_path / "orthanc") as pacs:
        config = node_config(
            tmp_path / "node",
            pacs.https,
            pacs.ca,
            scp__allowed_calling_aets=["CTSIM01"],
            scp__protocols_by_called_aet={"PACEC": "PACE-C"},
            node__default_protocol=None,
        )
        text = config.read_text() + f"manual_ids:\n  PACE-C: {manual}\n"
        config.write_text(text)
        with node(config) as n:
            refused = storescu(n.scp_port, study, calling="STRANGER", called="PACEC")
            assert refused.returncode != 0
            assert n.states() == []
            assert storescu(n.scp_port, study, calling="CTSIM01", called="PACEC").returncode == 0
            n.wait_state("forwarded")
            assert {pacs.tags(i)["PatientID"] for i in pacs.instances()} == {"PACE-C-RXH-000042"}
            links = run_cli("link", "export", "--config", config)
            rows = links.stdout.splitlines()
            assert rows[0] == "protocol,patient_id,study_uid,subject,session"
            assert rows[1].startswith(
                "PACE-C,9434765919,1.2.826.0.1.3680043.9.7133.19620314.1.1,PACE-C-RXH-000042,"
            )


def test_a_study_whose_kept_text_named_someone_waits_for_staff(tmp_path: Path) -> None:
    """Cleaning struck the patient's name from descriptions (the sample plants it there): with
    study.review_when_cleaned (the default) the study waits in review, saying where and what
    kind, never the value; approving forwards the cleaned outputs."""
    from .conftest import run_cli

    study = tmp_path / "study"
    write_study(study, slices=2, rois=_rois_ok())
    with orthanc(tmp_path / "orthanc") as pacs:
        config = node_config(
            tmp_path / "node", pacs.https, pacs.ca, study__review_when_cleaned=True
        )
        with node(config) as n:
            assert storescu(n.scp_port, study).returncode == 0
            status = n.wait_state("needs_review")
            reason = next(a["reason"] for a in status["attention"])
            assert "cleaning struck an identifier" in reason and "ImageComments: ID" in reason
            assert "MÜLLER" not in reason.upper() and "9434765919" not in reason
            assert pacs.instances() == []
            waiting = next(a["study"] for a in status["attention"])
            approve = run_cli(
                "review", "approve", str(waiting), "--config", config, "--by", "physicist1"
            )
            assert approve.returncode == 0, approve.stderr
            n.wait_state("forwarded")
            tags = [pacs.tags(i) for i in pacs.instances()]
            assert len(tags) == 5
            ct = next(t for t in tags if t.get("Modality") == "CT")
            assert "***" in ct["StudyDescription"]
            assert "MÜLLER" not in json.dumps(tags, ensure_ascii=False).upper()
