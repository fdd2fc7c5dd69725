"""The real node's C-STORE port under fuzzed instances sent raw beside a valid study: bit flips,
truncations, absurd lengths, wrong VRs, sequences nested 40 and 3000 deep, a mangled Study UID,
the same SOP Instance UID again with other bytes and with the same bytes. The valid study arrives
whole; every fuzzed instance the node acknowledged ends in the output or in quarantine with a
reason (staff approving what went to review); no study is left in a work state; C-ECHO is
answered throughout."""

from __future__ import annotations

import random
import struct
import threading
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from uploader.sample import write_study
from uploader.store.spool import name_for

from .conftest import run_cli
from .peers import node, node_config, orthanc, storescu, wait_for

pytestmark = pytest.mark.integration

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
WORK_STATES = ("receiving", "complete", "validated", "pseudonymised")


def _explicit(ds_bytes_from: Path, study_uid: str) -> tuple[bytes, int, str]:
    """A CT slice re-encoded explicit VR little endian with its own SOP UID, in the fuzz study;
    returns (file bytes, offset of the data set, SOP UID)."""
    ds = dcmread(ds_bytes_from)
    sop = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    del ds.PixelData  # smaller, and room at the end for planted elements
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    meta_len = struct.unpack_from("<I", data, 132 + 8)[0]
    return data, 132 + 12 + meta_len, sop


def _nested(depth: int, *, defined: bool) -> bytes:
    """A private SQ element (7FDF,1010) nested ``depth`` deep."""
    inner = b""
    for _ in range(depth):
        if defined:
            item = b"\xfe\xff\x00\xe0" + struct.pack("<I", len(inner)) + inner
            inner = b"\xdf\x7f\x10\x10SQ\x00\x00" + struct.pack("<I", len(item)) + item
        else:
            item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + inner + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
            inner = (
                b"\xdf\x7f\x10\x10SQ\x00\x00\xff\xff\xff\xff"
                + item
                + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
            )
    return inner


def _fuzzed(ct: list[Path], folder: Path) -> list[tuple[str, Path]]:
    """Write the hostile files; return (case, path)."""
    rng = random.Random(12)
    study_uid = generate_uid()
    cases: list[tuple[str, bytes]] = []
    for i in range(6):
        data, start, _ = _explicit(ct[i % len(ct)], study_uid)
        raw = bytearray(data)
        for _ in range(1 + i * 3):
            pos = rng.randrange(start, len(raw))
            raw[pos] ^= 1 << rng.randrange(8)
        cases.append((f"bitflip{i}", bytes(raw)))
    for i, cut in enumerate((0.3, 0.6, 0.95)):
        data, start, _ = _explicit(ct[0], study_uid)
        cases.append((f"truncated{i}", data[: start + int((len(data) - start) * cut)]))
    data, start, _ = _explicit(ct[1], study_uid)
    name_at = data.index(b"\x10\x00\x10\x00PN", start)  # PatientName: length 0xFFF0
    cases.append(("absurd-length", data[: name_at + 6] + b"\xf0\xff" + data[name_at + 8 :]))
    data, start, _ = _explicit(ct[2], study_uid)
    cases.append(("wrong-vr", data[: name_at + 4] + b"SQ" + data[name_at + 6 :]))
    data, start, _ = _explicit(ct[2], study_uid)
    thick = data.index(b"\x18\x00\x50\x00DS", start)  # SliceThickness as US: 2 bytes, not text
    cases.append(("wrong-vr-number", data[: thick + 4] + b"US" + data[thick + 6 :]))
    for depth, defined in ((40, True), (3000, False)):
        data, start, _ = _explicit(ct[3], study_uid)
        cases.append((f"nested{depth}", data + _nested(depth, defined=defined)))
    data, start, _ = _explicit(ct[0], study_uid)
    uid_at = data.index(study_uid.encode(), start)
    cases.append(("mangled-study-uid", data[:uid_at] + b"\x00\xff" + data[uid_at + 2 :]))
    data, start, _ = _explicit(ct[1], study_uid)
    cases.append(("original", data))
    changed = data.replace(b"HFS", b"FFS") if b"HFS" in data else data[:-2] + b"\x00\x00"
    cases.append(("same-sop-other-bytes", changed))
    cases.append(("same-sop-same-bytes", data))
    paths = []
    folder.mkdir(parents=True)
    for n, (case, raw) in enumerate(cases):
        path = folder / f"{n:02d}-{case}.dcm"
        path.write_bytes(raw)
        paths.append((case, path))
    return paths


def _echo(port: int) -> bool:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="UPLOADER")
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0
    finally:
        assoc.release()


