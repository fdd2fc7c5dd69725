"""The ingest journal: what was acknowledged survives a crash or a power cut, what was torn is
never taken for an instance, space is reused, and a full journal falls back to durable files."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import pytest

from identifiable_node.ingest import Ingestor
from identifiable_node.journal_writer import JournalWriter
from identifiable_node.store import Store
from uploader.sample import write_study
from uploader.store.journal import Journal, JournalBusyError
from uploader.store.spool import Spool

MiB = 1 << 20


def _instances(tmp_path: Path, slices: int = 4) -> list[bytes]:
    write_study(tmp_path / "study", slices=slices, size=128)
    return [
        p.read_bytes()
        for p in sorted((tmp_path / "study").rglob("*"))
        if p.is_file() and p.suffix != ".txt"
    ]


def test_records_survive_until_checkpointed_and_torn_ones_are_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", 4 * MiB)
    records = [
        journal.append({"path": f"p{i}"}, [b"A" * 5000, bytes([i]) * 3000]) for i in range(3)
    ]
    assert all(r is not None for r in records)
    journal.close()  # a crash: nothing checkpointed

    journal = Journal(tmp_path / "j", 4 * MiB)
    found = list(journal.recover())
    assert [m["path"] for m, _ in found] == ["p0", "p1", "p2"]
    assert found[1][1] == b"A" * 5000 + bytes([1]) * 3000
    journal.checkpoint(journal.last_seq)
    journal.close()

    journal = Journal(tmp_path / "j", 4 * MiB)
    assert list(journal.recover()) == []  # checkpointed: nothing to do
    record = journal.append({"path": "late"}, [b"B" * 9000])
    assert record is not None and record.seq == 4  # numbers are never reused
    journal.close()
    with (tmp_path / "j" / "ring").open("r+b") as ring:  # tear it: a byte never reached the disk
        ring.seek(record.offset + 4000)
        ring.write(b"X")
    journal = Journal(tmp_path / "j", 4 * MiB)
    assert list(journal.recover()) == []


def test_a_clean_stop_skips_the_scan_but_the_next_crash_is_recovered(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", 2 * MiB)
    record = journal.append({"path": "a"}, [b"a" * 100])
    assert record is not None
    assert not journal.checkpoint(journal.last_seq, clean=True)  # its spool file is not written
    record.written = True
    assert journal.checkpoint(journal.last_seq, clean=True)
    assert journal.append({"path": "late"}, [b"x"]) is None  # closed: the slow way from now
    journal.close()
    assert json.loads((tmp_path / "j" / "checkpoint.json").read_text())["clean"] is True
    journal = Journal(tmp_path / "j", 2 * MiB)  # opening marks it unclean again at once
    assert json.loads((tmp_path / "j" / "checkpoint.json").read_text())["clean"] is False
    assert list(journal.recover()) == []
    journal.append({"path": "b"}, [b"b" * 100])
    journal.close()
    journal = Journal(tmp_path / "j", 2 * MiB)
    assert [m["path"] for m, _ in journal.recover()] == ["b"]


def test_space_is_reused_after_checkpoints_and_a_full_ring_says_so(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", 1 * MiB)
    payload = [b"x" * (300 * 1024)]
    first = [journal.append({"path": str(i)}, payload) for i in range(3)]
    assert all(first)
    assert journal.append({"path": "3"}, payload) is None  # full
    for record in first[:2]:
        assert record is not None
        record.written = True
    journal.checkpoint(journal.checkpointable())
    again = journal.append({"path": "4"}, payload)
    assert again is not None and again.offset == 0  # wrapped into the freed space
    assert journal.append({"path": "5"}, [b"y" * (2 * MiB)]) is None  # bigger than the ring


def test_one_process_owns_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", 1 * MiB)
    with pytest.raises(JournalBusyError):
        Journal(tmp_path / "j", 1 * MiB)
    journal.close()
    Journal(tmp_path / "j", 1 * MiB).close()


def _stalled_writer() -> threading.Thread:
    """A thread standing in for the spool writer, alive but doing nothing (ends with the test
    process)."""
    thread = threading.Thread(target=threading.Event().wait, daemon=True)
    thread.start()
    return thread


def _writer(ingestor: Ingestor) -> JournalWriter:
    assert ingestor.writer is not None
    return ingestor.writer


def _ingestor(root: Path, size: int) -> Ingestor:
    return Ingestor(
        Store(root / "node.sqlite"),
        Spool(root),
        Journal(root / "journal", size),
        write_delay_s=0.05,
    )


def test_acknowledged_instances_survive_a_power_cut_before_their_spool_files(
    tmp_path: Path,
) -> None:
    data = _instances(tmp_path)
    root = tmp_path / "node"
    ingestor = _ingestor(root, 16 * MiB)
    _writer(ingestor).thread = _stalled_writer()  # a writer that never writes: the node dies after
    # acknowledging, before any spool file is written
    for d in data:
        assert ingestor.take_bytes([d[:1000], d[1000:]], source="scp:X", protocol="PACE-C")
    assert not list(ingestor.spool.files())  # journaled only
    assert ingestor.busy(ingestor.store.query("SELECT study_uid FROM studies")[0][0])
    assert ingestor.journal is not None
    ingestor.journal.close()
    for row in ingestor.store.query("SELECT path FROM instances"):  # the power cut
        Path(row[0]).unlink(missing_ok=True)

    again = _ingestor(root, 16 * MiB)
    assert again.recover() == len(data)
    files = {p.read_bytes() for p in again.spool.files()}
    assert files == set(data)
    rows = again.store.query("SELECT COUNT(*) FROM instances")[0][0]
    assert rows == len(data)
    study = again.store.query("SELECT protocol, source FROM studies")[0]
    assert tuple(study) == ("PACE-C", "scp:X")


def test_the_writer_writes_spool_files_and_checkpoints_and_a_full_journal_falls_back(
    tmp_path: Path,
) -> None:
    data = _instances(tmp_path, slices=6)
    root = tmp_path / "node"
    ingestor = _ingestor(root, 200 * 1024)  # room for a few 32 KiB instances only
    _writer(ingestor).thread = _stalled_writer()  # the writer has no turn yet
    for d in data:
        ingestor.take_bytes(d, source="scp:X", protocol=None)
    _writer(ingestor).thread = None
    ingestor.start()
    ingestor.stop()
    assert {p.read_bytes() for p in ingestor.spool.files()} == set(data)
    assert ingestor.journal is not None
    assert 0 < ingestor.journal.last_seq < len(data)  # some journaled, the rest the slow way
    assert ingestor.journal.used() == 0
    checkpoint = json.loads((root / "journal" / "checkpoint.json").read_text())
    assert checkpoint["clean"] is True
    ingestor.journal.close()
    assert not any(p.name.startswith(".partial-") for p in (root / "spool").rglob("*"))
    assert os.stat(root / "journal" / "ring").st_size == 200 * 1024 // 4096 * 4096


def test_a_record_planted_inside_an_instance_is_not_believed(tmp_path: Path) -> None:
    """A sender could put bytes shaped like a journal record, page-aligned, into pixel data:
    without the ring's own random identity they are never taken for a record."""
    import struct
    import zlib

    journal = Journal(tmp_path / "j", 1 * MiB)
    fake_meta = json.dumps({"path": "spool/aa/victim.dcm"}).encode()
    payload = b"FORGED"
    for ring_id in (bytes(16), os.urandom(16)):
        head = struct.pack(
            "<8s16sQQII",
            b"UPLJRNL1",
            ring_id,
            2**64 - 1,
            len(payload),
            len(fake_meta),
            zlib.crc32(fake_meta, zlib.crc32(payload)),
        )
        forged = head + struct.pack("<I", zlib.crc32(head)) + payload + fake_meta
        # the instance's bytes start 52 bytes into the record: pad so the fake lands on a page
        carrier = b"\0" * (4096 - 52) + forged
        assert journal.append({"path": "x"}, [carrier]) is not None
    journal.close()
    journal = Journal(tmp_path / "j", 1 * MiB)
    found = list(journal.recover())
    assert [m["path"] for m, _ in found] == ["x", "x"]  # only the real records
    assert journal.last_seq == 2  # and no sequence number was adopted from the fakes
    record = journal.append({"path": "y"}, [b"ok"])
    assert record is not None and record.seq == 3


