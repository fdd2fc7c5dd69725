"""A forwarded study is confirmed by the anonymised node (issue 16): the identifiable node asks
the intake's signed status endpoint by the de-identified Study Instance UID, and shows the study
as confirmed, then what became of it there (in the repository, or rejected).

The store's transitions run on a temp file; the rest with real nodes and storescu.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pydicom import dcmread

from anonymised_node.store import AnonState, AnonStore, Holding
from identifiable_node.config import load_config
from identifiable_node.store import CHECKED_STATES, STATES, Store, StudyState
from uploader.errors import ConfigError
from uploader.sample import Patient, write_study
from uploader.transport.forwardsig import HEADER, ForwardKey
from uploader.web.accounts import Accounts, Role

from .conftest import run_cli
from .peers import (
    FORWARD_KEY,
    anon_config,
    anon_node,
    free_port,
    make_cert,
    node,
    node_config,
    storescu,
    wait_for,
)
from .webnode import PASSWORDS, csrf_of

ROIS = ["Prostate", "Rectum", "Bladder", "PTV_1"]
TOKEN = "intake-token-123"  # tests/peers.py anon_config
REVIEW = "review-token-456"


# ---------------------------------------------------------------- the store, on a temp file


def _forwarded(store: Store, study_uid: str = "1.2.3") -> int:
    store.add_instance(
        study_uid=study_uid, sop_uid=study_uid + ".1", series_uid="1.2.3.1", modality="CT",
        path="/spool/x.dcm", patient_id="MRN001", other_ids="", protocol=None, source="scp",
    )  # fmt: skip
    (study,) = [s for s in store.studies() if s.study_uid == study_uid]
    store.release(study.id, StudyState.FORWARDED, "test", attempts=0)
    return study.id


def test_the_stored_strings_of_the_states_stay_and_confirmed_is_new() -> None:
    assert {s.name: s.value for s in STATES} == {
        "RECEIVING": "receiving", "COMPLETE": "complete", "OPTED_OUT": "opted_out",
        "NEEDS_REVIEW": "needs_review", "VALIDATED": "validated",
        "PSEUDONYMISED": "pseudonymised", "FORWARDED": "forwarded",
        "QUARANTINED": "quarantined", "REJECTED": "rejected", "CONFIRMED": "confirmed",
        "REFUSED_DOWNSTREAM": "refused_downstream",
    }  # fmt: skip


def test_forwarded_studies_are_claimed_for_checks_only_when_asked_and_while_checks_remain(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "node.sqlite")
    sid = _forwarded(store)
    assert store.claim("w", 5.0) is None  # no status URL: forwarded is the last state
    claimed = store.claim("w", 5.0, confirm_checks=3)
    assert claimed is not None and claimed.id == sid and claimed.state == StudyState.FORWARDED
    assert store.claim("w2", 5.0, confirm_checks=3) is None  # leased
    assert store.release(sid, StudyState.FORWARDED, "w", reason="not yet", lease="w", attempts=2)
    assert store.claim("w", 5.0, confirm_checks=3) is not None  # 2 of 3 checks made
    store.release(sid, StudyState.FORWARDED, "w", lease="w", attempts=3)
    assert store.claim("w", 5.0, confirm_checks=3) is None  # its checks spent: asked no more
    assert store.study(sid).state == StudyState.FORWARDED  # type: ignore[union-attr]


def test_a_confirmed_study_is_counted_audited_and_asked_about_until_its_checks_are_spent(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "node.sqlite")
    sid = _forwarded(store)
    claimed = store.claim("w", 5.0, confirm_checks=3)
    assert claimed is not None
    store.release(
        sid, StudyState.CONFIRMED, "w", "held", reason="at the anonymised node: approved",
        lease="w", attempts=0,
    )  # fmt: skip
    study = store.study(sid)
    assert study is not None and study.state == StudyState.CONFIRMED
    assert study.reason == "at the anonymised node: approved"
    assert store.counts()["confirmed"] == 1 and store.counts()["forwarded"] == 0
    assert [r.action for r in store.audit_rows(sid)][-1] == "forwarded -> confirmed"
    assert StudyState.CONFIRMED in CHECKED_STATES
    assert store.claim("w", 5.0) is None
    assert store.claim("w", 5.0, confirm_checks=3) is not None  # asked on: approved, not pushed
    store.release(sid, StudyState.CONFIRMED, "w", lease="w", attempts=3)
    assert store.claim("w", 5.0, confirm_checks=3) is None
    (row,) = store.worklist(state="confirmed")
    assert row.id == sid and row.state == "confirmed"


def test_the_anonymised_store_tells_what_it_holds_of_an_announced_study_only(
    tmp_path: Path,
) -> None:
    store = AnonStore(tmp_path / "anonymised.sqlite")
    uids = ["1.2.9.1", "1.2.9.2", "1.2.9.3"]
    labels = {"protocol": "PACE-C", "subject": "S-1", "session": "S-1_ab12"}
    store.manifest("1.2.9", {"study_uid": "1.2.9", "instances": 3, "sop_instance_uids": uids,
                             **labels})  # fmt: skip
    assert store.holding("1.2.9") == Holding(3, 0, AnonState.RECEIVING)
    for uid in uids[:2]:
        store.add_instance(study_uid="1.2.9", sop_uid=uid, sop_class="1.2.840.10008.5.1.4.1.1.2",
                           path=f"/r/{uid}.dcm", digest=uid, **labels)  # fmt: skip
    assert store.holding("1.2.9") == Holding(3, 2, AnonState.RECEIVING)
    store.add_instance(study_uid="1.2.9", sop_uid=uids[2], sop_class="1.2.840.10008.5.1.4.1.1.2",
                       path="/r/3.dcm", digest="3", **labels)  # fmt: skip
    assert store.holding("1.2.9") == Holding(3, 3, AnonState.READY)
    assert store.holding("1.2.8") is None  # never announced
    store.add_instance(study_uid="1.2.7", sop_uid="1.2.7.1", sop_class="1.2", path="/r/7.dcm",
                       **labels)  # fmt: skip
    assert store.holding("1.2.7") is None  # no manifest: nothing announced


def test_the_status_signature_is_its_own_kind_and_covers_the_uid() -> None:
    key = ForwardKey(FORWARD_KEY.encode())
    tag = key.sign_status("1.2.3")
    assert key.status_signed("1.2.3", tag)
    assert not key.status_signed("1.2.4", tag)
    assert not key.manifest_signed(b"1.2.3", tag)  # a status tag is no manifest's tag
    assert not ForwardKey(b"another-key-" + b"7" * 30).status_signed("1.2.3", tag)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ("  status_url: https://anon:8443/studies/x/status\n", "the status URL must hold"),
        ("  status_url: ftp://anon/{study_uid}\n", "the status URL must start with https://"),
        ("  status_url: http://anon/{study_uid}\n", "plain HTTP is refused"),
    ],
)
def test_a_bad_status_url_is_named(tmp_path: Path, lines: str, expected: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("forward:\n" + lines)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"forward.status_url: {expected}" in str(info.value)
    path.write_text("forward:\n  allow_plain_http: true\n  status_url: http://a/{study_uid}\n")
    assert load_config(path).forward.status_url == "http://a/{study_uid}"


# ---------------------------------------------------------------- real nodes


def _web(config: Path, tmp: Path) -> str:
    """Turn the identifiable node's pages on (TLS, accounts rita and adam); return their URL."""
    settings = yaml.safe_load(config.read_text())
    cert = make_cert(tmp, "pages")
    port = free_port()
    settings["web"] = {
        "listen": f"127.0.0.1:{port}",
        "tls_cert": str(cert),
        "tls_key": str(tmp / "pages.key"),
    }
    config.write_text(yaml.safe_dump(settings))
    accounts = Accounts(Path(settings["node"]["data_dir"]) / "node.sqlite")
    accounts.add("rita", Role.REVIEWER, PASSWORDS["rita"])
    return f"https://127.0.0.1:{port}"


