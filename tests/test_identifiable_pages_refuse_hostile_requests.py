"""The identifiable node's staff pages against a hostile sender and a hostile user, on the real
node (HTTPS, its watched folder) with requests.

The sender plants markup, template syntax, a direction override and an htmx attribute in the
patient's name, a series description, the institution and an ROI name, a patient's name in
SeriesNumber (an IS), and a path in SeriesInstanceUID (`../../../links.csv?`, which the study
page put in the URLs it fetches). The user: every route of the app (listed from the app
itself) signed out, every POST without its CSRF token, a reviewer at the admin actions, ids
that are not ids, decisions on a rejected study, a relabel holding the patient's name. After
it all, the node's log holds none of the planted values.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest
import requests
import yaml
from fastapi.routing import APIRoute
from pydicom import dcmread

from identifiable_node.config import load_config
from identifiable_node.ingest import Ingestor
from identifiable_node.service import open_store, preflight
from identifiable_node.web.pages import build_site
from uploader.sample import Patient, write_study
from uploader.web.accounts import Accounts, Role

from .browser import chromium
from .peers import free_port, make_cert, node, node_config, wait_for
from .webnode import PASSWORDS, csrf_of

pytestmark = pytest.mark.integration
NAME = 'ZEBRA<script>alert(1)</script>^QUAGGA"><img src=x onerror=alert(2)>\u202eOKAPI'
DESCRIPTION = '{{ 7*7 }} <b hx-get="/links.csv" hx-trigger="load">NARWHAL</b>' + "W" * 3000
ROI = '"><svg onload=alert(4)>AXOLOTL'
HIDDEN_ROI = "Lung\u202eL"  # a direction override inside an ROI name
PLANTED = ("ZEBRA", "QUAGGA", "OKAPI", "NARWHAL", "AXOLOTL", "links.csv?", "onerror")
OPEN_ROUTES = {"/health", "/static/{name}", "/signin", "/signout"}


@dataclass
class Hostile:
    web: str
    ca: Path
    config: Path
    log: Path
    study: int
    routes: list[tuple[str, str]]  # (method, path) of every route of the app

    def client(self, name: str | None = None) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.ca)
        if name is not None:
            csrf = csrf_of(s.get(f"{self.web}/signin", timeout=10).text)
            signed = s.post(
                f"{self.web}/signin",
                data={"csrf": csrf, "name": name, "password": PASSWORDS[name]},
                timeout=30,
                allow_redirects=False,
            )
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"]
            assert "__Host-session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
            assert "samesite=strict" in cookie.lower()
        return s


def _hostile_study(folder: Path) -> None:
    patient = Patient(name=NAME, patient_id="9434765977", other_id="MRN0000077", tag="7")
    files = write_study(
        folder, slices=2, rois=["Prostate", "Rectum", "Bladder", ROI, "LungL"], patient=patient
    )
    for f in files:
        if f.suffix == ".txt":
            f.unlink()
            continue
        ds = dcmread(f)
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the direction override survives
        ds.PatientName = NAME
        ds.InstitutionName = "javascript:alert(3)//NARWHAL"
        for item in ds.get("StructureSetROISequence", []):
            item.ROIName = HIDDEN_ROI if item.ROIName == "LungL" else item.ROIName
        if ds.Modality == "CT":
            ds.SeriesInstanceUID = "../../../links.csv?"
            ds.SeriesDescription = DESCRIPTION
            ds.add_new("SeriesNumber", "IS", None)
            ds["SeriesNumber"]._value = "ZEBRA"  # an IS holding a name, as a sender may write
        ds.save_as(f)
    for readme in folder.rglob("README.txt"):
        readme.unlink()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    tmp = tmp_path_factory.mktemp("hostile_pages")
    cert = make_cert(tmp, "pages")
    config = node_config(
        tmp / "ident", f"https://127.0.0.1:{free_port()}/dicom-web", cert,
        node__default_protocol=None,
    )  # fmt: skip
    settings = yaml.safe_load(config.read_text())
    web_port = free_port()
    settings["web"] = {
        "listen": f"127.0.0.1:{web_port}",
        "tls_cert": str(cert),
        "tls_key": str(tmp / "pages.key"),
    }
    config.write_text(yaml.safe_dump(settings))
    accounts = Accounts(Path(settings["node"]["data_dir"]) / "node.sqlite")
    accounts.add("rita", Role.REVIEWER, PASSWORDS["rita"])
    accounts.add("adam", Role.ADMIN, PASSWORDS["adam"])
    _hostile_study(tmp / "study")
    with node(config) as ident:
        shutil.copytree(tmp / "study", Path(settings["folder"]["path"]) / "study")
        wait_for(lambda: ident.states() == ["needs_review"], 60, "the study waiting for a trial")
        with sqlite3.connect(f"file:{ident.data / 'node.sqlite'}?mode=ro", uri=True) as conn:
            (study,) = [r[0] for r in conn.execute("SELECT id FROM studies")]
        yield Hostile(
            f"https://127.0.0.1:{web_port}", cert, config, config.parent / "node.log", study,
            _routes(config),
        )  # fmt: skip


def _routes(config: Path) -> list[tuple[str, str]]:
    """Every route of the identifiable node's app, as the node builds it (not started)."""
    loaded = load_config(config)
    _key, trials = preflight(loaded, config)
    store, spool = open_store(loaded)
    site = build_site(loaded, Ingestor(store, spool), trials, Accounts(store.path), tls=True)
    try:
        return [
            (method, r.path)
            for r in site.app.routes
            if isinstance(r, APIRoute)
            for method in sorted(r.methods)
        ]
    finally:
        site.stop()


