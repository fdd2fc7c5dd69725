"""The staff pages against what an attacker (or a careless script) tries: open redirects after
sign-in, paths out of the static folder, another session's CSRF token, oversized forms, the
intake token used as a key to the pages, ids that are not ids, a reviewer reaching admin pages;
and an instance the second check refused is shown as refused, with why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from markupsafe import escape
from pydicom import dcmread

from uploader.sample import write_study

from .test_anonymised_node import _deidentified, _stow
from .webnode import csrf_of, web_node

pytestmark = pytest.mark.integration


def test_hostile_requests_to_the_pages_are_refused(tmp_path: Path, key_file: Path) -> None:
    files = _deidentified(tmp_path, key_file, slices=2)
    raw = next(f for f in write_study(tmp_path / "raw", slices=1) if f.suffix != ".txt")
    with web_node(tmp_path / "anon", {"type": "directory", "path": str(tmp_path / "out")}) as n:
        assert _stow(n.anon.url, n.ca, n.anon.token, files).status_code == 200
        assert _stow(n.anon.url, n.ca, n.anon.token, [raw]).status_code == 409  # identifiable
        refused_uid = str(dcmread(raw).SOPInstanceUID)
        uids = [f.stem for f in files] + [refused_uid]
        manifest = {"instances": len(uids), "sop_instance_uids": uids}
        auth = {"Authorization": f"Bearer {n.anon.token}"}
        r = requests.post(
            f"{n.anon.url}/manifests", json=manifest, headers=auth, verify=str(n.ca), timeout=10
        )
        assert r.ok, r.text

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

        # the refused instance: its study says so, with why
        queue = s.get(f"{n.web}/", timeout=10).text
        assert "1 instance(s) refused" in queue
        study = s.get(f"{n.web}/studies/1", timeout=10).text
        (refusal,) = n.anon.status()["refusals"]
        why = json.loads(refusal["problems"])
        assert why and str(escape("; ".join(why))) in study  # every problem, as text
        # a refusal no manifest names is listed on its own, with why
        other = next(f for f in write_study(tmp_path / "raw2", slices=1) if f.suffix != ".txt")
        from pydicom.uid import generate_uid

        ds = dcmread(other)
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(other)
        assert _stow(n.anon.url, n.ca, n.anon.token, [other]).status_code == 409
        alone = s.get(f"{n.web}/", timeout=10).text
        assert "Refused at intake" in alone
        problems = json.loads(n.anon.status()["refusals"][-1]["problems"])
        assert all(str(escape(p)) in alone for p in problems)
