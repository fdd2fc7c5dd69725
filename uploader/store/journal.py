"""The ingest journal: where a received instance becomes durable before it is acknowledged.

Making each received instance durable in its own new file costs an fsync of the file and one of
its folder: two journal commits of the file system, ~1.2 ms on our benchmark machine, most of
the time a C-STORE takes. Here the instance is written instead into a ring file that was filled
with zeros when it was made, and ``fdatasync`` then only has to write the data (no size, no
block map, no folder entry changes): ~0.6 ms. The spool file is written afterwards, by a
background thread, without an fsync of its own; a checkpoint (every spool file written since the
last one fsynced, with its folder, then the checkpoint's sequence number written durably) lets
the ring's space be reused. At start-up, every record after the checkpoint whose checksum holds
is written again to the spool (the power may have been cut before the spool file reached the
disk). The ring is one file of a fixed size; when it is full, instances are stored the slow way
(a durable file each) until a checkpoint frees space. One process owns the ring (a lock).

Record, at a 4096-byte boundary: a header (magic, the ring's random identity, sequence number,
lengths, CRC-32 of the body, CRC-32 of the header), the instance's bytes, and a small JSON
description (spool path, source, protocol). The body's CRC runs over the instance's bytes first,
so that the receiver can compute it while fragments arrive. The ring's identity (16 random bytes,
kept beside the checkpoint, never sent anywhere) means that a sender cannot plant a record inside
an instance's bytes: at start-up only headers carrying it, with a sequence number the ring can
hold, are believed.

All appenders share one descriptor: a write-back error is reported by ``fdatasync`` to one caller
only, so the calls are serialised and the first error retires the ring (appends then return
None and instances are stored the slow way) until the node restarts.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from uploader.store.spool import durable_write, fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"UPLJRNL1"
# magic, ring identity, sequence, payload length, description length, body CRC; then header CRC
_HEAD = struct.Struct("<8s16sQQII")
_HEAD_CRC = struct.Struct("<I")
_HEAD_SIZE = _HEAD.size + _HEAD_CRC.size
_PAGE = 4096
_ZEROS = b"\0" * (8 << 20)

Buffer = bytes | memoryview


class JournalBusyError(Exception):
    """Another process holds the journal."""


@dataclass
class Record:
    """One journaled instance, live until a checkpoint covers it."""

    seq: int
    offset: int
    size: int  # bytes reserved in the ring (page-rounded)
    length: int  # the instance's bytes, from offset + header size
    meta: dict[str, str | None]
    written: bool = False  # its spool file is written (not yet fsynced)


def _round(n: int) -> int:
    return (n + _PAGE - 1) // _PAGE * _PAGE


def crc32(parts: Sequence[Buffer], crc: int = 0) -> int:
    """CRC-32 of the parts in order (continuing ``crc``)."""
    for part in parts:
        crc = zlib.crc32(part, crc)
    return crc


class Journal:
    """The ring file and its checkpoint, in ``folder``."""

    def __init__(self, folder: Path, size_bytes: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.capacity = size_bytes // _PAGE * _PAGE
        self.ring_path = folder / "ring"
        self.checkpoint_path = folder / "checkpoint.json"
        self._fd = os.open(self.ring_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            raise JournalBusyError(f"{self.ring_path} is in use by another process") from exc
        self._prepare()
        state = self._read_checkpoint()
        self.checkpoint_seq = int(state["seq"])
        self._clean = bool(state["clean"])
        self.ring_id = bytes.fromhex(str(state["ring"]))
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._broken = False
        self._closed = False
        self._live: deque[Record] = deque()
        self._head = 0
        self._next_seq = self.checkpoint_seq + 1
        # from now on records may be written: a crash must be recovered (and a new ring's
        # identity must be on disk before any record carries it)
        if self._clean or not self.checkpoint_path.exists():
            self._write_checkpoint(self.checkpoint_seq, clean=False)

    # -- the ring file --------------------------------------------------------------------
    def _prepare(self) -> None:
        """Fill the ring with zeros (written, so that later writes change no metadata)."""
        size = os.fstat(self._fd).st_size
        if size >= self.capacity:
            self.capacity = size // _PAGE * _PAGE
            return
        log.info("preparing the ingest journal (%d MiB)", self.capacity >> 20)
        os.lseek(self._fd, size, os.SEEK_SET)
        left = self.capacity - size
        while left > 0:
            left -= os.write(self._fd, _ZEROS[: min(left, len(_ZEROS))])
        os.fsync(self._fd)
        fsync_dir(self.folder)

    def _read_checkpoint(self) -> dict[str, int | bool | str]:
        """The last checkpoint (none yet: sequence 0, not clean, a new ring identity)."""
        unreadable = f"{self.checkpoint_path}: unreadable journal checkpoint"
        try:
            state = json.loads(self.checkpoint_path.read_text())
            ring = str(state["ring"])
            checked: dict[str, int | bool | str] = {
                "seq": int(state["seq"]),
                "clean": bool(state["clean"]),
                "ring": ring,
            }
            size = len(bytes.fromhex(ring))
        except FileNotFoundError:
            return {"seq": 0, "clean": False, "ring": os.urandom(16).hex()}
        except (ValueError, KeyError, TypeError) as exc:
            raise OSError(unreadable) from exc
        if size != 16:
            raise OSError(unreadable)
        return checked

    def close(self) -> None:
        os.close(self._fd)

    # -- appending ------------------------------------------------------------------------
    def _place(self, size: int) -> int | None:
        """Where a record of ``size`` bytes fits without touching a live one (None: full)."""
        if size > self.capacity:
            return None
        if not self._live:
            return self._head if self._head + size <= self.capacity else 0
        tail = self._live[0].offset
        if tail < self._head:  # live region [tail, head): free after head, then before tail
            if self._head + size <= self.capacity:
                return self._head
            return 0 if size <= tail else None
        return self._head if self._head + size <= tail else None  # live region wraps

    def append(
        self, meta: dict[str, str | None], parts: Sequence[Buffer], crc: int | None = None
    ) -> Record | None:
        """Write a record durably; None when the ring has no room (store the slow way).
        ``crc``: the parts' CRC-32 if the caller has it already.

        Raises:
            OSError: the disk refused: nothing was acknowledged.
        """
        description = json.dumps(meta).encode()
        length = sum(len(p) for p in parts)
        body = [*parts, description]
        total = _HEAD_SIZE + len(description) + length
        with self._lock:
            if self._broken or self._closed:
                return None
            offset = self._place(_round(total))
            if offset is None:
                return None
            record = Record(self._next_seq, offset, _round(total), length, meta)
            self._next_seq += 1
            self._head = offset + record.size
            self._live.append(record)
        try:
            crc = zlib.crc32(description, crc32(parts) if crc is None else crc)
            head = _HEAD.pack(MAGIC, self.ring_id, record.seq, length, len(description), crc)
            head += _HEAD_CRC.pack(zlib.crc32(head))
            # to the end of the last page: a partly written page not in memory would be read
            # from the disk first, on the acknowledgement's path
            self._write([head, *body, _ZEROS[: record.size - total]], offset)
            self._sync()
        except BaseException:
            record.written = True  # nothing to write out: let checkpoints pass it
            record.meta = {}
            raise
        return record

    def _sync(self) -> None:
        """fdatasync, one caller at a time; after a failure, every caller fails.

        Raises:
            OSError: the data may not be on disk.
        """
        with self._sync_lock:
            if not self._broken:
                try:
                    os.fdatasync(self._fd)
                except OSError:
                    self._broken = True
                    log.error("the ingest journal's disk failed: storing without it")  # noqa: TRY400 - expected, no traceback
                    raise
            if self._broken:  # someone else's fdatasync may have taken our error
                raise OSError(f"{self.ring_path}: the journal failed")

    def _write(self, parts: list[Buffer], offset: int) -> None:
        views = [memoryview(p).cast("B") for p in parts]
        while views:
            n = os.pwritev(self._fd, views, offset)
            offset += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]

    def read(self, record: Record) -> bytes:
        """A live record's instance bytes (for its spool file).

        Raises:
            OSError: the disk refused.
        """
        data = os.pread(self._fd, record.length, record.offset + _HEAD_SIZE)
        if len(data) != record.length:
            raise OSError(f"{self.ring_path}: short read of record {record.seq}")
        return data

    # -- checkpoints ----------------------------------------------------------------------
    def used(self) -> int:
        """Bytes held by live records."""
        with self._lock:
            return sum(r.size for r in self._live)

    def checkpointable(self) -> int:
        """The highest sequence number up to which every record's spool file is written."""
        with self._lock:
            seq = self.checkpoint_seq
            for record in self._live:
                if not record.written:
                    break
                seq = record.seq
            return seq

    def checkpoint(self, seq: int, *, clean: bool = False) -> bool:
        """Declare every record up to ``seq`` safe in the spool (the caller fsynced the files).
        ``clean``: the node is stopping; the checkpoint says so only if ``seq`` is the last
        record and no append is under way (then start-up need not read the ring). Returns
        whether it was written as clean.

        Raises:
            OSError: the checkpoint could not be written (the records stay live).
        """
        with self._lock:  # held while writing a clean one: no append may slip in after it
            clean = clean and seq == self._next_seq - 1 and all(r.written for r in self._live)
            if clean:
                self._write_checkpoint(seq, clean=True)
                self._closed = True  # nothing may be appended after a clean checkpoint
        if not clean:
            self._write_checkpoint(seq, clean=False)
        with self._lock:
            while self._live and self._live[0].seq <= seq:
                self._live.popleft()
            self.checkpoint_seq = seq
            if not self._live and clean:
                self._head = 0
        return clean

    def _write_checkpoint(self, seq: int, *, clean: bool) -> None:
        state = {"seq": seq, "clean": clean, "ring": self.ring_id.hex()}
        durable_write(self.checkpoint_path, json.dumps(state).encode())

    @property
    def retired(self) -> bool:
        """True after a disk error: no more appends until the node restarts."""
        return self._broken

    @property
    def last_seq(self) -> int:
        """The sequence number of the last record written or found."""
        return self._next_seq - 1

    # -- recovery -------------------------------------------------------------------------
    def recover(self) -> Iterator[tuple[dict[str, str | None], bytes]]:
        """Every intact record after the checkpoint, in sequence order (start-up, before any
        append). A clean shutdown left none: the ring is not read then."""
        if self._clean:
            return
        most = self.checkpoint_seq + self.capacity // _PAGE  # the ring holds no more records
        found: list[tuple[int, int, int, int, int]] = []  # seq, offset, lengths, body CRC
        offset = 0
        while offset < self.capacity:
            chunk = os.pread(self._fd, min(len(_ZEROS), self.capacity - offset), offset)
            at = chunk.find(MAGIC)
            while at != -1:
                if at % _PAGE == 0 and at + _HEAD_SIZE <= len(chunk):
                    head = chunk[at : at + _HEAD.size]
                    (head_crc,) = _HEAD_CRC.unpack_from(chunk, at + _HEAD.size)
                    _magic, ring, seq, length, dlen, crc = _HEAD.unpack(head)
                    ours = ring == self.ring_id and zlib.crc32(head) == head_crc
                    if ours and self.checkpoint_seq < seq <= most:
                        found.append((seq, offset + at, length, dlen, crc))
                at = chunk.find(MAGIC, at + 1)
            offset += len(chunk)
        for seq, at, length, dlen, crc in sorted(found):
            self._next_seq = max(self._next_seq, seq + 1)  # torn ones too: never reuse a number
            size = dlen + length
            fits = at + _HEAD_SIZE + size <= self.capacity
            body = os.pread(self._fd, size, at + _HEAD_SIZE) if fits else b""
            if len(body) != size or zlib.crc32(body) != crc:
                log.warning("journal record %d is incomplete (never acknowledged): skipped", seq)
                continue
            try:
                meta = json.loads(body[length:])
            except ValueError:
                continue
            yield meta, body[:length]