def _concrete(path: str, study: int) -> str:
    return (
        path.replace("{study_id}", str(study))
        .replace("{series_uid}", "1.2.3")
        .replace("{row_id}", "1")
        .replace("{what}", "retry")
        .replace("{decision}", "reject")
        .replace("{job}", "x")
        .replace("{name}", "site.css")
    )


def _audit(h: Hostile, actor: str) -> list[str]:
    db = Path(yaml.safe_load(h.config.read_text())["node"]["data_dir"]) / "node.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT action FROM audit WHERE actor=?", (actor,))]


def test_every_route_needs_a_session_and_every_post_its_token(hostile: Hostile) -> None:
    h = hostile
    assert len(h.routes) > 15, h.routes
    anonymous, rita = h.client(), h.client("rita")
    for method, path in h.routes:
        url = h.web + _concrete(path, h.study)
        if path in OPEN_ROUTES:
            continue
        got = anonymous.request(method, url, timeout=10, allow_redirects=False)
        if method == "GET":
            assert got.status_code == 303, (path, got.status_code)
            assert got.headers["location"].startswith("/signin?next=/")
        else:
            assert got.status_code == 401, (path, got.status_code)
        assert "ZEBRA" not in got.text and "9434765977" not in got.text
        if method == "POST":  # signed in, no token; then another's token
            assert rita.post(url, data={"reason": "x"}, timeout=10).status_code == 403, path
            forged = rita.post(url, data={"reason": "x", "csrf": "A" * 43}, timeout=10)
            assert forged.status_code == 403, path
    assert [s for s in _states(h) if s != "needs_review"] == []  # nothing was decided
    # every GET, as an admin: none decides anything or writes an audit row (but the export)
    adam = h.client("adam")
    before = _audit(h, "adam")
    for method, path in h.routes:
        if method == "GET" and path not in OPEN_ROUTES:
            got = adam.get(h.web + _concrete(path, h.study), timeout=30)
            assert got.status_code in (200, 404, 409), (path, got.status_code)
            assert got.headers["cache-control"] == "no-store", path
    assert _audit(h, "adam")[len(before) :] == ["link table exported"]
    assert _states(h) == ["needs_review"]


def _states(h: Hostile) -> list[str]:
    db = Path(yaml.safe_load(h.config.read_text())["node"]["data_dir"]) / "node.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT state FROM studies")]


