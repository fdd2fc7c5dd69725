"""Durable files: the spool of received instances, the outbox, and quarantine.

A file is written under a temporary name, fsynced, renamed, and its folder fsynced: once
``write`` returns, the file survives a crash or a power cut. Names are hashes, never UIDs or
patient data.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_partial_names = itertools.count()


def durable_write(target: Path, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or a sequence of buffers) to ``target`` atomically and durably.

    Raises:
        OSError: the disk refused (full, read-only...): the caller reports a storage failure.
    """
    _write(target, data, durable=True)


def quick_write(target: Path, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` to ``target`` atomically but not durably: for a copy whose original is
    durable elsewhere (the ingest journal), fsynced later in batches.

    Raises:
        OSError: the disk refused.
    """
    _write(target, data, durable=False)


def _write(target: Path, data: bytes | Sequence[bytes | memoryview], *, durable: bool) -> None:
    # Plain os calls: this runs once per received instance, before its acknowledgement.
    tmp = target.parent / f".partial-{os.getpid()}-{threading.get_ident()}-{next(_partial_names)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        fsync_dir(target.parent.parent)  # the new folder's own entry, once
        fd = os.open(tmp, flags, 0o600)
    try:
        try:
            for part in [data] if isinstance(data, bytes) else data:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
        if durable:
            fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_files(paths: Sequence[Path]) -> None:
    """Make files written by ``quick_write`` durable, with their folders.

    Raises:
        OSError: the disk refused.
    """
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # removed since (purged): nothing to keep
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in {p.parent for p in paths}:
        fsync_dir(folder)


def name_for(key: str) -> str:
    """A file name for an instance: a hash of its key (the SOP Instance UID)."""
    return hashlib.sha256(key.encode()).hexdigest()[:40] + ".dcm"


class Spool:
    """Folders under the node's data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.spool = data_dir / "spool"
        self.outbox = data_dir / "outbox"
        self.quarantine_dir = data_dir / "quarantine"
        self.processed = data_dir / "processed"
        for folder in (self.spool, self.outbox, self.quarantine_dir, self.processed):
            folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, sop_uid: str) -> Path:
        """Where a received instance is kept."""
        name = name_for(sop_uid)
        return self.spool / name[:2] / name

    def store(self, sop_uid: str, data: bytes | Sequence[bytes | memoryview]) -> Path:
        """Store received bytes durably; return the path."""
        path = self.path_for(sop_uid)
        durable_write(path, data)
        return path

    def files(self) -> list[Path]:
        """Every spooled instance file (for the start-up rescan)."""
        return [p for p in self.spool.rglob("*.dcm") if not p.name.startswith(".partial-")]

    def quarantine(self, data: bytes | Path, name: str, reason: str) -> Path:
        """Keep a file that cannot be processed, with its reason beside it (never deleted)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        folder = self.quarantine_dir / stamp
        target = folder / Path(name).name
        n = 1
        while target.exists():
            target = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
            n += 1
        if isinstance(data, Path):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data, target)
            with target.open("rb+") as f:
                os.fsync(f.fileno())
        else:
            durable_write(target, data)
        durable_write(target.with_name(target.name + ".reason.txt"), (reason + "\n").encode())
        return target
