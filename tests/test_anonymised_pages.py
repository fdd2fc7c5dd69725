"""The anonymised node's staff pages over real HTTPS (no browser): sign-in, security headers,
CSRF, escaping of hostile DICOM values, decisions, the audit page; the review API still works.
Named for what an attacker or a careless request tries."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from .peers import wait_for
from .test_anonymised_node import _deidentified, _send
from .webnode import csrf_of, web_node

pytestmark = pytest.mark.integration
XSS_SERIES = "<script>alert(1)</script>"
XSS_ROI = '"><img src=x onerror=alert(2)>'


def _hostile(files: list[Path]) -> list[Path]:
    """Plant markup in a CT SeriesDescription and an ROI name (values a TPS could export)."""
    for f in files:
        ds = dcmread(f)
        if ds.Modality == "CT":
            ds.SeriesDescription = XSS_SERIES
        elif ds.Modality == "RTSTRUCT":
            ds.StructureSetROISequence[0].ROIName = XSS_ROI
        else:
            continue
        ds.save_as(f)
    return files


def test_pages_need_sign_in_and_carry_strict_headers(tmp_path: Path, key_file: Path) -> None:
    with web_node(tmp_path / "anon", {"type": "directory", "path": str(tmp_path / "out")}) as n:
        anonymous = n.client()
        first = anonymous.get(f"{n.web}/", timeout=10, allow_redirects=False)
        assert first.status_code == 303 and first.headers["location"].startswith("/signin")
        page = anonymous.get(f"{n.web}/signin", timeout=10)
        h = page.headers
        assert "script-src 'self'" in h["content-security-policy"]
        assert "'unsafe-inline'" not in h["content-security-policy"]
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer"
        assert h["cache-control"] == "no-store"
        assert "<script>" not in page.text.replace('<script src="/static/', "")  # no inline script
        static = anonymous.get(f"{n.web}/static/htmx-2.0.11.min.js", timeout=10)
        assert static.ok and "htmx" in static.text[:2000]
        s = n.sign_in("rita")
        cookie = next(c for c in s.cookies if c.name == "__Host-session")
        assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
        set_cookie = [v for k, v in s.get(f"{n.web}/signin").headers.items() if k == "set-cookie"]
        assert all("samesite=strict" in v.lower() for v in set_cookie)
        # the intake port does not serve the pages, the pages' port does not take STOW-RS
        assert requests.get(f"{n.anon.url}/", verify=str(n.ca), timeout=10).status_code == 404
        assert s.post(f"{n.web}/dicom-web/studies", timeout=10).status_code in (404, 405)
        # the audit page is for admins only
        assert s.get(f"{n.web}/audit", timeout=10).status_code == 403
        assert n.sign_in("adam").get(f"{n.web}/audit", timeout=10).status_code == 200


def test_wrong_passwords_are_throttled_and_never_say_whether_the_account_exists(
    tmp_path: Path,
) -> None:
    with web_node(tmp_path / "anon", {"type": "directory", "path": str(tmp_path / "out")}) as n:
        s = n.client()

        def attempt(name: str, password: str) -> requests.Response:
            csrf = csrf_of(s.get(f"{n.web}/signin", timeout=10).text)
            form = {"csrf": csrf, "name": name, "password": password}
            return s.post(f"{n.web}/signin", data=form, timeout=30)

        unknown = attempt("nobody", "whatever-password")
        wrong = attempt("rita", "not-her-password")
        assert unknown.status_code == wrong.status_code == 401
        assert "Wrong name or password." in unknown.text and "Wrong name or password." in wrong.text
        for _ in range(3):
            attempt("rita", "not-her-password")
        limited = attempt("rita", "reviewer-password-1")  # the right one, after 5 failures here
        assert limited.status_code == 429 and "Too many failed sign-ins" in limited.text


def test_posts_without_the_csrf_token_are_refused(tmp_path: Path, key_file: Path) -> None:
    files = _deidentified(tmp_path, key_file, slices=2)
    with web_node(tmp_path / "anon", {"type": "directory", "path": str(tmp_path / "out")}) as n:
        _send(n.anon, files)
        n.anon.wait_state("ready")
        s = n.sign_in("rita")
        url = f"{n.web}/studies/1/decide"
        assert s.post(url, data={"decision": "approve"}, timeout=10).status_code == 403
        forged = {"decision": "approve", "csrf": "x" * 43}
        assert s.post(url, data=forged, timeout=10).status_code == 403
        signin = {"name": "rita", "password": "reviewer-password-1"}  # a cross-site sign-in
        assert n.client().post(f"{n.web}/signin", data=signin, timeout=10).status_code == 403
        assert n.anon.status()["counts"]["ready"] == 1
        page = s.get(f"{n.web}/studies/1", timeout=10)
        ok = s.post(url, data={"decision": "approve", "csrf": csrf_of(page.text)}, timeout=10)
        assert ok.status_code == 200 and "Approved: the push starts." in ok.text
        n.anon.wait_state("uploaded")


def test_hostile_dicom_values_render_as_text(tmp_path: Path, key_file: Path) -> None:
    files = _hostile(_deidentified(tmp_path, key_file, slices=2))
    with web_node(tmp_path / "anon", {"type": "directory", "path": str(tmp_path / "out")}) as n:
        _send(n.anon, files)
        n.anon.wait_state("ready")
        s = n.sign_in("rita")
        study = s.get(f"{n.web}/studies/1", timeout=10).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in study and XSS_SERIES not in study
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in study and "<img src=x" not in study
        ct = next(f for f in files if dcmread(f).Modality == "CT")
        series = dcmread(ct).SeriesInstanceUID
        viewer = s.get(f"{n.web}/studies/1/series/{series}/viewer", timeout=10).text
        assert "&lt;script&gt;" in viewer and "<script>alert" not in viewer
        assert "onerror=alert(2)&gt;" in viewer and "<img src=x" not in viewer
        sop = dcmread(ct).SOPInstanceUID
        header = s.get(f"{n.web}/studies/1/instances/{sop}/header?q=script", timeout=10).text
        assert "SeriesDescription" in header and "&lt;script&gt;" in header
        assert "PatientID" not in header  # the search keeps only what matches


def test_reject_needs_a_reason_and_an_admin_reopens_then_the_api_approves(
    tmp_path: Path, key_file: Path
) -> None:
    files = _deidentified(tmp_path, key_file, slices=2)
    with web_node(tmp_path / "anon", {"type": "directory", "path": str(tmp_path / "out")}) as n:
        _send(n.anon, files)
        n.anon.wait_state("ready")
        rita = n.sign_in("rita")
        url = f"{n.web}/studies/1/decide"
        csrf = csrf_of(rita.get(f"{n.web}/studies/1", timeout=10).text)
        blank = rita.post(url, data={"decision": "reject", "csrf": csrf, "reason": " "}, timeout=10)
        assert blank.status_code == 409 and "a rejection needs a reason" in blank.text
        why = {"decision": "reject", "csrf": csrf, "reason": "wrong patient position"}
        assert rita.post(url, data=why, timeout=10).ok
        queue = rita.get(f"{n.web}/?state=rejected", timeout=10).text
        assert "wrong patient position" in queue and 'data-state="rejected"' in queue
        assert (
            "rejected" in rita.post(url, data={"decision": "reopen", "csrf": csrf}, timeout=10).text
        )
        assert n.anon.status()["counts"]["rejected"] == 1  # a reviewer cannot re-open
        adam = n.sign_in("adam")
        token = csrf_of(adam.get(f"{n.web}/studies/1", timeout=10).text)
        assert adam.post(url, data={"decision": "reopen", "csrf": token}, timeout=10).ok
        assert n.anon.status()["counts"]["ready"] == 1
        api = requests.post(
            f"{n.anon.url}/api/studies/1/approve",
            json={"by": "script"},
            headers={"Authorization": f"Bearer {n.anon.review_token}"},
            verify=str(n.ca),
            timeout=10,
        )
        assert api.json() == {"status": "approved"}
        n.anon.wait_state("uploaded")
        audit = adam.get(f"{n.web}/audit?study=1", timeout=10).text
        for line in ("rita", "wrong patient position", "adam", "rejected -&gt; ready", "script"):
            assert line in audit
        assert "Hash chain intact" in audit
        csv_text = adam.get(f"{n.web}/audit.csv?user=rita", timeout=10).text
        assert "ready -> rejected" in csv_text and "adam" not in csv_text
        wait_for(lambda: "sign-in" in adam.get(f"{n.web}/audit.csv", timeout=10).text, 5, "audit")


def test_pages_port_taken_stops_the_node_instead_of_running_without_pages(
    tmp_path: Path,
) -> None:
    import socket
    import subprocess
    import sys

    import yaml

    from .peers import anon_config

    config, _cert, _port = anon_config(tmp_path / "anon", {"type": "directory", "path": "/tmp/x"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = yaml.safe_load(config.read_text())
        settings["web"] = {"listen": f"127.0.0.1:{taken.getsockname()[1]}"}
        config.write_text(yaml.safe_dump(settings))
        done = subprocess.run(
            [sys.executable, "-m", "anonymised_node", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert "the staff pages stopped" in done.stderr
    assert not (tmp_path / "anon" / "data" / "node.ready").exists()


def test_study_page_shows_the_plan_and_draws_isodoses_on_the_ct(
    tmp_path: Path, key_file: Path
) -> None:
    import io

    import numpy as np
    from PIL import Image

    from uploader.web.dose import LEVELS

    files = _deidentified(tmp_path, key_file, slices=3)
    cts = sorted(
        (dcmread(f) for f in files if dcmread(f).Modality == "CT"),
        key=lambda d: d.ImagePositionPatient[2],
    )
    for f in files:
        ds = dcmread(f)
        if ds.Modality == "RTDOSE":  # move the sample's small grid onto the first two CT slices
            ds.ImagePositionPatient = [-10.0, -10.0, float(cts[0].ImagePositionPatient[2])]
            ds.save_as(f)
    with web_node(tmp_path / "anon", {"type": "directory", "path": str(tmp_path / "out")}) as n:
        _send(n.anon, files)
        n.anon.wait_state("ready")
        s = n.sign_in("rita")
        page = s.get(f"{n.web}/studies/1", timeout=10).text
        assert "RT plan PROST60" in page and "fractions: 20" in page
        series = cts[0].SeriesInstanceUID
        viewer = s.get(f"{n.web}/studies/1/series/{series}/viewer?i=0", timeout=10).text
        assert 'id="isodoses"' in viewer and "95 %" in viewer
        png = s.get(f"{n.web}/studies/1/series/{series}/slice.png?i=0", timeout=10)
        arr = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
        found = [np.all(arr == np.array(c, dtype=np.uint8), axis=-1).any() for _p, c in LEVELS]
        assert any(found)
        far = s.get(f"{n.web}/studies/1/series/{series}/slice.png?i=2", timeout=10)
        arr = np.asarray(Image.open(io.BytesIO(far.content)).convert("RGB"))
        assert not any(
            np.all(arr == np.array(c, dtype=np.uint8), axis=-1).any() for _p, c in LEVELS
        )