def test_planted_values_are_text_and_no_url_is_made_of_them(hostile: Hostile) -> None:
    h = hostile
    adam = h.client("adam")
    exported = _audit(h, "adam").count("link table exported")
    for path in ("/", f"/studies/{h.study}"):
        page = adam.get(h.web + path, timeout=10)
        assert page.status_code == 200, (path, page.status_code)
        headers = page.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
        html = page.text
        assert "ZEBRA" in html  # shown, as text
        for raw in ("<script>alert", "<img src=x", "<svg onload", '<b hx-get="/links.csv"'):
            assert raw not in html, (path, raw)
        assert "\u202e" not in html and "\ufffdOKAPI" in html, html[html.find("\u202e") - 300 :][
            :400
        ]
    study = adam.get(f"{h.web}/studies/{h.study}", timeout=10).text
    assert "{{ 7*7 }}" in study and "NARWHAL" in study  # the description, not run
    fetched = re.findall(r'(?:hx-get|src|href)="([^"]*)"', study)
    assert fetched and not [u for u in fetched if ".." in u or "links.csv" in u], fetched
    viewer = next(u for u in fetched if u.endswith("/viewer"))
    shown = adam.get(h.web + viewer, timeout=10)
    assert shown.status_code == 200 and 'id="slice"' in shown.text  # the series still shows
    thumb = next(u for u in fetched if u.endswith("/thumb.png"))
    assert adam.get(h.web + thumb, timeout=10).headers["content-type"] == "image/png"
    assert _audit(h, "adam").count("link table exported") == exported  # opening it exported none


def test_a_reviewer_ids_that_are_not_ids_and_a_rejected_study(hostile: Hostile) -> None:
    h = hostile
    rita, adam = h.client("rita"), h.client("adam")
    csrf = csrf_of(rita.get(f"{h.web}/studies/{h.study}", timeout=10).text)
    for path in ("/node", "/links.csv", "/users"):
        assert rita.get(h.web + path, timeout=10).status_code == 403, path
    for path in ("/quarantine/1/delete", f"/studies/{h.study}/purge"):
        refused = rita.post(h.web + path, data={"csrf": csrf}, timeout=10)
        assert refused.status_code == 409 and "only an administrator" in refused.text, path
    for study in ("99999999999999999999", "\u0661", "-1", "1e3", "0"):
        assert rita.get(f"{h.web}/studies/{study}", timeout=10).status_code == 404, study
        for what in ("preview", "state", "series/1.2.3/viewer", "series/1.2.3/thumb.png"):
            got = rita.get(f"{h.web}/studies/{study}/{what}", timeout=10)
            assert got.status_code == 404, (study, what, got.status_code)
        got = rita.post(f"{h.web}/studies/{study}/release", data={"csrf": csrf}, timeout=10)
        assert got.status_code == 404, study
    huge = rita.post(f"{h.web}/quarantine/99999999999999999999/retry", data={"csrf": csrf})
    assert huge.status_code == 409 and "no quarantined file" in huge.text
    odd = rita.post(f"{h.web}/qr/retrieve", data={"csrf": csrf, "trial": "<b>NOPE", "study:1": "1"})
    assert odd.status_code == 409 and "no such trial" in odd.text
    for job in ("%2e%2e%2flinks.csv", "x%00", "-1", "9" * 30):
        assert rita.get(f"{h.web}/bulk/{job}", timeout=10).status_code == 404, job
    # a relabel holding the patient's name; then one naming an ROI the study lacks
    url = f"{h.web}/studies/{h.study}"
    named = rita.post(f"{url}/relabel", data={"csrf": csrf, f"new:{ROI}": "Quagga_L"})
    assert named.status_code == 409 and "the patient's name" in unescape(named.text)
    ghost = rita.post(f"{url}/relabel", data={"csrf": csrf, "new:Spleen": "Rectum"})
    assert ghost.status_code == 409 and "no ROI of that name" in ghost.text
    # the ROI whose name hides a character is named in the form as shown, and relabelled
    form = rita.get(url, timeout=10).text
    assert 'name="new:Lung\ufffdL"' in form and "\u202e" not in form
    fixed = rita.post(f"{url}/relabel", data={"csrf": csrf, "new:Lung\ufffdL": "Lung_L"})
    assert fixed.status_code == 200 and "ROI names saved" in fixed.text, unescape(fixed.text)[:3000]
    assert "&#39;Lung\\u202eL&#39; -&gt; &#39;Lung_L&#39;" in fixed.text  # audited, escaped
    # rejected: no decision brings it back
    assert rita.post(f"{url}/reject", data={"csrf": csrf, "reason": "hostile"}).ok
    for decision, form in (
        ("release", {}), ("hold", {}), ("trial", {"trial": "PACE-C"}),
        ("relabel", {"new:Rectum": "Rectum_X"}), ("ids", {"subject": "PACE-0001"}),
    ):  # fmt: skip
        got = rita.post(f"{url}/{decision}", data={"csrf": csrf, **form}, timeout=10)
        assert got.status_code == 409 and "rejected" in got.text, decision
    assert _states(h) == ["rejected"]
    page = adam.get(url, timeout=10).text
    assert 'id="release"' not in page and 'id="purge"' in page