def _worklist(web: str, ca: Path, path: str = "/") -> str:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(ca)
    csrf = csrf_of(s.get(f"{web}/signin", timeout=10).text)
    s.post(f"{web}/signin", data={"csrf": csrf, "name": "rita", "password": PASSWORDS["rita"]})
    page = s.get(f"{web}{path}", timeout=10)
    assert page.status_code == 200 and "Sign out" in page.text
    return page.text


def _rows(data: Path) -> list[dict[str, Any]]:
    """The identifiable node's studies with their de-identified Study Instance UID (read from
    the outputs it forwarded)."""
    with sqlite3.connect(f"file:{data / 'node.sqlite'}?mode=ro", uri=True, timeout=5) as conn:
        conn.row_factory = sqlite3.Row
        studies = [dict(r) for r in conn.execute("SELECT id, state, reason FROM studies")]
        for s in studies:
            out = conn.execute(
                "SELECT out_path FROM instances WHERE study_id=? AND out_path <> '' LIMIT 1",
                (s["id"],),
            ).fetchone()
            s["out_uid"] = str(dcmread(out[0], stop_before_pixels=True).StudyInstanceUID)
    return studies


def _status(base: str, ca: Path, uid: str, **headers: str) -> requests.Response:
    return requests.get(f"{base}/studies/{uid}/status", headers=headers, verify=str(ca), timeout=10)


