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
    write_study(study, slices=4, rois=["prostate", "Rectum", "Bladder", "PTV_1"])
    (next(study.rglob("README.txt"))).unlink()
    with orthanc(tmp_path / "orthanc") as pacs:
        config = node_config(tmp_path / "node", pacs.https, pacs.ca)
        with node(config) as n:
            sent = storescu(n.scp_port, study)
            assert sent.returncode == 0, sent.stderr
            n.wait_state("forwarded")
            instances = pacs.instances()
            assert len(instances) == 7
            for inst in instances:
                tags = pacs.tags(inst)
                assert tags["PatientID"].startswith("PACE-C-RXH-")
                assert "MÜLLER" not in json.dumps(tags, ensure_ascii=False)
                assert tags["PatientIdentityRemoved"] == "YES"
            rois = [t for t in map(pacs.tags, instances) if t.get("Modality") == "RTSTRUCT"]
            names = [r["ROIName"] for r in rois[0]["StructureSetROISequence"]]
            assert names == ["Prostate", "Rectum", "Bladder", "PTV_1"]  # the synonym relabelled
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
