"""The ingest journal: what was acknowledged survives a crash or a power cut, what was torn is
never taken for an instance, space is reused, and a full journal falls back to durable files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from identifiable_node.ingest import Ingestor
from uploader.sample import write_study
from uploader.store.db import Store
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
    journal.append({"path": "a"}, [b"a" * 100])
    journal.checkpoint(journal.last_seq, clean=True)
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
    ingestor.start()
    ingestor._stopping = True  # the writer exits at its next turn without writing: a crash
    ingestor._cond.acquire()  # and cannot take the lock until we have journaled everything
    try:
        for d in data:
            assert ingestor.take_bytes([d[:1000], d[1000:]], source="scp:X", protocol="PACE-C")
        assert not list(ingestor.spool.files())  # journaled only
        assert ingestor.busy(ingestor.store.query("SELECT study_uid FROM studies")[0][0])
    finally:
        ingestor._cond.release()
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
    ingestor.start()
    for d in data:
        ingestor.take_bytes(d, source="scp:X", protocol=None)
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