def _signed(uid: str, key: str = FORWARD_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", HEADER: ForwardKey(key.encode()).sign_status(uid)}


@pytest.mark.integration
def test_studies_sent_by_storescu_are_confirmed_then_in_the_repository_or_rejected(
    tmp_path: Path,
) -> None:
    patients = {
        "kept": Patient(name="ADAMS^ALICE", patient_id="9434765911", tag="1"),
        "refused": Patient(name="BROWN^BORIS", patient_id="9434765922", tag="2"),
    }
    sent = 0
    for name, patient in patients.items():
        files = write_study(tmp_path / name, slices=2, rois=ROIS, patient=patient)
        for f in files:
            if f.suffix == ".txt":
                f.unlink()
        sent = len([f for f in files if f.suffix != ".txt"])
    target = {"type": "directory", "path": str(tmp_path / "repo")}
    aconfig, cert, port = anon_config(tmp_path / "anon", target)
    base = f"https://127.0.0.1:{port}"
    with anon_node(aconfig) as anon:
        iconfig = node_config(
            tmp_path / "ident",
            f"{base}/dicom-web",
            cert,
            forward__token_file=str(tmp_path / "anon" / "token"),
            forward__manifest_url=f"{base}/manifests",
            forward__status_url=base + "/studies/{study_uid}/status",
            forward__confirm_backoff_s=0.2,
            forward__confirm_attempts=60,
        )
        web = _web(iconfig, tmp_path / "ident")
        with node(iconfig) as ident:
            for name in patients:
                assert storescu(ident.scp_port, tmp_path / name).returncode == 0
            ident.wait_state("confirmed", n=2, timeout=90)
            rows = _rows(ident.data)
            assert [r["reason"] for r in rows] == [
                "at the anonymised node: waiting for approval"
            ] * 2
            page = _worklist(web, tmp_path / "ident" / "pages.crt")
            assert page.count("confirmed by the anonymised node") >= 2
            assert "waiting for approval" in page
            one = _worklist(web, tmp_path / "ident" / "pages.crt", f"/studies/{rows[0]['id']}")
            assert "confirmed by the anonymised node" in one and "waiting for approval" in one
            assert "Why: at the anonymised node" not in one  # a state, not a failure

            # the endpoint: counts and a state by the de-identified UID, signed, nothing else
            uid = rows[0]["out_uid"]
            answer = _status(base, cert, uid, **_signed(uid))
            assert answer.status_code == 200
            assert answer.json() == {"announced": sent, "stored": sent, "state": "ready"}
            assert _status(base, cert, uid).status_code == 401
            assert _status(base, cert, uid, Authorization=f"Bearer {TOKEN}").status_code == 403
            wrong_key = _signed(uid, "not-the-forwarding-key-" + "0" * 20)
            assert _status(base, cert, uid, **wrong_key).status_code == 403
            other_uid = {**_signed(rows[1]["out_uid"])}  # signed for another study
            assert _status(base, cert, uid, **other_uid).status_code == 403
            unknown = "1.2.826.0.1.3680043.10.999.1"
            missing = _status(base, cert, unknown, **_signed(unknown))
            assert missing.status_code == 404 and missing.json() == {"detail": "not found"}

            # staff on the anonymised node decide: one pushed to the repository, one rejected
            listed = requests.get(
                f"{base}/api/studies",
                headers={"Authorization": f"Bearer {REVIEW}"},
                verify=str(cert),
                timeout=10,
            ).json()
            anon_ids = {s["study_uid"]: s["id"] for s in listed}
            kept, refused = (anon_ids[r["out_uid"]] for r in rows)
            approve = run_cli("review", "approve", kept, "--config", aconfig, "--by", "dr.who")
            assert approve.returncode == 0, approve.stderr
            reject = run_cli(
                "review", "reject", refused, "--config", aconfig, "--by", "dr.who",
                "--reason", "wrong trial",
            )  # fmt: skip
            assert reject.returncode == 0, reject.stderr
            anon.wait_state("uploaded")
            wait_for(
                lambda: sorted(
                    (r["state"], r["reason"]) for r in _rows(ident.data)
                ) == [
                    ("confirmed", "at the anonymised node: in the repository"),
                    ("refused_downstream", "rejected by the anonymised node"),
                ],
                60,
                "one study in the repository, the other rejected by the anonymised node",
            )  # fmt: skip
            assert ident.status()["counts"]["confirmed"] == 1
            page = _worklist(web, tmp_path / "ident" / "pages.crt")
            assert "rejected by the anonymised node" in page and "in the repository" in page


@pytest.mark.integration
def test_an_anonymised_node_out_of_reach_leaves_the_study_forwarded_with_the_reason(
    tmp_path: Path,
) -> None:
    files = write_study(tmp_path / "study", slices=2, rois=ROIS)
    for f in files:
        if f.suffix == ".txt":
            f.unlink()
    aconfig, cert, port = anon_config(tmp_path / "anon", {"type": "directory", "path": "/x"})
    base = f"https://127.0.0.1:{port}"
    with anon_node(aconfig):
        iconfig = node_config(
            tmp_path / "ident",
            f"{base}/dicom-web",
            cert,
            forward__token_file=str(tmp_path / "anon" / "token"),
            forward__manifest_url=f"{base}/manifests",
            # nothing listens there: the status cannot be asked
            forward__status_url=f"https://127.0.0.1:{free_port()}/studies/{{study_uid}}/status",
            forward__confirm_backoff_s=0.1,
            forward__confirm_attempts=3,
        )
        with node(iconfig) as ident:
            assert storescu(ident.scp_port, tmp_path / "study").returncode == 0
            ident.wait_state("forwarded", timeout=60)

            def spent() -> list[dict[str, Any]]:
                rows = _rows(ident.data)
                return rows if rows and "after 3 check(s)" in rows[0]["reason"] else []

            (row,) = wait_for(spent, 30, "three checks made, then no more")
            assert row["state"] == "forwarded"
            assert row["reason"].startswith(
                "not confirmed by the anonymised node after 3 check(s): "
                "the anonymised node could not be asked: cannot reach"
            )
            assert ident.status()["counts"]["needs_review"] == 0  # no error of the study
