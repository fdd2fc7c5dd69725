"""The staff pages against what an attacker (or a careless script) tries: open redirects after
sign-in, paths out of the static folder, another session's CSRF token, oversized forms, the
intake token used as a key to the pages, ids that are not ids, a reviewer reaching admin pages;
and an instance the second check refused is shown as refused, with why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from markupsafe import escape
from pydicom import dcmread

from uploader.sample import write_study

from .intake_client import manifest_for, post_manifest, stow
from .test_anonymised_node import _deidentified
from .webnode import csrf_of, web_node

pytestmark = pytest.mark.integration


def test_hostile_requests_to_the_pages_are_refused(tmp_path: Path, key_file: Path) -> None:
    files = _deidentified(tmp_path, key_file, slices=2)
    planted = next(f for f in files if dcmread(f).Modality == "CT")
    raw = next(f for f in write_study(tmp_path / "raw", slices=1) if f.suffix != ".txt")
    with web_node(tmp_path / "anon", {"type": "directory", "path": str(tmp_path / "out")}) as n:
        assert post_manifest(n.anon, manifest_for(files)).ok
        good = [f for f in files if f != planted]
        assert stow(n.anon, good).status_code == 200
        ds = dcmread(planted)  # one instance with the patient's phone number left in it
        ds.ImageComments = "call 01483 555123 before the scan"
        ds.save_as(planted)
        assert stow(n.anon, [planted]).status_code == 409
        assert stow(n.anon, [raw]).status_code == 409  # identifiable, in no manifest

        # an open redirect after sign-in: only paths on this site are followed
        s = n.client()
        page = s.get(f"{n.web}/signin", params={"next": "//evil.example/x"}, timeout=10)
        form = {"csrf": csrf_of(page.text), "name": "rita", "password": "reviewer-password-1",
                "next": "//evil.example/x"}  # fmt: skip
        signed = s.post(f"{n.web}/signin", data=form, timeout=30, allow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        # out of the static folder, or a dot file
        for path in ("/static/..%2Fsite.py", "/static/%2e%2e%2faccounts.py", "/static/.x"):
            assert s.get(n.web + path, timeout=10).status_code == 404
        # the intake's bearer token opens no page and no DICOMweb
        bearer = n.client()
        bearer.headers["Authorization"] = f"Bearer {n.anon.token}"
        assert bearer.get(f"{n.web}/", timeout=10, allow_redirects=False).status_code == 303
        assert bearer.get(f"{n.web}/dicom-web/studies", timeout=10).status_code == 401
        # another session's CSRF token does not do
        adam = n.sign_in("adam")
        theirs = csrf_of(adam.get(f"{n.web}/", timeout=10).text)
        url = f"{n.web}/studies/1/decide"
        assert s.post(url, data={"decision": "reject", "reason": "x", "csrf": theirs},
                      timeout=10).status_code == 403  # fmt: skip
        # an oversized form is refused before the handler sees it (and read no further)
        mine = csrf_of(s.get(f"{n.web}/studies/1", timeout=10).text)
        huge = {"decision": "reject", "csrf": mine, "reason": "x" * 70_000}
        assert s.post(url, data=huge, timeout=10).status_code == 403
        # ids that are not ids; a reviewer at the admin pages
        for path in ("/studies/abc", "/studies/99", "/studies/1/instances/1.2.3/header",
                     "/studies/1/series/1.2.3/viewer"):  # fmt: skip
            assert s.get(n.web + path, timeout=10).status_code == 404
        assert s.get(f"{n.web}/audit.csv", timeout=10).status_code == 403
        assert n.anon.status()["counts"]["rejected"] == 0

        # the refused instance: its study says so, with why; the other is listed on its own
        refusals = n.anon.status()["refusals"]
        assert len(refusals) == 2
        queue = s.get(f"{n.web}/", timeout=10).text
        assert "1 instance(s) refused" in queue and "Refused at intake" in queue
        study = s.get(f"{n.web}/studies/1", timeout=10).text
        why = json.loads(refusals[0]["problems"])
        assert why and str(escape("; ".join(why))) in study  # every problem, as text
        assert "01483 555123" not in study + queue  # the refusal names the kind, not the value
        alone = json.loads(refusals[1]["problems"])
        assert all(str(escape(p)) in queue for p in alone)