def test_a_failed_fdatasync_retires_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uploader.store.journal as journal_module

    journal = Journal(tmp_path / "j", 1 * MiB)
    first = journal.append({"path": "a"}, [b"a"])
    assert first is not None
    first.written = True

    def failing(_fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module.os, "fdatasync", failing)
    with pytest.raises(OSError):
        journal.append({"path": "b"}, [b"b"])
    monkeypatch.undo()
    assert journal.append({"path": "c"}, [b"c"]) is None  # retired: store the slow way
    assert journal.checkpointable() == 2  # the failed record does not hold checkpoints back


def test_a_spool_disk_failure_neither_loses_nor_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import identifiable_node.journal_writer as writer_module

    data = _instances(tmp_path, slices=2)
    root = tmp_path / "node"
    ingestor = _ingestor(root, 16 * MiB)

    attempts: list[Path] = []

    def full(target: Path, _data: object) -> None:
        attempts.append(target)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_module, "quick_write", full)
    ingestor.start()
    for d in data:
        assert ingestor.take_bytes(d, source="scp:X", protocol=None)  # durable in the journal
    import time

    status = root / "journal" / "status.json"  # for `uploader status`, at most once a second
    deadline = time.monotonic() + 5
    state: dict[str, object] = {}
    while time.monotonic() < deadline and state.get("failing_spool_writes") != len(data):
        time.sleep(0.1)
        state = json.loads(status.read_text()) if status.exists() else {}
    assert state["failing_spool_writes"] == state["waiting_for_spool_files"] == len(data)
    from identifiable_node.admin import _journal_problems

    assert "cannot be written to the spool" in _journal_problems(state)[0]
    start = time.monotonic()
    ingestor.stop()
    assert time.monotonic() - start < 5  # no endless retry at stop
    assert len(attempts) <= 3 * len(data)  # retried with a back-off, not at every wake-up
    assert ingestor.journal is not None
    ingestor.journal.close()
    assert not list(ingestor.spool.files())
    monkeypatch.undo()
    again = _ingestor(root, 16 * MiB)  # the next start writes them out
    assert again.recover() == len(data)
    assert {p.read_bytes() for p in again.spool.files()} == set(data)


