"""The anonymised node's gate, tried as an attacker would, against the real node (HTTPS): each
identifiable variant of the sample study is signed with the forwarding key and announced by a
manifest (as a misconfigured site would send it), so it is the gate that must refuse it. Each is
refused with the attribute and the kind of finding, nothing is stored, and afterwards no planted
value is anywhere in the node's state directory or log. The legitimate output of the same study
is accepted whole. The patient's name planted in kept free text (StudyDescription, ImageComments,
an SR TextValue two levels down, a nested CodeMeaning) is found by the pattern detectors though
the protocol's clean_descriptors keeps those attributes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import KEY
from .gate_variants import ALL_VARIANTS, PLANTED, Study, make_study
from .intake_client import failures, manifest_for, post_manifest, stow
from .peers import AnonNode, anon_config, anon_node

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    tmp = tmp_path_factory.mktemp("variants")
    key = tmp / "site.key"
    key.write_text(KEY.hex())
    return make_study(tmp, key)


@pytest.fixture(scope="module")
def anon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnonNode]:
    tmp = tmp_path_factory.mktemp("gate")
    config, _cert, _port = anon_config(
        tmp / "anon", {"type": "directory", "path": str(tmp / "out")}
    )
    with anon_node(config) as node:
        yield node


def _stored(anon: AnonNode) -> int:
    db = anon.data / "anonymised.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])


def _files(anon: AnonNode) -> int:
    received = anon.data / "received"
    return sum(1 for p in received.rglob("*") if p.is_file()) if received.exists() else 0


@pytest.mark.parametrize("name", list(ALL_VARIANTS))
def test_identifiable_variant_is_refused_and_nothing_is_stored(
    anon: AnonNode, study: Study, name: str
) -> None:
    data, manifest, kind = ALL_VARIANTS[name](study)
    before = (_stored(anon) if (anon.data / "anonymised.sqlite").exists() else 0, _files(anon))
    announced = post_manifest(anon, manifest)  # refused (422) when it holds original UIDs
    assert announced.status_code in (200, 422), announced.text
    r = stow(anon, data)
    assert r.status_code == 409, r.text
    items = failures(r)
    assert len(items) == len(data)
    assert all(i["00081197"]["Value"] == [0x0110] for i in items)
    reasons = " | ".join(i["00000902"]["Value"][0] for i in items)
    assert kind in reasons, reasons
    assert (_stored(anon), _files(anon)) == before


def test_unsigned_unannounced_and_unlisted_instances_are_refused(
    anon: AnonNode, study: Study
) -> None:
    legit = [p.read_bytes() for p in study.deid]
    unsigned = stow(anon, legit[:1], sign=False)
    assert unsigned.status_code == 409
    assert "not signed" in failures(unsigned)[0]["00000902"]["Value"][0]
    other = _in_another_study(study.deid[0])  # signed, derived-looking, but never announced
    r = stow(anon, [other])
    assert r.status_code == 409
    assert "a study no manifest announced" in failures(r)[0]["00000902"]["Value"][0]
    doc = manifest_for(study.deid)
    doc["sop_instance_uids"] = doc["sop_instance_uids"][1:]
    doc["instances"] -= 1
    assert post_manifest(anon, doc).status_code == 200
    left_out = next(
        p for p in study.deid if p.read_bytes() and _uid(p) not in doc["sop_instance_uids"]
    )
    r = stow(anon, [left_out])
    assert r.status_code == 409
    assert "not one of the announced instances" in failures(r)[0]["00000902"]["Value"][0]
    unsigned_manifest = post_manifest(anon, doc, sign=False)
    assert unsigned_manifest.status_code == 403
    nhs_subject = dict(doc, subject="9434765919")
    assert post_manifest(anon, nhs_subject).status_code == 422


def _in_another_study(path: Path) -> bytes:
    from io import BytesIO

    from pydicom import dcmread

    from uploader.deid.pseudonyms import Pseudonymiser

    ds = dcmread(path)
    ds.StudyInstanceUID = Pseudonymiser(b"another site key, 32 bytes long!").uid("x")
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_the_legitimate_output_is_accepted_whole_then_nothing_planted_is_left(
    anon: AnonNode, study: Study
) -> None:
    for variant in ALL_VARIANTS.values():  # every variant once more, then the real study
        data, manifest, _kind = variant(study)
        post_manifest(anon, manifest)
        assert stow(anon, data).status_code == 409
    assert post_manifest(anon, manifest_for(study.deid)).status_code == 200
    r = stow(anon, study.deid)
    assert r.status_code == 200, r.text
    assert len(r.json()["00081199"]["Value"]) == len(study.deid)
    status = anon.wait_state("ready")
    assert status["counts"]["refused_instances"] >= len(ALL_VARIANTS)
    blobs = [p.read_bytes() for p in anon.data.rglob("*") if p.is_file()]
    blobs.append((anon.config.parent / "anon.log").read_bytes())
    for value in PLANTED:
        for encoded in {value.encode("utf-8"), value.encode("latin-1")}:
            assert not any(encoded in b for b in blobs), f"{value!r} is on the anonymised side"
    for p in study.raw:  # no original UID either, in any form
        from pydicom import dcmread

        uid = str(dcmread(p, stop_before_pixels=True).SOPInstanceUID).encode()
        assert not any(uid in b for b in blobs)
