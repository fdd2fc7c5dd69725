"""A truncated instance, and instances sent again with other bytes, at the real anonymised node:
the truncated copy is refused with its reason and never stored, so the complete copy sent after
it is the one kept; a changed copy replaces the stored one while the study awaits review, and is
refused with the reason once staff decided; the same bytes again are accepted once."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from .conftest import KEY, run_cli
from .gate_variants import make_study
from .intake_client import failures, manifest_for, post_manifest, stow
from .peers import anon_config, anon_node, wait_for

pytestmark = pytest.mark.integration


def _changed(path: Path) -> bytes:
    """The same instance with one pixel changed (still clean: the gate must accept it)."""
    ds = dcmread(path)
    pixels = bytearray(ds.PixelData)
    pixels[0] ^= 0xFF
    ds.PixelData = bytes(pixels)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _stored_bytes(data: Path) -> list[bytes]:
    return [p.read_bytes() for p in (data / "received").rglob("*.dcm")]


def test_truncated_then_complete_then_changed_copies(tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    key.write_text(KEY.hex())
    study = make_study(tmp_path / "study", key)
    ct = next(p for p in study.deid if "/CT_" in str(p))
    complete = ct.read_bytes()
    out = tmp_path / "repository"
    config, _cert, _port = anon_config(tmp_path / "anon", {"type": "directory", "path": str(out)})
    with anon_node(config) as anon:
        assert post_manifest(anon, manifest_for(study.deid)).status_code == 200
        cut = stow(anon, [complete[: len(complete) // 3]])
        assert cut.status_code == 409, cut.text
        (item,) = failures(cut)
        assert item["00081197"]["Value"] == [0xC000]
        assert "incomplete DICOM" in item["00000902"]["Value"][0]
        assert _stored_bytes(anon.data) == []  # a refused instance never reaches the disk
        whole = stow(anon, [complete])
        assert whole.status_code == 200, whole.text
        assert _stored_bytes(anon.data) == [complete]

        changed = _changed(ct)  # re-sent with other bytes while receiving: replaces the copy
        again = stow(anon, [changed])
        assert again.status_code == 200, again.text
        assert _stored_bytes(anon.data) == [changed]
        assert stow(anon, [changed]).status_code == 200  # the same bytes: stored once
        assert len(_stored_bytes(anon.data)) == 1

        rest = [p for p in study.deid if p != ct]
        assert stow(anon, rest).status_code == 200
        ready = anon.wait_state("ready")
        assert ready["counts"]["refused_instances"] == 1
        shown = run_cli("review", "show", "1", "--config", config).stdout
        assert "instance replaced" in shown
        staff = {"Authorization": f"Bearer {anon.review_token}"}
        approved = requests.post(
            f"{anon.url}/api/studies/1/approve",
            json={"by": "dr.who"},
            headers=staff,
            verify=str(anon.ca),
            timeout=10,
        )
        assert approved.ok, approved.text
        anon.wait_state("uploaded")
        pushed = {p.read_bytes() for p in out.rglob("*.dcm")}
        assert changed in pushed and complete not in pushed  # the copy kept is what was pushed

        late = stow(anon, [complete])  # other bytes after staff decided: refused, with why
        assert late.status_code == 409
        (item,) = failures(late)
        assert item["00081197"]["Value"] == [0x0111]
        assert "already received with other bytes" in item["00000902"]["Value"][0]
        assert "uploaded" in item["00000902"]["Value"][0]
        assert stow(anon, [changed]).status_code == 200  # the kept bytes again: fine
        wait_for(lambda: anon.status()["counts"]["refused_instances"] == 2, 10, "the refusal")
        status = run_cli("status", "--config", config).stdout
        assert "ALERT refused instance uid-" in status
        assert str(dcmread(ct, stop_before_pixels=True).SOPInstanceUID) not in status
