"""Our C-STORE acceptor against real peers: dcmtk storescu/echoscu and pynetdicom as SCUs.

Success is answered only once the store callable returned (the instance durable); failures map
to the status that fits; associations are negotiated, limited, rejected and aborted as PS3.8
says; what arrives is byte for byte the data set that was sent.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    RTStructureSetStorage,
    Verification,
)

from uploader.dicomnet import quiet_pynetdicom
from uploader.dicomnet.scp import (
    Received,
    ScpOptions,
    StoreFn,
    StoreServer,
    start_scp,
)
from uploader.errors import NotDicomError
from uploader.sample import write_study

from .conftest import integration_tool
from .peers import storescu

pytestmark = pytest.mark.integration


@contextmanager
def serving(store: StoreFn, **options: object) -> Iterator[StoreServer]:
    server = start_scp(ScpOptions("UPLOADER", **options), "127.0.0.1", 0, store)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.shutdown()


def _study(tmp_path: Path, slices: int = 2) -> Path:
    study = tmp_path / "study"
    write_study(study, slices=slices, size=64)
    for note in study.rglob("*.txt"):
        note.unlink()
    return study


def _dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [integration_tool(tool), "-v", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_ct_and_rt_study_arrives_byte_for_byte(tmp_path: Path) -> None:
    study = _study(tmp_path, slices=3)
    kept: dict[str, Received] = {}

    def keep(received: Received) -> None:
        kept[dcmread(__import__("io").BytesIO(received.data)).SOPInstanceUID] = received

    with serving(keep) as server:
        sent = storescu(server.server_address[1], study, calling="CTSIM01", called="PACEC")
    assert sent.returncode == 0, sent.stderr
    files = [p for p in study.rglob("*") if p.is_file()]
    assert len(kept) == len(files) == 6  # 3 CT, RTSTRUCT, RTPLAN, RTDOSE (implicit VR)
    for path in files:
        original = dcmread(path)
        received = kept[original.SOPInstanceUID]
        assert (received.calling_aet, received.called_aet) == ("CTSIM01", "PACEC")
        data = received.data
        assert data[128:132] == b"DICM"
        ds = dcmread(__import__("io").BytesIO(data))
        assert ds.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert ds.file_meta.SourceApplicationEntityTitle == "CTSIM01"
        assert ds == original  # every element (storescu sends implicit VR files as explicit)
        if ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID:
            # the data set as sent: every byte after the file meta equals the file's own
            ours = data[132 + 12 + int.from_bytes(data[140:144], "little") :]
            theirs = path.read_bytes()
            start = 132 + 12 + int.from_bytes(theirs[140:144], "little")
            assert ours == theirs[start:], path.name


def test_statuses_out_of_resources_cannot_understand_processing_failure(tmp_path: Path) -> None:
    study = _study(tmp_path)

    def disk_full(_received: Received) -> None:
        raise OSError(28, "No space left on device")

    def not_dicom(_received: Received) -> None:
        raise NotDicomError("no Study or SOP Instance UID")

    def broken(_received: Received) -> None:
        raise RuntimeError("a bug")

    expected = {
        disk_full: "Refused: OutOfResources",
        not_dicom: "Error: CannotUnderstand",
        broken: "Status: 0x110",  # Processing failure (PS3.7 C.4); dcmtk has no name for it
    }
    for store, status in expected.items():
        with serving(store) as server:
            out = _dcmtk(
                "storescu", "-aec", "UPLOADER", "+sd", "+r", "-nh", "127.0.0.1",
                str(server.server_address[1]), str(study),
            )  # fmt: skip
        text = out.stdout + out.stderr
        sent = sum(1 for p in study.rglob("*") if p.is_file())
        assert text.count(status) == sent == 5, (status, text[-2000:])


def test_echo_and_calling_aet_filter(tmp_path: Path) -> None:
    with serving(lambda _r: None, allowed_calling=["CTSIM01"]) as server:
        port = str(server.server_address[1])
        ok = _dcmtk("echoscu", "-aet", "CTSIM01", "-aec", "UPLOADER", "127.0.0.1", port)
        assert ok.returncode == 0, ok.stderr
        assert "Received Echo Response (Success)" in ok.stdout + ok.stderr
        refused = _dcmtk("echoscu", "-aet", "STRANGER", "-aec", "UPLOADER", "127.0.0.1", port)
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr


def test_only_configured_sop_classes_and_transfer_syntaxes_are_accepted(tmp_path: Path) -> None:
    study = _study(tmp_path)
    kept: list[Received] = []
    with serving(kept.append, sop_classes=[CTImageStorage]) as server:
        out = storescu(server.server_address[1], study)
    assert len(kept) == 2  # the CT slices; RT objects had no accepted presentation context
    assert "no presentation context" in (out.stdout + out.stderr).lower()

    quiet_pynetdicom()
    jpeg = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
    assert jpeg is not None
    sc = dcmread(jpeg)
    kept.clear()
    with serving(kept.append) as server:  # every syntax: stored as received, not decompressed
        ae = AE(ae_title="PYNET")
        ae.add_requested_context(sc.SOPClassUID, sc.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="UPLOADER")
        assert assoc.is_established
        assert assoc.send_c_store(sc).Status == 0x0000
        assoc.release()
    stored = dcmread(__import__("io").BytesIO(kept[0].data))
    assert stored.file_meta.TransferSyntaxUID == sc.file_meta.TransferSyntaxUID
    assert stored.PixelData == sc.PixelData

    with serving(kept.append, transfer_syntaxes=["1.2.840.10008.1.2.1"]) as server:
        ae = AE(ae_title="PYNET")
        ae.add_requested_context(sc.SOPClassUID, sc.file_meta.TransferSyntaxUID)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="UPLOADER")
        assert assoc.is_established
        refused = [cx for cx in assoc.rejected_contexts if cx.abstract_syntax == sc.SOPClassUID]
        assert refused and refused[0].result == 0x04  # transfer syntaxes not supported
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()


def test_many_small_pdus_and_fragments_from_pynetdicom(tmp_path: Path) -> None:
    """A peer with a 4 KiB maximum PDU: the data set arrives in hundreds of PDVs; our
    responses respect its limit; several contexts on one association."""
    quiet_pynetdicom()
    study = _study(tmp_path, slices=2)
    kept: list[Received] = []
    with serving(kept.append) as server:
        ae = AE(ae_title="PYNET")
        ae.maximum_pdu_size = 4096
        for uid in (CTImageStorage, RTStructureSetStorage):
            ae.add_requested_context(uid)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="UPLOADER")
        assert assoc.is_established
        sent = [dcmread(p) for p in study.rglob("*") if p.is_file()]
        statuses = [
            assoc.send_c_store(ds).Status
            for ds in sent
            if ds.SOPClassUID in (CTImageStorage, RTStructureSetStorage)
        ]
        assert statuses == [0x0000, 0x0000, 0x0000]
        assoc.release()
        assert assoc.is_released
    assert len(kept) == 3
    for received in kept:
        ds = dcmread(__import__("io").BytesIO(received.data))
        original = next(s for s in sent if s.SOPInstanceUID == ds.SOPInstanceUID)
        assert ds.get("PixelData") == original.get("PixelData")
        assert ds.PatientID == original.PatientID


def test_association_limit_rejects_then_admits(tmp_path: Path) -> None:
    quiet_pynetdicom()
    with serving(lambda _r: None, max_associations=1) as server:
        port = server.server_address[1]
        ae = AE(ae_title="PYNET")
        ae.add_requested_context(Verification)
        held = ae.associate("127.0.0.1", port, ae_title="UPLOADER")
        assert held.is_established
        second = _dcmtk("echoscu", "-aec", "UPLOADER", "127.0.0.1", str(port))
        assert second.returncode != 0
        assert "Local Limit Exceeded" in second.stdout + second.stderr
        held.release()
        time.sleep(0.2)
        third = _dcmtk("echoscu", "-aec", "UPLOADER", "127.0.0.1", str(port))
        assert third.returncode == 0, third.stderr


def _pdu_type_after(port: int, payload: bytes) -> int | None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        try:
            head = sock.recv(6)
        except TimeoutError:
            return None
        return head[0] if head else None


def test_accepted_connections_have_nagle_off() -> None:
    """TCP_NODELAY on every accepted socket: without it each C-STORE response waits ~44 ms."""
    with serving(lambda _r: None) as server, socket.create_connection(server.server_address):
        deadline = time.monotonic() + 5
        while not server._connections and time.monotonic() < deadline:
            time.sleep(0.01)
        socks = [assoc.sock for assoc in server._connections]
        assert socks
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in socks)


def test_garbage_silence_and_a_huge_pdu_are_aborted_and_the_server_goes_on(
    tmp_path: Path,
) -> None:
    with serving(lambda _r: None, timeout_s=0.5) as server:
        port = server.server_address[1]
        assert _pdu_type_after(port, b"GET / HTTP/1.1\r\n\r\n") == 0x07  # A-ABORT
        assert _pdu_type_after(port, b"\x01\x00\xff\xff\xff\xff") == 0x07  # 4 GiB request
        start = time.monotonic()
        assert _pdu_type_after(port, b"") == 0x07  # silence: aborted after the timeout
        assert time.monotonic() - start < 4
        ok = _dcmtk("echoscu", "-aec", "UPLOADER", "127.0.0.1", str(port))
        assert ok.returncode == 0, ok.stderr


def test_shutdown_ends_open_associations(tmp_path: Path) -> None:
    quiet_pynetdicom()
    server = start_scp(ScpOptions("UPLOADER"), "127.0.0.1", 0, lambda _r: None)
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="UPLOADER")
    assert assoc.is_established
    start = time.monotonic()
    server.shutdown()
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=1).close()


def test_an_instance_over_the_size_limit_aborts_its_association(tmp_path: Path) -> None:
    quiet_pynetdicom()
    study = _study(tmp_path, slices=1)  # a 64x64 CT slice: about 9 KiB
    ct = next(dcmread(p) for p in study.rglob("*") if p.is_file() and dcmread(p).Modality == "CT")
    kept: list[Received] = []
    with serving(kept.append, max_instance_bytes=4096) as server:
        ae = AE(ae_title="PYNET")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="UPLOADER")
        assert assoc.is_established
        status = assoc.send_c_store(ct)
        assert not status  # no response: the association was aborted
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established
    assert kept == []


def _associate_rq(user: bytes | None = None, called: str = "UPLOADER") -> bytes:
    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BxH", kind, len(body)) + body

    context = item(
        0x20,
        bytes([1, 0, 0, 0])
        + item(0x30, CTImageStorage.encode())
        + item(0x40, b"1.2.840.10008.1.2.1"),
    )
    if user is None:
        user = item(0x51, struct.pack(">I", 16384))
    body = (
        struct.pack(">HH", 1, 0)
        + called.ljust(16).encode()
        + b"RAW".ljust(16)
        + bytes(32)
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + context
        + item(0x50, user)
    )
    return struct.pack(">BxI", 1, len(body)) + body


def _reply(sock: socket.socket) -> int:
    head = sock.recv(6)
    return head[0] if head else 0


def test_malformed_requests_get_an_abort_and_silent_crowds_are_capped(tmp_path: Path) -> None:
    import threading

    with serving(lambda _r: None, max_associations=2, timeout_s=2) as server:
        port = server.server_address[1]
        truncated_max_length = b"\x51\x00\x00\x04\x00\x40"  # says 4 bytes, holds 2
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_associate_rq(truncated_max_length))
            assert _reply(sock) == 0x07
        tiny_pdu = b"\x51\x00\x00\x04" + struct.pack(">I", 6)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_associate_rq(tiny_pdu))
            assert _reply(sock) == 0x07
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_associate_rq())
            assert _reply(sock) == 0x02  # accepted
            sock.recv(65536)
            command = b"".join(
                struct.pack("<HHI", 0, e, len(v)) + v
                for e, v in [
                    (0x0002, CTImageStorage.encode()),
                    (0x0100, struct.pack("<H", 1)),
                    (0x0110, struct.pack("<H", 1)),
                    (0x0800, struct.pack("<H", 0)),
                    (0x1000, "1.2.3.ü".encode()),  # not a UID
                ]
            )
            pdv = struct.pack(">IBB", len(command) + 2, 1, 0x03) + command
            sock.sendall(struct.pack(">BxI", 4, len(pdv)) + pdv)
            assert _reply(sock) == 0x07
        before = threading.active_count()
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        time.sleep(0.5)
        assert threading.active_count() - before <= 4  # twice max_associations at most
        for sock in silent:
            sock.close()
        time.sleep(0.5)
        ok = _dcmtk("echoscu", "-aec", "UPLOADER", "127.0.0.1", str(port))
        assert ok.returncode == 0, ok.stderr  # still serving


def test_a_slow_sender_is_served_and_a_trickle_is_not(tmp_path: Path) -> None:
    kept: list[Received] = []
    study = _study(tmp_path, slices=1)  # a 64x64 CT slice: about 9 KiB
    ct = next(dcmread(p) for p in study.rglob("*") if p.is_file() and dcmread(p).Modality == "CT")
    from io import BytesIO

    buf = BytesIO()
    ct.save_as(buf, enforce_file_format=True)
    data_set = buf.getvalue()[132 + 12 + int.from_bytes(buf.getvalue()[140:144], "little") :]
    command = b"".join(
        struct.pack("<HHI", 0, e, len(v)) + v
        for e, v in [
            (0x0002, CTImageStorage.encode()),
            (0x0100, struct.pack("<H", 1)),
            (0x0110, struct.pack("<H", 7)),
            (0x0800, struct.pack("<H", 0)),
            (0x1000, str(ct.SOPInstanceUID).encode() + b"\0" * (len(ct.SOPInstanceUID) % 2)),
        ]
    )
    with serving(kept.append, timeout_s=1.0) as server:
        port = server.server_address[1]
        for pause, bytes_per_step, served in ((0.25, 2048, True), (0.5, 16, False)):
            before = len(kept)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(_associate_rq())
                assert _reply(sock) == 0x02
                sock.recv(65536)
                pdv = struct.pack(">IBB", len(command) + 2, 1, 0x03) + command
                sock.sendall(struct.pack(">BxI", 4, len(pdv)) + pdv)
                pdv = struct.pack(">IBB", len(data_set) + 2, 1, 0x02) + data_set
                pdu = struct.pack(">BxI", 4, len(pdv)) + pdv
                # the slow one: ~8 KiB/s, over a second in all; the trickle: 32 B/s for 3 s
                deadline = time.monotonic() + (30.0 if served else 3.0)
                sent = 0
                try:
                    while sent < len(pdu) and time.monotonic() < deadline:
                        sock.sendall(pdu[sent : sent + bytes_per_step])
                        sent += bytes_per_step
                        time.sleep(pause)
                    if sent >= len(pdu):
                        assert _reply(sock) == 0x04  # the C-STORE response
                    else:
                        assert _reply(sock) == 0x07  # A-ABORT: too slow
                except (BrokenPipeError, ConnectionResetError):
                    assert not served
            assert len(kept) - before == (1 if served else 0)
