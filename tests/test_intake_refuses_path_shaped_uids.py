"""Path-shaped values sent at the anonymised node: a SOP Instance UID or a Study UID with
``../``, a subject or session of ``../..``. The intake refuses them before they name anything;
the directory and XNAT targets refuse to build a path or URL from an unchecked value, and a path
is proven (resolved, symlinks followed) to stay in its folder."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread

from anonymised_node.config import Target
from anonymised_node.push import Directory
from anonymised_node.store import AnonStudy
from anonymised_node.xnat import Xnat
from uploader.errors import PermanentError
from uploader.transport.paths import inside, valid_label, valid_uid

from .conftest import KEY
from .gate_variants import make_study
from .intake_client import failures, manifest_for, post_manifest, stow
from .peers import anon_config, anon_node

TRAVERSAL = "2.25.1/../../../../../x"


def _with_uid(path: Path, **uids: str) -> bytes:
    ds = dcmread(path)
    buf = BytesIO()
    with warnings.catch_warnings():  # pydicom warns of the invalid UID we mean to send
        warnings.simplefilter("ignore")
        for keyword, value in uids.items():
            setattr(ds, keyword, value)
            if keyword == "SOPInstanceUID":
                ds.file_meta.MediaStorageSOPInstanceUID = value
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.integration
def test_intake_refuses_path_shaped_uids_and_labels_and_writes_nothing_outside(
    tmp_path: Path,
) -> None:
    key = tmp_path / "site.key"
    key.write_text(KEY.hex())
    study = make_study(tmp_path / "study", key)
    out = tmp_path / "out"
    config, _cert, _port = anon_config(tmp_path / "anon", {"type": "directory", "path": str(out)})
    before = set(tmp_path.rglob("*"))
    with anon_node(config) as anon:
        doc = manifest_for(study.deid)
        assert post_manifest(anon, doc).status_code == 200
        for keyword in ("SOPInstanceUID", "StudyInstanceUID"):
            r = stow(anon, [_with_uid(study.deid[0], **{keyword: TRAVERSAL})])
            assert r.status_code == 409, r.text
            (item,) = failures(r)
            assert "invalid" in item["00000902"]["Value"][0]
            assert "x" not in str(item.get("00081155", {}).get("Value", []))  # not echoed
        for field, value in [
            ("study_uid", "../../x"),
            ("subject", "../.."),
            ("session", "a/../../b"),
            ("protocol", "../PACE-C"),
            ("sop_instance_uids", [TRAVERSAL]),
        ]:
            bad = dict(doc, **{field: value})
            if field == "sop_instance_uids":
                bad["instances"] = 1
            r = post_manifest(anon, bad)
            assert r.status_code == 400, (field, r.text)
            assert field in r.json()["detail"]
        status = anon.status()
        assert status["counts"]["refused_instances"] == 2
    created = set(tmp_path.rglob("*")) - before
    assert not [p for p in created if p.name == "x" or p.name.startswith("x.")]
    assert not (tmp_path.parent / "x").exists() and not Path("/x").exists()
    received = [p for p in (tmp_path / "anon" / "data" / "received").rglob("*") if p.is_file()]
    assert received == []


def _study(**fields: str) -> AnonStudy:
    values = {"protocol": "PACE-C", "subject": "PACE-C-RXH-AAAAAA", "session": "S_1"} | fields
    return AnonStudy(1, "2.25.1", values["protocol"], values["subject"], values["session"],
                     1, "approved", "", 0, None)  # fmt: skip


@pytest.mark.parametrize(
    "fields",
    [{"subject": "../.."}, {"session": "../../etc"}, {"protocol": ".."}, {"subject": "a/b"}],
)
def test_directory_target_refuses_a_path_from_unchecked_labels(
    tmp_path: Path, fields: dict[str, str]
) -> None:
    target = Directory(Target(type="directory", path=tmp_path / "repo"))
    src = tmp_path / "f.dcm"
    src.write_bytes(b"x")
    with pytest.raises(PermanentError, match="plain label"):
        target.send(_study(**fields), [("2.25.1", src)])
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p != src]


def test_directory_target_refuses_a_path_shaped_uid(tmp_path: Path) -> None:
    target = Directory(Target(type="directory", path=tmp_path / "repo"))
    src = tmp_path / "f.dcm"
    src.write_bytes(b"x")
    with pytest.raises(PermanentError, match="not a valid UID"):
        target.send(_study(), [(TRAVERSAL, src)])
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p != src]


def test_a_symlink_cannot_carry_a_path_out_of_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "PACE-C").symlink_to(tmp_path)  # a planted link to the parent
    with pytest.raises(PermanentError, match="leave its folder"):
        inside(root / "PACE-C", "..", "..", "x")
    with pytest.raises(PermanentError, match="leave its folder"):
        inside(root, "PACE-C", "x")  # the link resolves outside the root
    assert inside(root, "a", "b.dcm") == root.resolve() / "a" / "b.dcm"


def test_xnat_target_refuses_a_url_from_unchecked_labels(tmp_path: Path) -> None:
    xnat = Xnat(Target(type="xnat", url="https://xnat.invalid", project="SITE"))
    src = tmp_path / "f.dcm"
    src.write_bytes(b"x")
    with pytest.raises(PermanentError, match="plain label"):
        xnat.send(_study(subject="../../admin"), [("2.25.1", src)])
    with pytest.raises(PermanentError, match="plain label"):
        xnat.present(_study(session="x/../../y"), ["2.25.1"])
    with pytest.raises(PermanentError, match="not a valid UID"):
        xnat.send(_study(), [(TRAVERSAL, src)])
    with pytest.raises(PermanentError, match="plain label"):
        Xnat(Target(type="xnat", url="https://xnat.invalid", project="../x"))


@pytest.mark.parametrize(
    ("uid", "ok"),
    [
        ("1.2.840.10008.1.2", True),
        ("2.25.0", True),
        ("0.1", True),
        (TRAVERSAL, False),
        ("1.02.3", False),
        ("1..2", False),
        (".1.2", False),
        ("1.2.", False),
        ("1.2.3" + ".4" * 30, False),
        ("", False),
        ("1.2\x00", False),
    ],
)
def test_uid_syntax(uid: str, ok: bool) -> None:
    assert valid_uid(uid) is ok


@pytest.mark.parametrize("label", ["..", ".", "../..", "a/b", "a\\b", "", "a..b", "-x", "x" * 65])
def test_labels_that_could_name_another_folder_are_refused(label: str) -> None:
    assert not valid_label(label)