def _send_raw(port: int, files: list[tuple[str, Path]]) -> dict[str, int | None]:
    """C-STORE each file as it is on disk (pynetdicom sends the bytes after the file meta
    without decoding them); a fresh association per file, as a careless modality would."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    statuses: dict[str, int | None] = {}
    for case, path in files:
        ae = AE(ae_title="FUZZER")
        ae.add_requested_context(CT_STORAGE, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="UPLOADER")
        assert assoc.is_established, f"association refused after {case}"
        try:
            status = assoc.send_c_store(path)
            statuses[case] = int(status.Status) if status else None
        except Exception:  # our sender may choke on its own garbage: then nothing was stored
            statuses[case] = None
        finally:
            assoc.release()
    return statuses


def test_fuzzed_instances_beside_a_valid_study(tmp_path: Path) -> None:
    valid = tmp_path / "valid"
    write_study(valid, slices=4, rois=["Prostate", "Rectum", "Bladder", "PTV_1"])
    next(valid.rglob("README.txt")).unlink()
    ct = sorted(p for p in (tmp_path / "valid").rglob("IM*"))
    fuzz = _fuzzed(ct, tmp_path / "fuzz")
    with orthanc(tmp_path / "orthanc") as pacs:
        config = node_config(tmp_path / "node", pacs.https, pacs.ca)
        with node(config) as n:
            echoes: list[bool] = []
            stop = threading.Event()

            def echo_throughout() -> None:
                while not stop.is_set():
                    echoes.append(_echo(n.scp_port))
                    stop.wait(0.3)

            echo = threading.Thread(target=echo_throughout, daemon=True)
            echo.start()
            statuses = _send_raw(n.scp_port, fuzz[: len(fuzz) // 2])
            sent = storescu(n.scp_port, valid)
            assert sent.returncode == 0, sent.stderr
            statuses |= _send_raw(n.scp_port, fuzz[len(fuzz) // 2 :])
            acked = {case for case, s in statuses.items() if s == 0}
            assert "original" in acked and "same-sop-same-bytes" in acked
            _settle(n, config)
            stop.set()
            echo.join(5)
            assert len(echoes) > 10 and all(echoes), "C-ECHO went unanswered"
            # the valid study whole, and only pseudonymised data in the repository
            tags = [pacs.tags(i) for i in pacs.instances()]
            valid_uid = dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID
            db = n.data / "node.sqlite"
            _check_every_acknowledged_instance(db, acked, valid_uid, tags)


def _settle(n: object, config: Path) -> None:
    """Wait until no study is in a work state, approving (with override) what went to review,
    as staff would, until each fuzzed instance is in the output or in quarantine."""
    approved: dict[int, int] = {}

    def settled() -> bool:
        status = n.status()  # type: ignore[attr-defined]
        if any(status["counts"][s] for s in WORK_STATES):
            return False
        waiting = [a for a in status["attention"] if a["state"] == "needs_review"]
        for a in waiting:
            assert a["reason"], "a study waits for staff without a reason"
            if approved.get(a["study"], 0) < 3:
                approved[a["study"]] = approved.get(a["study"], 0) + 1
                run_cli("review", "approve", str(a["study"]), "--override", "--config", config)
                return False
        return True

    wait_for(settled, 180, "every study to settle", interval=1.0)


def _check_every_acknowledged_instance(
    db: Path, acked: set[str], valid_uid: str, tags: list[dict[str, object]]
) -> None:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        studies = {r["id"]: r for r in conn.execute("SELECT * FROM studies")}
        instances = list(conn.execute("SELECT * FROM instances"))
        aside = list(conn.execute("SELECT * FROM set_aside"))
    valid = next(s for s in studies.values() if s["study_uid"] == valid_uid)
    assert valid["state"] == "forwarded"
    valid_instances = [i for i in instances if i["study_id"] == valid["id"]]
    assert len(valid_instances) == 7 and all(i["forwarded"] for i in valid_instances)
    assert all(str(t.get("PatientID", "")).startswith("PACE-C-RXH-") for t in tags)
    for s in studies.values():
        assert s["state"] not in WORK_STATES
        assert s["state"] == "forwarded" or s["reason"], f"study {s['id']} without a reason"
    fuzzed = [i for i in instances if i["study_id"] != valid["id"]]
    out = [i for i in fuzzed if i["out_path"] is not None and (i["forwarded"] or not i["out_path"])]
    quarantined = [r for r in aside if r["kind"] == "quarantined"]
    conflicts = [r for r in aside if r["kind"] == "conflict"]
    assert all(r["reason"] and Path(r["path"]).exists() for r in aside)
    assert all(Path(r["path"] + ".reason.txt").exists() for r in aside)
    assert len(conflicts) == 1 and "other content" in conflicts[0]["reason"]
    # every acknowledged fuzzed instance, counted once (the same bytes again are one instance)
    assert len(out) + len(quarantined) == len(fuzzed) + len(quarantined) == len(acked) - 2
    nested = [r for r in quarantined if "nested" in r["reason"]]
    assert nested, "the deeply nested instance was not quarantined with its reason"
    names = {Path(r["path"]).name for r in quarantined}
    assert not names & {name_for(i["sop_uid"]) for i in instances}  # out of the study