def test_the_log_holds_none_of_the_planted_values(hostile: Hostile) -> None:
    h = hostile
    adam = h.client("adam")
    for path in (
        "/", f"/studies/{h.study}", f"/studies/{h.study}/preview", "/quarantine",
        "/?q=9434765977", "/qr?patient_id=9434765977&accession=ZEBRA",
    ):  # fmt: skip
        adam.get(h.web + path, timeout=30)
    missing = adam.get(f"{h.web}/no/such/page?q=ZEBRA", timeout=10)
    assert missing.status_code == 404 and "ZEBRA" not in missing.text
    assert "frame-ancestors 'none'" in missing.headers["content-security-policy"]
    text = h.log.read_text(errors="replace")
    assert "staff pages" in text or text  # the node wrote its log
    assert [p for p in PLANTED if p in text] == []
    assert "9434765977" not in text and "MRN0000077" not in text


def test_in_a_browser_no_planted_markup_runs_or_fetches(hostile: Hostile, tmp_path: Path) -> None:
    """Headless Chromium with htmx live: no alert, no planted element, no fetch of the link
    export, and the name's direction override does not turn the patient ID around."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    h = hostile
    exported = _audit(h, "adam").count("link table exported")
    with chromium(tmp_path / "profile") as driver:
        driver.get(f"{h.web}/signin")
        # under load the first page can take its time (or be an interstitial): wait for the form,
        # and say what came instead if it never does (the sign-in page holds no patient data)
        WebDriverWait(driver, 30).until(
            lambda d: d.find_elements(By.ID, "name") or d.get(f"{h.web}/signin"),
            message=f"no sign-in form; the page was: {driver.page_source[:300]!r}",
        )
        driver.find_element(By.ID, "name").send_keys("adam")
        driver.find_element(By.ID, "password").send_keys(PASSWORDS["adam"])
        driver.find_element(By.ID, "signin").click()
        WebDriverWait(driver, 20).until(lambda d: "Sign out" in d.page_source)
        for path in ("/", f"/studies/{h.study}"):
            driver.get(h.web + path)
            WebDriverWait(driver, 20).until(lambda d: "ZEBRA" in d.page_source)
            if path != "/":  # the viewer came in by htmx (hx-trigger=load)
                WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "slice"))
            planted = driver.execute_script(
                'return document.querySelectorAll(\'img[src="x"], svg[onload], b[hx-get],'
                " script:not([src])').length"
            )
            assert planted == 0, path
            fetched = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert not [u for u in fetched if "links.csv" in u or "%2e" in u.lower()], fetched
        assert driver.find_element(By.ID, "patient-id").text == "9434765977"
        alert = driver.execute_script("return typeof window.alert")  # none was opened
        assert alert == "function"
    assert _audit(h, "adam").count("link table exported") == exported