def test_appends_after_stop_take_the_slow_way(tmp_path: Path) -> None:
    data = _instances(tmp_path, slices=1)
    root = tmp_path / "node"
    ingestor = _ingestor(root, 16 * MiB)
    ingestor.start()
    ingestor.stop()
    for d in data:  # a straggler after the writer's last pass: a durable file of its own
        assert ingestor.take_bytes(d, source="scp:X", protocol=None)
    assert {p.read_bytes() for p in ingestor.spool.files()} == set(data)
    assert ingestor.journal is not None
    assert ingestor.journal.last_seq == 0


def test_a_late_instance_reopening_a_study_wins_over_the_step_in_flight(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")

    def add(sop: str) -> None:
        store.add_instance(
            study_uid="1.2.3",
            sop_uid=sop,
            series_uid="1.2.3.1",
            modality="CT",
            path=f"/spool/{sop}",
            patient_id="P",
            other_ids="",
            protocol=None,
            source="scp:X",
        )

    add("1.2.3.1.1")
    claimed = store.claim("worker-1", 60.0)
    assert claimed is not None
    assert store.release(claimed.id, "complete", "worker-1", lease="worker-1")
    claimed = store.claim("worker-1", 60.0)
    assert claimed is not None and claimed.state == "complete"
    add("1.2.3.1.2")  # arrives while the worker validates: the study is reopened
    assert not store.release(claimed.id, "validated", "worker-1", lease="worker-1")
    study = store.study(claimed.id)
    assert study is not None and study.state == "receiving"
    assert len(store.instances(claimed.id)) == 2
    again = store.claim("worker-2", 60.0)  # at once, not when the old lease runs out
    assert again is not None and again.id == claimed.id
    store.decide(again.id, "staff", subject="SUBJ-042")  # staff decide mid-step: they win
    assert not store.release(again.id, "pseudonymised", "worker-2", lease="worker-2")
    decided = store.study(again.id)
    assert decided is not None and decided.state == "complete"


def test_a_failed_spool_fsync_stops_checkpoints_until_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retried fsync can succeed without the data on disk: the journal keeps it instead."""
    import identifiable_node.journal_writer as writer_module

    data = _instances(tmp_path, slices=2)
    root = tmp_path / "node"
    ingestor = _ingestor(root, 16 * MiB)

    def broken(_paths: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(writer_module, "fsync_files", broken)
    ingestor.start()
    for d in data:
        ingestor.take_bytes(d, source="scp:X", protocol=None)
    ingestor.stop()
    assert ingestor.journal is not None
    assert ingestor.journal.checkpoint_seq == 0  # nothing declared safe
    ingestor.journal.close()
    monkeypatch.undo()
    again = _ingestor(root, 16 * MiB)
    assert again.recover() == len(data)  # written again, durably, at the next start


def test_an_instance_sent_twice_keeps_its_first_copy(tmp_path: Path) -> None:
    """As without the journal: the first copy of a SOP Instance UID is the one kept, even when
    the second arrives before the first's spool file is written."""
    from pydicom import dcmread

    first = _instances(tmp_path, slices=1)[0]
    ds = dcmread(io.BytesIO(first))
    ds.SeriesDescription = "a different copy"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    root = tmp_path / "node"
    ingestor = _ingestor(root, 16 * MiB)
    _writer(ingestor).thread = _stalled_writer()
    assert ingestor.take_bytes(first, source="scp:X", protocol=None)
    assert not ingestor.take_bytes(out.getvalue(), source="scp:X", protocol=None)
    _writer(ingestor).thread = None
    ingestor.start()
    ingestor.stop()
    assert [p.read_bytes() for p in ingestor.spool.files()] == [first]


def test_an_unreadable_spooled_file_at_start_up_is_shown_in_quarantine(tmp_path: Path) -> None:
    """The start-up rescan keeps an unreadable spooled file in quarantine, with its reason, and
    lists it where the quarantine page reads (nothing deleted, staff see it)."""
    root = tmp_path / "node"
    ingestor = _ingestor(root, 16 * MiB)
    bad = ingestor.spool.spool / "ab" / "ab-broken.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not dicom at all" * 8)
    assert ingestor.rescan() == 0
    (row,) = ingestor.store.set_aside_rows()
    assert row.kind == "quarantined" and row.reason == "spooled file unreadable at start-up"
    assert Path(row.path).read_bytes() == b"not dicom at all" * 8  # kept, byte for byte
    assert not bad.exists()  # out of the spool, so the next rescan does not list it twice
    assert ingestor.rescan() == 0 and len(ingestor.store.set_aside_rows()) == 1
