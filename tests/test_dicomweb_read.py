"""Read-only DICOMweb on the staff pages' port, behind the sign-in: a real DICOMweb client
(dicomweb-client) searches the review queue and reads a study back as it was stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicomweb_client import DICOMwebClient
from pydicom import dcmread

from .test_anonymised_node import _deidentified, _send
from .webnode import web_node

pytestmark = pytest.mark.integration


def test_a_dicomweb_client_reads_a_study_back_as_stored(tmp_path: Path, key_file: Path) -> None:
    files = _deidentified(tmp_path, key_file, slices=3)
    stored = {str(dcmread(f).SOPInstanceUID): f for f in files}
    target = {"type": "directory", "path": str(tmp_path / "out")}
    with web_node(tmp_path / "anon", target) as n:
        _send(n.anon, files)
        n.anon.wait_state("ready")
        anonymous = n.client()
        assert anonymous.get(f"{n.web}/dicom-web/studies", timeout=10).status_code == 401
        client = DICOMwebClient(f"{n.web}/dicom-web", session=n.sign_in("rita"))
        (study,) = client.search_for_studies()
        uid = study["0020000D"]["Value"][0]
        assert set(study["00080061"]["Value"]) == {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"}
        assert study["00201208"]["Value"] == [len(files)]
        assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []
        series = client.search_for_series(uid)
        assert sorted(s["00080060"]["Value"][0] for s in series) == [
            "CT",
            "RTDOSE",
            "RTPLAN",
            "RTSTRUCT",
        ]
        instances = client.search_for_instances(uid)
        assert {i["00080018"]["Value"][0] for i in instances} == set(stored)
        back = client.retrieve_study(uid)
        assert len(back) == len(files)
        for ds in back:
            original = dcmread(stored[str(ds.SOPInstanceUID)])
            assert ds == original  # every element, pixel data included
            assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        ct = next(i for i in instances if i["00080016"]["Value"][0] == "1.2.840.10008.5.1.4.1.1.2")
        ct_series, ct_sop = ct["0020000E"]["Value"][0], ct["00080018"]["Value"][0]
        (frame,) = client.retrieve_instance_frames(uid, ct_series, ct_sop, frame_numbers=[1])
        assert frame == dcmread(stored[ct_sop]).PixelData
        meta = client.retrieve_instance_metadata(uid, ct_series, ct_sop)
        assert meta["00080018"]["Value"] == [ct_sop] and "7FE00010" not in meta
        raw = n.sign_in("adam").get(
            f"{n.web}/dicom-web/studies/{uid}/series/{ct_series}/instances/{ct_sop}", timeout=10
        )
        assert stored[ct_sop].read_bytes() in raw.content  # the stored file, byte for byte
