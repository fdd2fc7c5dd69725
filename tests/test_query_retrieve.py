"""Query/retrieve against Orthanc as the PACS: C-FIND, and a bulk CSV retrieve by C-MOVE to our
SCP; the studies go through the node to a second Orthanc, the repository."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import requests

from uploader.sample import Patient, write_study

from .conftest import run_cli
from .peers import free_port, node, node_config, orthanc

pytestmark = pytest.mark.integration

PATIENTS = [
    Patient(patient_id="4000000001", accession="ACC0001", tag="1", name="ALPHA^ANN"),
    Patient(patient_id="4000000002", accession="ACC0002", tag="2", name="BETA^BOB"),
    Patient(patient_id="4000000003", accession="ACC0003", tag="3", name="GAMMA^CY"),
]


def test_find_and_bulk_retrieve_from_pacs(tmp_path: Path) -> None:
    scp_port = free_port()
    modality = {
        "uploader": {
            "AET": "UPLOADER",
            "Host": "127.0.0.1",
            "Port": scp_port,
            "AllowFind": True,
            "AllowMove": True,
            "AllowStore": True,
        }
    }
    with (
        orthanc(tmp_path / "pacs", modalities=modality, aet="PACS") as pacs,
        orthanc(tmp_path / "repo") as repo,
    ):
        for i, p in enumerate(PATIENTS):
            for f in write_study(
                tmp_path / f"s{i}",
                slices=2,
                patient=p,
                rois=["Prostate", "Rectum", "Bladder", "PTV_1"],
            ):
                assert requests.post(f"{pacs.http}/instances", data=f.read_bytes(), timeout=10).ok
        config = node_config(
            tmp_path / "node",
            repo.https,
            repo.ca,
            scp__port=scp_port,
            pacs__ae_title="PACS",
            pacs__host="127.0.0.1",
            pacs__port=pacs.dicom_port,
            node__default_protocol=None,
        )
        with node(config) as n:
            found = run_cli(
                "qr", "find", "--config", config, "--patient-id", "4000000002", "--json"
            )
            assert found.returncode == 0, found.stderr
            (match,) = json.loads(found.stdout)
            assert match["accession"] == "ACC0002"
            bulk = tmp_path / "bulk.csv"
            with bulk.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["Accession Number", "Patient ID", "Study Date", "Subject", "Trial"])
                w.writerow(["ACC0001", "", "20240101-20241231", "PACE-C-RXH-000101", "PACE-C"])
                w.writerow(["", "4000000003", "", "PACE-C-RXH-000103", "PACE-C"])
                w.writerow(["ACC9999", "", "", "", "PACE-C"])
            result = run_cli("qr", "retrieve", "--config", config, "--csv", bulk, "--json")
            rows = json.loads(result.stdout)["rows"]
            assert [(r["line"], r["status"], r["matched"], r["arrived"]) for r in rows] == [
                (2, "done", 1, 5),
                (3, "done", 1, 5),
                (4, "no match", 0, 0),
            ]
            assert result.returncode == 1  # one row found nothing
            n.wait_state("forwarded", n=2, timeout=90)
            subjects = {repo.tags(i)["PatientID"] for i in repo.instances()}
            assert subjects == {"PACE-C-RXH-000101", "PACE-C-RXH-000103"}
            again = run_cli("qr", "retrieve", "--config", config, "--csv", bulk, "--json")
            rows_again = json.loads(again.stdout)["rows"]
            assert [r["status"] for r in rows_again] == ["done", "done", "no match"]  # resumed


def test_bulk_csv_errors_name_the_line(tmp_path: Path) -> None:
    from identifiable_node.bulk import read_rows
    from uploader.errors import ConfigError

    bad = tmp_path / "bad.csv"
    bad.write_text("Accession Number,Study Date\nACC1,2024-01-01\n")
    with pytest.raises(ConfigError, match=r"bad.csv:2: Study Date must be"):
        read_rows(bad)
    bad.write_text("Accession Number,Colour\nACC1,red\n")
    with pytest.raises(ConfigError, match=r"bad.csv:1: unknown column\(s\) Colour"):
        read_rows(bad)


def test_retrieve_by_c_get_on_the_same_association(tmp_path: Path) -> None:
    modality = {
        "uploader": {
            "AET": "UPLOADER",
            "Host": "127.0.0.1",
            "Port": free_port(),
            "AllowFind": True,
            "AllowGet": True,
            "AllowMove": False,
        }
    }
    with (
        orthanc(tmp_path / "pacs", modalities=modality, aet="PACS") as pacs,
        orthanc(tmp_path / "repo") as repo,
    ):
        for f in write_study(
            tmp_path / "s",
            slices=2,
            patient=PATIENTS[1],
            rois=["Prostate", "Rectum", "Bladder", "PTV_1"],
        ):
            assert requests.post(f"{pacs.http}/instances", data=f.read_bytes(), timeout=10).ok
        config = node_config(
            tmp_path / "node",
            repo.https,
            repo.ca,
            pacs__ae_title="PACS",
            pacs__host="127.0.0.1",
            pacs__port=pacs.dicom_port,
            pacs__retrieve="get",
        )
        with node(config) as n:
            result = run_cli(
                "qr",
                "retrieve",
                "--config",
                config,
                "--accession",
                "ACC0002",
                "--trial",
                "PACE-C",
                "--json",
            )
            rows = json.loads(result.stdout)["rows"]
            assert result.returncode == 0, result.stdout + result.stderr
            assert [(r["status"], r["matched"], r["arrived"]) for r in rows] == [("done", 1, 5)]
            # the one-row request (it holds the accession number) was made under the node's
            # own state directory and removed
            scratch = n.data / "tmp"
            assert scratch.is_dir() and not any(scratch.iterdir())
            n.wait_state("forwarded")
            assert len(repo.instances()) == 5


def test_a_bulk_csv_of_a_thousand_rows_runs_with_bounded_concurrency(tmp_path: Path) -> None:
    import time

    scp_port = free_port()
    modality = {
        "uploader": {
            "AET": "UPLOADER",
            "Host": "127.0.0.1",
            "Port": scp_port,
            "AllowFind": True,
            "AllowMove": True,
        }
    }
    with (
        orthanc(tmp_path / "pacs", modalities=modality, aet="PACS") as pacs,
        orthanc(tmp_path / "repo") as repo,
    ):
        for f in write_study(
            tmp_path / "s",
            slices=1,
            patient=PATIENTS[0],
            rois=["Prostate", "Rectum", "Bladder", "PTV_1"],
        ):
            assert requests.post(f"{pacs.http}/instances", data=f.read_bytes(), timeout=10).ok
        config = node_config(
            tmp_path / "node",
            repo.https,
            repo.ca,
            scp__port=scp_port,
            pacs__ae_title="PACS",
            pacs__host="127.0.0.1",
            pacs__port=pacs.dicom_port,
            pacs__concurrency=8,
        )
        bulk = tmp_path / "bulk.csv"
        with bulk.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Accession Number", "Trial"])
            w.writerows([f"NONE{i:05d}", "PACE-C"] for i in range(999))
            w.writerow(["ACC0001", "PACE-C"])
        with node(config):
            start = time.time()
            result = run_cli("qr", "retrieve", "--config", config, "--csv", bulk, "--json")
            elapsed = time.time() - start
            rows = json.loads(result.stdout)["rows"]
            assert len(rows) == 1000
            assert [r["status"] for r in rows].count("no match") == 999
            assert rows[-1]["status"] == "done" and rows[-1]["arrived"] == 4
            assert elapsed < 120, f"{elapsed:.0f} s for 1000 rows"
