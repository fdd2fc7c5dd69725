"""The anonymised node against real peers: the identifiable node forwards to its HTTPS intake,
staff approve, and the study lands in Orthanc (DICOMweb over TLS), confirmed by QIDO-RS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from uploader.sample import write_study

from .conftest import run_cli
from .intake_client import failures, manifest_for, post_manifest, send, stow
from .peers import (
    AnonNode,
    anon_config,
    anon_node,
    free_port,
    node,
    node_config,
    orthanc,
    storescu,
    wait_for,
)

pytestmark = pytest.mark.integration
ROIS = ["Prostate", "Rectum", "Bladder", "PTV_1"]


def _send(anon: AnonNode, files: list[Path]) -> None:
    """The signed manifest, then the signed instances, as the identifiable node sends them."""
    send(anon, files)


def _deidentified(tmp_path: Path, key_file: Path, **study: Any) -> list[Path]:
    """A sample study de-identified with the example protocol (what the intake accepts)."""
    from .conftest import EXAMPLE_PROTOCOL

    write_study(tmp_path / "study", rois=ROIS, **study)
    out = tmp_path / "deid"
    made = run_cli(
        "anonymise",
        tmp_path / "study",
        out,
        "--key-file",
        key_file,
        "--protocol",
        EXAMPLE_PROTOCOL,
        "--site",
        "RXH",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    return sorted(out.rglob("*.dcm"))


def test_whole_pipeline_storescu_to_repository_through_both_nodes(tmp_path: Path) -> None:
    study = tmp_path / "study"
    write_study(study, slices=3, rois=ROIS)
    (next(study.rglob("README.txt"))).unlink()
    with orthanc(tmp_path / "repo") as repo:
        target = {"type": "dicomweb", "url": repo.https, "ca_bundle": str(repo.ca)}
        aconfig, cert, port = anon_config(tmp_path / "anon", target)
        with anon_node(aconfig) as anon:
            iconfig = node_config(
                tmp_path / "ident",
                f"https://127.0.0.1:{port}/dicom-web",
                cert,
                forward__token_file=str(tmp_path / "anon" / "token"),
                forward__manifest_url=f"https://127.0.0.1:{port}/manifests",
            )
            with node(iconfig) as ident:
                assert storescu(ident.scp_port, study).returncode == 0
                ident.wait_state("forwarded")
            status = anon.wait_state("ready")
            assert status["counts"]["refused_instances"] == 0
            assert repo.instances() == []  # nothing leaves before staff approve
            listed = run_cli("review", "list", "--config", aconfig)
            study_id = listed.stdout.split("\t")[0]
            approve = run_cli("review", "approve", study_id, "--config", aconfig, "--by", "dr.who")
            assert approve.returncode == 0, approve.stderr
            anon.wait_state("uploaded")
            qido = requests.get(f"{repo.http}/dicom-web/studies", timeout=10).json()
            assert len(qido) == 1
            tags = [repo.tags(i) for i in repo.instances()]
            assert len(tags) == 6
            text = json.dumps(tags, ensure_ascii=False)
            for phi in ("MÜLLER", "9434765919", "19620314", "Acacia", "ACC7781234", "HOUSE"):
                assert phi not in text
            shown = run_cli("review", "show", study_id, "--config", aconfig).stdout
            assert "dr.who: ready -> approved" in shown and "uploading -> uploaded" in shown


def test_identifiable_data_and_bad_tokens_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    study = tmp_path / "study"
    files = [f for f in write_study(study, slices=2, rois=ROIS) if f.suffix != ".txt"]
    target = {"type": "directory", "path": str(tmp_path / "out")}
    aconfig, _cert, _port = anon_config(tmp_path / "anon", target)
    with anon_node(aconfig) as anon:
        bad_token = stow(anon, files[:1], token="wrong")
        assert bad_token.status_code == 401
        refused = stow(anon, files)
        assert refused.status_code == 409
        failed = failures(refused)
        assert len(failed) == len(files)
        assert all(item["00081197"]["Value"] == [0x0110] for item in failed)
        assert (
            not list((anon.data / "received").rglob("*.dcm"))
            if (anon.data / "received").exists()
            else True
        )
        status = anon.status()
        assert status["counts"]["refused_instances"] == len(files)
        assert all(s == 0 for k, s in status["counts"].items() if k != "refused_instances")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{anon.url}/health", verify=str(tmp_path / "anon" / "token"), timeout=5)


def test_repository_down_during_upload_then_kill_9_then_back(tmp_path: Path) -> None:
    from uploader.sample import write_study as ws

    study = tmp_path / "study"
    ws(study, slices=3, rois=ROIS)
    (next(study.rglob("README.txt"))).unlink()
    from .peers import make_cert

    https_port = free_port()
    ca_dir = tmp_path / "repo"
    ca_dir.mkdir()
    make_cert(ca_dir)  # the repository's certificate, trusted before the repository is up
    # The repository is not up yet: the node must retry, survive kill -9, and finish once it is.
    target = {
        "type": "dicomweb",
        "url": f"https://127.0.0.1:{https_port}/dicom-web",
        "ca_bundle": str(ca_dir / "localhost.crt"),
    }
    aconfig, cert, port = anon_config(tmp_path / "anon", target, auto_approve="true")
    with anon_node(aconfig) as anon:
        iconfig = node_config(
            tmp_path / "ident",
            f"https://127.0.0.1:{port}/dicom-web",
            cert,
            forward__token_file=str(tmp_path / "anon" / "token"),
            forward__manifest_url=f"https://127.0.0.1:{port}/manifests",
        )
        with node(iconfig) as ident:
            assert storescu(ident.scp_port, study).returncode == 0
            ident.wait_state("forwarded")
        anon.wait_state("failed")  # auto-approved, then the push failed: retrying
        anon.proc.kill()
        anon.proc.wait(10)
    with orthanc(ca_dir, https_port=https_port) as repo, anon_node(aconfig) as again:
        again.wait_state("uploaded", timeout=90)
        assert len(repo.instances()) == 6
        wait_for(lambda: again.status()["counts"]["uploaded"] == 1, 10, "one uploaded study")


def test_review_api_approval_and_retention(tmp_path: Path, key_file: Path) -> None:
    from .conftest import EXAMPLE_PROTOCOL

    study = tmp_path / "study"
    write_study(study, slices=2, rois=ROIS)
    out = tmp_path / "deid"
    made = run_cli(
        "anonymise",
        study,
        out,
        "--key-file",
        key_file,
        "--protocol",
        EXAMPLE_PROTOCOL,
        "--site",
        "RXH",
        "--json",
    )
    assert made.returncode == 0
    files = sorted(out.rglob("*.dcm"))
    target = {"type": "directory", "path": str(tmp_path / "repository")}
    aconfig, cert, _port = anon_config(tmp_path / "anon", target)
    text = aconfig.read_text() + "retention:\n  delete_after_days: 0\n"
    aconfig.write_text(text)
    with anon_node(aconfig) as anon:
        r = post_manifest(anon, manifest_for(files))
        assert r.ok, r.text
        auth = {"Authorization": f"Bearer {anon.token}"}
        stored = stow(anon, files)
        assert stored.status_code == 200, stored.text
        assert len(stored.json()["00081199"]["Value"]) == len(files)
        again = stow(anon, files[:2])  # re-sent: accepted, stored once
        assert again.status_code == 200
        anon.wait_state("ready")
        api = f"{anon.url}/api/studies"
        assert requests.get(api, headers=auth, verify=str(cert), timeout=10).status_code == 401
        staff = {"Authorization": f"Bearer {anon.review_token}"}
        (listed,) = requests.get(api, headers=staff, verify=str(cert), timeout=10).json()
        assert listed["state"] == "ready" and listed["protocol"] == "PACE-C"
        ok = requests.post(
            f"{api}/{listed['id']}/approve",
            json={"by": "api-user"},
            headers=staff,
            verify=str(cert),
            timeout=10,
        )
        assert ok.json() == {"status": "approved"}
        anon.wait_state("uploaded")
        assert len(list((tmp_path / "repository").rglob("*.dcm"))) == len(files)
        wait_for(
            lambda: not list((anon.data / "received").rglob("*.dcm")),
            20,
            "retention to delete local copies",
        )
        assert len(list((tmp_path / "repository").rglob("*.dcm"))) == len(files)


def test_xnat_target_keeps_the_import_and_share_contract(tmp_path: Path, key_file: Path) -> None:
    from .peers import make_cert
    from .xnat_server import XnatServer, XnatState

    files = _deidentified(tmp_path, key_file, slices=2)
    xcert = make_cert(tmp_path, "xnat")
    (tmp_path / "xnat-password").write_text("s3cret\n")
    state = XnatState(user="uploader", password="s3cret", fail_imports=1)
    with XnatServer(xcert, tmp_path / "xnat.key", state) as xnat:
        target = {
            "type": "xnat",
            "url": xnat.url,
            "ca_bundle": str(xcert),
            "username": "uploader",
            "password_file": str(tmp_path / "xnat-password"),
            "project": "RXH_SITE",
        }
        aconfig, _cert, _port = anon_config(tmp_path / "anon", target, auto_approve="true")
        with anon_node(aconfig) as anon:
            _send(anon, files)
            status = anon.wait_state("uploaded", timeout=60)
            assert status["counts"]["uploaded"] == 1
    (session_key,) = state.sessions
    project, subject, session = session_key
    assert (
        project == "RXH_SITE" and subject.startswith("PACE-C-RXH-") and session.startswith(subject)
    )
    assert len(state.sessions[session_key]) == len(files)  # one import (after one 503), all files
    imports = [c for c in state.calls if c[1] == "/data/services/import"]
    assert len(imports) == 2  # the first got 503 and was retried
    assert imports[-1][2] == {
        "import-handler": ["DICOM-zip"],
        "PROJECT_ID": ["RXH_SITE"],
        "SUBJECT_ID": [subject],
        "EXPT_LABEL": [session],
        "overwrite": ["append"],
        "dest": ["/archive"],
    }
    assert ("subject", "RXH_SITE", subject, "PACE-C", subject) in state.shares
    assert ("session", "RXH_SITE", subject, session, "PACE-C", session) in state.shares
    assert any(
        c[0] == "GET" and c[1].endswith(f"/experiments/{session}/scans/ALL/files")
        for c in state.calls
    )


def test_repository_stopped_during_an_upload_retries_then_completes(
    tmp_path: Path, key_file: Path
) -> None:

    files = _deidentified(tmp_path, key_file, slices=60, size=256)
    with orthanc(tmp_path / "repo") as repo:
        target = {"type": "dicomweb", "url": repo.https, "ca_bundle": str(repo.ca), "batch_size": 5}
        aconfig, _cert, _port = anon_config(tmp_path / "anon", target, auto_approve="true")
        with anon_node(aconfig) as anon:
            _send(anon, files)
            db = anon.data / "anonymised.sqlite"

            def uploading() -> bool:
                import sqlite3

                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    done = conn.execute(
                        "SELECT COUNT(*) FROM instances WHERE uploaded=1"
                    ).fetchone()[0]
                return 0 < done < len(files)

            wait_for(uploading, 30, "the upload to be under way", 0.005)
            repo.stop_tls()  # the repository goes away mid-upload
            anon.wait_state("failed")
            partial = len(repo.instances())
            assert 0 < partial < len(files)
            repo.start_tls()
            anon.wait_state("uploaded", timeout=90)
            assert len(repo.instances()) == len(files)


def test_reject_keeps_files_until_purged_and_an_untrusted_repository_is_refused(
    tmp_path: Path, key_file: Path
) -> None:
    from .peers import make_cert
    from .xnat_server import XnatServer, XnatState

    files = _deidentified(tmp_path, key_file, slices=2)
    real, other = make_cert(tmp_path, "xnat"), make_cert(tmp_path, "other")
    (tmp_path / "pw").write_text("pw\n")
    with XnatServer(real, tmp_path / "xnat.key", XnatState("u", "pw")) as xnat:
        target = {
            "type": "xnat",
            "url": xnat.url,
            "ca_bundle": str(other),
            "username": "u",
            "password_file": str(tmp_path / "pw"),
            "project": "SITE",
        }
        aconfig, _cert, _port = anon_config(tmp_path / "anon", target)
        with anon_node(aconfig) as anon:
            _send(anon, files)
            anon.wait_state("ready")
            bare = run_cli("review", "reject", "1", "--config", aconfig)
            assert bare.returncode == 2 and "needs --reason" in bare.stderr
            rejected = run_cli(
                "review", "reject", "1", "--config", aconfig, "--reason", "wrong patient"
            )
            assert rejected.returncode == 0, rejected.stderr
            received = list((anon.data / "received").rglob("*.dcm"))
            assert len(received) == len(files)  # kept until staff purge them
            purge = run_cli("purge", "--rejected", "--config", aconfig)
            assert "purged 1 rejected study" in purge.stdout
            assert not list((anon.data / "received").rglob("*.dcm"))
            # next: a repository whose certificate we do not trust is refused for good
    target["ca_bundle"] = str(other)
    with XnatServer(real, tmp_path / "xnat.key", XnatState("u", "pw")) as xnat2:
        target["url"] = xnat2.url
        aconfig2, _cert2, _p = anon_config(tmp_path / "anon2", target, auto_approve="true")
        with anon_node(aconfig2) as anon2:
            _send(anon2, files)
            anon2.wait_state("failed")
            shown = run_cli("review", "show", "1", "--config", aconfig2).stdout
            assert "certificate is not trusted" in shown
