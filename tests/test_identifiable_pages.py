"""The identifiable node's staff pages in a real browser (headless Chromium), against the real
node receiving from storescu and forwarding to the real anonymised node.

One node, one anonymised node and one browser for the module: three studies arrive with no
trial. Study A has ROI names that fail the protocol (`Lt Parotid`, a misspelt `Rectm`): staff
choose the trial from the drop-down, accept the suggestions, the report turns green, they
release, and the anonymised node receives the new names. Study B: the patient's own MRN as
subject ID is refused with the reason, a valid ID is used in the output. Study C: an opted-out
patient has no release button, a forged release is refused, and it never leaves. A reviewer
cannot open the users page or purge; a signed-out request is sent to sign-in. Screenshots of the
worklist and the study page are saved in the module's folder (printed).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pydicom import dcmread

from uploader.sample import Patient, write_study
from uploader.web.accounts import Accounts, Role

from .browser import chromium
from .peers import (
    AnonNode,
    Node,
    anon_config,
    anon_node,
    free_port,
    make_cert,
    node,
    node_config,
    orthanc,
    storescu,
    wait_for,
)
from .webnode import PASSWORDS, csrf_of

pytestmark = pytest.mark.integration
ROIS_A = ["Prostate", "Rectm", "Bladder", "PTV_1", "Lt Parotid"]
ROIS = ["Prostate", "Rectum", "Bladder", "PTV_1"]
PATIENTS = {
    "A": Patient(name="ADAMS^ALICE", patient_id="9434765911", other_id="MRN0000011", tag="1"),
    "B": Patient(name="BROWN^BORIS", patient_id="9434765922", other_id="MRN0000022", tag="2"),
    "C": Patient(name="CLARK^CERYS", patient_id="9434765933", other_id="MRN0000033", tag="3"),
}
IN_PACS = {  # retrieved from the PACS by the query form (D) and by a bulk CSV (E)
    "D": Patient(name="DAVIS^DORA", patient_id="9434765944", accession="ACC0044", tag="4"),
    "E": Patient(name="EVANS^ELLIS", patient_id="9434765955", accession="ACC0055", tag="5"),
}


@dataclass
class Pages:
    ident: Node
    anon: AnonNode
    web: str
    ca: Path
    out: Path
    driver: Any
    ids: dict[str, int]  # study letter -> row id on the identifiable node

    def client(self, name: str | None = None) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.ca)
        if name is not None:
            csrf = csrf_of(s.get(f"{self.web}/signin", timeout=10).text)
            s.post(
                f"{self.web}/signin",
                data={"csrf": csrf, "name": name, "password": PASSWORDS[name]},
                timeout=30,
            )
        return s


def _studies(folder: Path) -> None:
    for letter, patient in PATIENTS.items():
        study = folder / f"study{letter}"
        write_study(study, slices=3, rois=ROIS_A if letter == "A" else ROIS, patient=patient)
        next(study.rglob("README.txt")).unlink()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    tmp = tmp_path_factory.mktemp("identifiable_pages")
    print(f"screenshots and logs in {tmp}")
    _studies(tmp)
    aconfig, acert, aport = anon_config(
        tmp / "anon", {"type": "directory", "path": str(tmp / "repo")}
    )
    icert = make_cert(tmp, "pages")
    (tmp / "optout.txt").write_text(PATIENTS["C"].patient_id + "\n")
    web_port, scp_port = free_port(), free_port()
    config = node_config(
        tmp / "ident",
        f"https://127.0.0.1:{aport}/dicom-web",
        acert,
        node__default_protocol=None,
        forward__token_file=str(tmp / "anon" / "token"),
        forward__manifest_url=f"https://127.0.0.1:{aport}/manifests",
        optout__file=str(tmp / "optout.txt"),
        scp__port=scp_port,
        pacs__ae_title="PACS",
        pacs__host="127.0.0.1",
    )
    settings = yaml.safe_load(config.read_text())
    settings["web"] = {
        "listen": f"127.0.0.1:{web_port}",
        "tls_cert": str(icert),
        "tls_key": str(tmp / "pages.key"),
    }
    accounts = Accounts(Path(settings["node"]["data_dir"]) / "node.sqlite")
    accounts.add("rita", Role.REVIEWER, PASSWORDS["rita"])
    accounts.add("adam", Role.ADMIN, PASSWORDS["adam"])
    for protocol in (
        tmp / "anon" / "protocols" / "prostate.yaml",
        tmp / "ident" / "protocols" / "prostate.yaml",
    ):
        _manual_subjects(protocol)
    modality = {
        "uploader": {
            "AET": "UPLOADER", "Host": "127.0.0.1", "Port": scp_port,
            "AllowFind": True, "AllowMove": True, "AllowStore": True,
        }
    }  # fmt: skip
    with orthanc(tmp / "pacs", modalities=modality, aet="PACS") as pacs:
        for letter, patient in IN_PACS.items():
            for f in write_study(tmp / f"pacs{letter}", slices=2, rois=ROIS, patient=patient):
                assert requests.post(f"{pacs.http}/instances", data=f.read_bytes(), timeout=10)
        settings["pacs"]["port"] = pacs.dicom_port
        config.write_text(yaml.safe_dump(settings))
        yield from _nodes(tmp, aconfig, config, web_port, icert)


def _nodes(tmp: Path, aconfig: Path, config: Path, web_port: int, icert: Path) -> Iterator[Pages]:
    with anon_node(aconfig) as anon, node(config) as ident, chromium(tmp / "profile") as driver:
        for letter in PATIENTS:
            assert storescu(ident.scp_port, tmp / f"study{letter}").returncode == 0
        wait_for(
            lambda: sorted(ident.states()) == ["needs_review", "needs_review", "opted_out"],
            60,
            "two studies waiting for a trial and one opted out",
        )
        ids = _ids(ident)
        yield Pages(ident, anon, f"https://127.0.0.1:{web_port}", icert, tmp, driver, ids)


def _manual_subjects(protocol: Path) -> None:
    """The trial assigns its own subject IDs (PACE-nnnn): staff enter them."""
    text = protocol.read_text()
    line = '  session: "{subject}_{hash:4}"'
    assert line in text
    protocol.write_text(text.replace(line, line + '\n  manual_subject: "^PACE-\\\\d{4}$"'))


def _ids(ident: Node) -> dict[str, int]:
    with sqlite3.connect(f"file:{ident.data / 'node.sqlite'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, patient_id FROM studies").fetchall()
    by_patient = {p.patient_id: letter for letter, p in PATIENTS.items()}
    return {by_patient[pid]: int(i) for i, pid in rows}


def _sign_in(p: Pages, name: str) -> None:
    from selenium.webdriver.common.by import By

    p.driver.delete_all_cookies()
    p.driver.get(f"{p.web}/signin")
    p.driver.find_element(By.ID, "name").send_keys(name)
    p.driver.find_element(By.ID, "password").send_keys(PASSWORDS[name])
    p.driver.find_element(By.ID, "signin").click()
    _wait(p.driver, lambda d: "Sign out" in d.page_source, "the sign-in")


def _wait(driver: Any, predicate: Any, what: str, timeout: float = 30) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (StaleElementReferenceException,)
    return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(
        predicate, message=f"waited for {what}"
    )


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)
    return str(found[0].text) if found else ""


def _received(p: Pages, subject_hint: str = "") -> list[Any]:
    """The headers the anonymised node received (every study)."""
    db = p.anon.data / "anonymised.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        paths = [r[0] for r in conn.execute("SELECT path FROM instances")]
    return [dcmread(path, stop_before_pixels=True) for path in paths]


def test_worklist_shows_patients_to_signed_in_staff_and_sends_others_to_sign_in(
    pages: Pages,
) -> None:
    from selenium.webdriver.common.by import By

    anonymous = pages.client()
    got = anonymous.get(f"{pages.web}/studies/{pages.ids['A']}", timeout=10, allow_redirects=False)
    assert got.status_code == 303 and got.headers["location"].startswith("/signin?next=/studies/")
    assert "ADAMS" not in got.text
    _sign_in(pages, "rita")
    _wait(pages.driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.study")) == 3, "rows")
    text = pages.driver.find_element(By.ID, "worklist").text
    for patient in PATIENTS.values():
        assert patient.patient_id in text and patient.accession in text
    assert "ADAMS^ALICE" in text and "no trial assigned" in text
    assert "opted out" in text and "patient on the data opt-out list" in text
    assert "forwarded" in text  # each row's progress: received, de-identified, forwarded
    shot = pages.out / "worklist.png"
    pages.driver.save_screenshot(str(shot))
    # search by name, then by accession, and filter by state
    pages.driver.get(f"{pages.web}/?q=BROWN")
    rows = pages.driver.find_elements(By.CSS_SELECTOR, "tr.study")
    assert [r.get_attribute("data-study") for r in rows] == [str(pages.ids["B"])]
    pages.driver.get(f"{pages.web}/?state=opted_out")
    rows = pages.driver.find_elements(By.CSS_SELECTOR, "tr.study")
    assert [r.get_attribute("data-study") for r in rows] == [str(pages.ids["C"])]


def test_a_refused_choice_in_the_drop_down_is_shown(pages: Pages) -> None:
    """The trial drop-down posts through htmx, which by itself shows nothing of a 409: the page
    shows the refusal (here a trial another tab offered that this node does not have)."""
    from selenium.webdriver.common.by import By

    driver, study = pages.driver, pages.ids["A"]
    _sign_in(pages, "rita")
    driver.get(f"{pages.web}/studies/{study}")
    select = driver.find_element(By.ID, "trial")
    driver.execute_script(
        "const o = document.createElement('option'); o.value = o.textContent = 'NOPE-9';"
        "arguments[0].appendChild(o); arguments[0].value = 'NOPE-9';"
        "arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
        select,
    )
    shown = _wait(driver, lambda d: _text(d, "error"), "the refusal on the page")
    assert "this node has no trial 'NOPE-9'" in shown
    assert driver.find_elements(By.ID, "study-main"), "the study stays on the page"


def test_failing_roi_names_relabelled_from_the_suggestions_then_released(pages: Pages) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, study = pages.driver, pages.ids["A"]
    _sign_in(pages, "rita")
    driver.get(f"{pages.web}/studies/{study}")
    assert "no trial assigned" in _text(driver, "reason")
    Select(driver.find_element(By.ID, "trial")).select_by_value("PACE-C")  # htmx posts at once
    verdict = _wait(driver, lambda d: d.find_elements(By.ID, "verdict"), "the report")[0]
    assert verdict.get_attribute("data-passed") == "no"
    assert "trial chosen: PACE-C (rita): waiting for release" in _text(driver, "reason")
    rows = {
        r.get_attribute("data-roi"): r.find_element(By.CLASS_NAME, "suggestion").text
        for r in driver.find_elements(By.CSS_SELECTOR, "tr.roi")
    }
    assert rows["Rectm"] == "Rectum" and rows["Lt Parotid"] == "Parotid_L"
    assert "required structure Rectum is missing" in driver.find_element(By.ID, "structures").text
    driver.find_element(By.ID, "save-relabel").click()  # the suggestions are filled in
    _wait(driver, lambda d: "ROI names saved" in _text(d, "done"), "the relabel")
    verdict = driver.find_element(By.ID, "verdict")
    assert verdict.get_attribute("data-passed") == "yes", driver.find_element(By.ID, "report").text
    assert "Rectum present" in driver.find_element(By.ID, "structures").text.replace("(", "")
    audit = driver.find_element(By.ID, "audit").text
    assert "rita ROI relabelled 'Rectm' -> 'Rectum'" in audit
    assert "'Lt Parotid' -> 'Parotid_L'" in audit
    legend = _wait(driver, lambda d: d.find_elements(By.ID, "legend"), "the viewer")[0].text
    assert "Rectm" in legend and "Lt Parotid" in legend  # the files as received, contours drawn
    driver.save_screenshot(str(pages.out / "study.png"))
    pseudonym = _preview(pages, study)
    driver.get(f"{pages.web}/studies/{study}")
    driver.find_element(By.ID, "release").click()
    _wait(driver, lambda d: "Released" in _text(d, "done"), "the release")
    _wait(
        driver,
        lambda d: d.find_element(By.ID, "state-label").get_attribute("data-state") == "forwarded",
        "the study forwarded (the state polls)",
        timeout=60,
    )
    names: set[str] = set()
    for ds in _received(pages):
        if ds.Modality == "RTSTRUCT":
            names |= {str(r.ROIName) for r in ds.StructureSetROISequence}
    assert {"Rectum", "Parotid_L", "Prostate"} <= names
    assert "Rectm" not in names and "Lt Parotid" not in names
    assert pseudonym in {str(ds.PatientName) for ds in _received(pages)}  # as the preview said


def _preview(pages: Pages, study: int) -> str:
    """The preview: PatientName replaced by the pseudonym; returns the pseudonym shown."""
    from selenium.webdriver.common.by import By

    driver = pages.driver
    driver.find_element(By.ID, "preview-link").click()
    sections = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "section.preview"), "it")
    assert len(sections) >= 3  # CT, RTSTRUCT, RTPLAN, RTDOSE: one instance each
    row = sections[0].find_element(By.CSS_SELECTOR, 'tr[data-keyword="PatientName"]')
    assert row.get_attribute("data-kind") == "replaced"
    before = row.find_element(By.CLASS_NAME, "before").text
    after = row.find_element(By.CLASS_NAME, "after").text
    assert before == PATIENTS["A"].name and after.startswith("PACE-C-RXH-"), (before, after)
    afters = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "td.after")]
    assert afters and not [a for a in afters if "ADAMS" in a.upper() or "9434765911" in a]
    driver.save_screenshot(str(pages.out / "preview.png"))
    return after


def test_manual_subject_id_refuses_the_patients_mrn_and_uses_a_valid_one(pages: Pages) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import Select

    driver, study = pages.driver, pages.ids["B"]
    _sign_in(pages, "rita")
    driver.get(f"{pages.web}/studies/{study}")
    Select(driver.find_element(By.ID, "trial")).select_by_value("PACE-C")
    _wait(driver, lambda d: d.find_elements(By.ID, "verdict"), "the report")

    def saved_ids(subject: str) -> str:
        """Enter a subject ID and save it; the refusal on the page that comes back (the old
        page's refusal, still shown until the answer replaces it, does not count)."""
        box = driver.find_element(By.ID, "subject-id")
        box.clear()
        box.send_keys(subject)
        before = driver.find_element(By.ID, "subject-id")
        driver.find_element(By.ID, "save-ids").click()
        _wait(driver, staleness_of(before), "the answer to the save")
        return str(_wait(driver, lambda d: _text(d, "error"), "the refusal"))

    for own in (PATIENTS["B"].other_id, f"X{PATIENTS['B'].patient_id}", "BROWN-01"):
        error = saved_ids(own)
        assert "refused" in error and "the patient's" in error, error
        assert own not in error  # the reason names what it looks like, not the value
    error = saved_ids("PACE-12")
    assert "does not match the trial's pattern" in error, error
    box = driver.find_element(By.ID, "subject-id")
    box.clear()
    box.send_keys("PACE-0042")
    driver.find_element(By.ID, "save-ids").click()
    _wait(driver, lambda d: "Manual IDs saved" in _text(d, "done"), "the IDs saved")
    driver.find_element(By.ID, "release").click()
    _wait(
        driver,
        lambda d: d.find_element(By.ID, "state-label").get_attribute("data-state") == "forwarded",
        "study B forwarded",
        timeout=60,
    )
    assert "PACE-0042" in {str(ds.PatientID) for ds in _received(pages)}


def test_opted_out_study_has_no_release_and_a_forged_release_is_refused(pages: Pages) -> None:
    from selenium.webdriver.common.by import By

    driver, study = pages.driver, pages.ids["C"]
    _sign_in(pages, "rita")
    driver.get(f"{pages.web}/studies/{study}")
    assert "opt-out" in _text(driver, "opted-out")
    assert driver.find_elements(By.ID, "release") == []
    assert driver.find_elements(By.ID, "purge") == []  # reviewers do not purge
    s = pages.client("rita")
    page = s.get(f"{pages.web}/studies/{study}", timeout=10)
    forged = s.post(
        f"{pages.web}/studies/{study}/release", data={"csrf": csrf_of(page.text)}, timeout=10
    )
    assert forged.status_code == 409 and "opt-out" in forged.text
    purge = s.post(
        f"{pages.web}/studies/{study}/purge", data={"csrf": csrf_of(page.text)}, timeout=10
    )
    assert purge.status_code == 409 and "only an administrator" in purge.text
    assert s.get(f"{pages.web}/users", timeout=10).status_code == 403
    admin = pages.client("adam")
    assert "rita" in admin.get(f"{pages.web}/users", timeout=10).text
    assert pages.ident.states().count("opted_out") == 1
    received = {str(ds.PatientID) for ds in _received(pages)}
    assert all(PATIENTS["C"].patient_id not in r for r in received)
    with sqlite3.connect(f"file:{pages.ident.data / 'node.sqlite'}?mode=ro", uri=True) as conn:
        sent = conn.execute(
            "SELECT COUNT(*) FROM instances WHERE study_id=? AND forwarded=1", (study,)
        ).fetchone()[0]
    assert sent == 0


def test_node_page_quarantine_and_link_export(pages: Pages) -> None:
    rita, adam = pages.client("rita"), pages.client("adam")
    for path in ("/node", "/links.csv", "/users"):
        assert rita.get(f"{pages.web}{path}", timeout=10).status_code == 403, path
    node_page = adam.get(f"{pages.web}/node", timeout=10).text
    assert "UPLOADER" in node_page and str(pages.ident.scp_port) in node_page
    assert "PACE-C" in node_page and "prostate.yaml" in node_page
    links = adam.get(f"{pages.web}/links.csv", timeout=10)
    assert links.headers["content-type"].startswith("text/csv")
    assert PATIENTS["A"].patient_id in links.text  # forwarded studies link home
    page = rita.get(f"{pages.web}/quarantine", timeout=10)
    assert page.status_code == 200 and "Nothing in quarantine" in page.text
    # a second copy of one of study A's CT instances with other content: a conflict
    ct = next(f for f in sorted((pages.out / "studyA").rglob("*")) if _is_ct(f))
    changed = dcmread(ct)
    changed.SeriesDescription = "changed after sending"
    (pages.out / "conflict").mkdir()
    changed.save_as(pages.out / "conflict" / "ct.dcm")
    assert storescu(pages.ident.scp_port, pages.out / "conflict").returncode == 0
    page = wait_for(
        lambda: (
            (p := rita.get(f"{pages.web}/quarantine", timeout=10)).text.count('class="aside"') and p
        ),
        30,
        "the conflict on the quarantine page",
    )
    assert "a second copy of instance" in page.text and 'class="retry"' not in page.text
    assert 'class="danger delete"' not in page.text  # reviewers do not delete
    row = re.search(r'data-row="(\d+)"', page.text)
    assert row is not None
    csrf = csrf_of(page.text)
    retry = rita.post(f"{pages.web}/quarantine/{row[1]}/retry", data={"csrf": csrf}, timeout=10)
    assert retry.status_code == 409 and "delete it" in retry.text
    refused = rita.post(f"{pages.web}/quarantine/{row[1]}/delete", data={"csrf": csrf}, timeout=10)
    assert refused.status_code == 409 and "only an administrator" in refused.text
    admin_page = adam.get(f"{pages.web}/quarantine", timeout=10).text
    deleted = adam.post(
        f"{pages.web}/quarantine/{row[1]}/delete", data={"csrf": csrf_of(admin_page)}, timeout=10
    )
    assert deleted.status_code == 200 and "Deleted." in deleted.text
    assert f'data-row="{row[1]}"' not in deleted.text
    with sqlite3.connect(f"file:{pages.ident.data / 'node.sqlite'}?mode=ro", uri=True) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit WHERE actor='adam'")]
    assert "link table exported" in actions and "quarantined file deleted" in actions


def _is_ct(path: Path) -> bool:
    if not path.is_file():
        return False
    ds = dcmread(path, stop_before_pixels=True, force=True)
    return str(ds.get("Modality", "")) == "CT"


def _bulk_done(driver: Any, rows: int) -> list[tuple[str, str, str]]:
    from selenium.webdriver.common.by import By

    def finished(d: Any) -> list[tuple[str, str, str]] | None:
        found = [
            (
                r.get_attribute("data-line"),
                r.get_attribute("data-status"),
                r.find_element(By.CLASS_NAME, "arrived").text,
            )
            for r in d.find_elements(By.CSS_SELECTOR, "tr.bulk-row")
        ]
        done = len(found) == rows and all(status != "pending" for _l, status, _a in found)
        return found if done else None

    return list(_wait(driver, finished, "every row of the bulk job finished", timeout=60))


def test_query_form_and_bulk_csv_retrieve_from_the_pacs(pages: Pages) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = pages.driver
    _sign_in(pages, "rita")
    driver.get(f"{pages.web}/qr")
    driver.find_element(By.ID, "qr-patient").send_keys(IN_PACS["D"].patient_id)
    driver.find_element(By.ID, "qr-find").click()
    matches = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr.match"), "C-FIND")
    assert len(matches) == 1 and IN_PACS["D"].accession in matches[0].text
    Select(driver.find_element(By.ID, "qr-trial")).select_by_value("PACE-C")
    driver.find_element(By.ID, "qr-retrieve").click()
    assert _bulk_done(driver, 1) == [("2", "done", "5")]  # CT x2, RTSTRUCT, RTPLAN, RTDOSE

    csv_file = pages.out / "bulk.csv"
    csv_file.write_text(
        "Accession Number,Patient ID,Study Date,Trial\n"
        f"{IN_PACS['E'].accession},,,PACE-C\n"
        "ACC9999,,,PACE-C\n"
    )
    driver.get(f"{pages.web}/bulk")
    driver.find_element(By.ID, "csv-file").send_keys(str(csv_file))  # read into the form
    _wait(
        driver,
        lambda d: "ACC9999" in d.find_element(By.ID, "csv-text").get_attribute("value"),
        "the file read",
    )
    driver.find_element(By.ID, "bulk-start").click()
    assert _bulk_done(driver, 2) == [("2", "done", "5"), ("3", "no match", "0")]
    driver.save_screenshot(str(pages.out / "bulk.png"))
    wanted = {IN_PACS["D"].patient_id, IN_PACS["E"].patient_id}

    def forwarded() -> bool:
        with sqlite3.connect(f"file:{pages.ident.data / 'node.sqlite'}?mode=ro", uri=True) as c:
            rows = c.execute("SELECT patient_id, state FROM studies").fetchall()
        return {pid for pid, state in rows if state == "forwarded"} >= wanted

    wait_for(forwarded, 60, "both retrieved studies forwarded")


def test_a_bulk_csv_of_thousands_of_rows_is_read_whole(pages: Pages) -> None:
    """A real DQR-style CSV of 4,000 rows is far over the 64 KiB of an ordinary form: it is read
    whole (the error names its last line), and one over the bulk form's limit is refused so."""
    s = pages.client("rita")
    good = "".join(f"ACC{n:07d},,20240101-20241231,PACE-C\n" for n in range(4000))
    text = "Accession Number,Patient ID,Study Date,Trial\n" + good + "ACC1,,2024-01-01,PACE-C\n"
    csrf = csrf_of(s.get(f"{pages.web}/bulk", timeout=10).text)
    sent = s.post(f"{pages.web}/bulk", data={"csrf": csrf, "csv": text}, timeout=60)
    assert len(text) > 2 * 64 * 1024
    assert sent.status_code == 409
    assert "the CSV:4002: Study Date must be YYYYMMDD" in sent.text  # the last line, so all read
    huge = "Accession Number\n" + "A" * (9 * 1024 * 1024)
    refused = s.post(f"{pages.web}/bulk", data={"csrf": csrf, "csv": huge}, timeout=60)
    assert refused.status_code == 403 and "the form is too large (at most 8192 KiB)" in refused.text


def test_a_bulk_csv_naming_a_trial_the_node_lacks_is_refused(pages: Pages) -> None:
    s = pages.client("rita")
    text = "Accession Number,Patient ID,Study Date,Trial\nACC1,,,PACE-C\nACC2,,,NOPE-9\n"
    csrf = csrf_of(s.get(f"{pages.web}/bulk", timeout=10).text)
    sent = s.post(f"{pages.web}/bulk", data={"csrf": csrf, "csv": text}, timeout=30)
    assert sent.status_code == 409
    assert "the CSV:3: Trial &#39;NOPE-9&#39; is not one of this node&#39;s" in sent.text
    assert "/bulk/" not in sent.url  # no job was made
