"""A file in the watched folder that cannot be read (a truncated DICOM file, a text file) goes to
quarantine and shows on the quarantine page with its reason; staff retrying it are refused with
the reason, and it stays (nothing lost); an admin deletes it, audited, and nothing of it is left.
A readable copy of the instance dropped in the folder afterwards is ingested as usual."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import requests
import yaml

from uploader.sample import Patient, write_study
from uploader.web.accounts import Accounts, Role

from .peers import free_port, make_cert, node, node_config, wait_for
from .webnode import PASSWORDS, csrf_of

pytestmark = pytest.mark.integration
PATIENT = Patient(name="IRWIN^IONA", patient_id="9434765999", accession="ACC0099", tag="9")


def _client(web: str, ca: Path, name: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # else the environment's CA bundle wins over verify
    s.verify = str(ca)

    def signin_page() -> str:  # the pages start just after the node says it is ready
        try:
            return s.get(f"{web}/signin", timeout=10).text
        except requests.ConnectionError:
            return ""

    csrf = csrf_of(wait_for(signin_page, 20, "the sign-in page"))
    done = s.post(
        f"{web}/signin",
        data={"csrf": csrf, "name": name, "password": PASSWORDS[name]},
        timeout=30,
    )
    assert "Sign out" in done.text
    return s


def test_unreadable_file_is_refused_on_retry_kept_then_deleted_by_an_admin(
    tmp_path: Path,
) -> None:
    cert = make_cert(tmp_path, "pages")
    path = node_config(
        tmp_path / "ident",
        f"https://127.0.0.1:{free_port()}/dicom-web",  # nothing forwarded: no trial given
        cert,
        node__default_protocol=None,
    )
    settings = yaml.safe_load(path.read_text())
    web = f"https://127.0.0.1:{free_port()}"
    settings["web"] = {
        "listen": web.removeprefix("https://"),
        "tls_cert": str(cert),
        "tls_key": str(tmp_path / "pages.key"),
    }
    path.write_text(yaml.safe_dump(settings))
    data = Path(settings["node"]["data_dir"])
    accounts = Accounts(data / "node.sqlite")
    accounts.add("rita", Role.REVIEWER, PASSWORDS["rita"])
    accounts.add("adam", Role.ADMIN, PASSWORDS["adam"])
    (ct,) = write_study(tmp_path / "study", slices=1, rt=(), patient=PATIENT)  # one CT slice
    incoming = Path(settings["folder"]["path"])
    incoming.mkdir(parents=True, exist_ok=True)

    with node(path):
        rita, adam = _client(web, cert, "rita"), _client(web, cert, "adam")
        (incoming / "cut.dcm").write_bytes(ct.read_bytes()[:200])  # truncated in its header
        page = wait_for(
            lambda: (
                (p := rita.get(f"{web}/quarantine", timeout=10).text).count('class="aside"') and p
            ),
            30,
            "the truncated file on the quarantine page",
        )
        assert "cut.dcm: not a readable DICOM file" in page or "cut.dcm: no Study" in page
        row = re.search(r'data-row="(\d+)"', page)
        assert row is not None and 'class="retry"' in page
        (kept,) = [p for p in (data / "quarantine").rglob("*") if p.name.endswith(".dcm")]
        assert kept.read_bytes() == ct.read_bytes()[:200]

        retry = rita.post(
            f"{web}/quarantine/{row[1]}/retry", data={"csrf": csrf_of(page)}, timeout=10
        )
        assert retry.status_code == 409
        error = re.search(r'id="error"[^>]*>([^<]*)<', retry.text)
        assert error is not None
        assert "it still cannot be taken in" in error[1] and "stays in quarantine" in error[1]
        assert f'data-row="{row[1]}"' in retry.text  # still listed, with its reason
        assert kept.read_bytes() == ct.read_bytes()[:200]  # nothing lost
        assert PATIENT.patient_id not in error[1]

        refused = rita.post(
            f"{web}/quarantine/{row[1]}/delete", data={"csrf": csrf_of(retry.text)}, timeout=10
        )
        assert refused.status_code == 409 and "only an administrator" in refused.text
        admin_page = adam.get(f"{web}/quarantine", timeout=10).text
        deleted = adam.post(
            f"{web}/quarantine/{row[1]}/delete", data={"csrf": csrf_of(admin_page)}, timeout=10
        )
        assert deleted.status_code == 200 and "Deleted." in deleted.text
        assert "Nothing in quarantine" in deleted.text
        assert [p for p in (data / "quarantine").rglob("*") if p.is_file()] == []

        (incoming / "whole.dcm").write_bytes(ct.read_bytes())  # the readable copy
        wait_for(lambda: _studies(data) == [PATIENT.patient_id], 30, "the readable copy taken")

    with sqlite3.connect(f"file:{data / 'node.sqlite'}?mode=ro", uri=True) as conn:
        audit = conn.execute("SELECT actor, action FROM audit ORDER BY id").fetchall()
    assert ("ingest", "instance quarantined") in audit
    assert ("adam", "quarantined file deleted") in audit
    assert ("rita", "quarantined file retried") not in audit


def _studies(data: Path) -> list[str]:
    with sqlite3.connect(f"file:{data / 'node.sqlite'}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT patient_id FROM studies")]
