"""The watched folder: regular files are taken once complete, released only once durably stored.

Polling finds everything (a network share may send no events); watchdog events only make the
next scan come sooner. A file counts as complete when its size and mtime held for ``stable_s``;
names that look temporary (``.partial-*``, ``*.tmp``, ``*.part``, dot-files) are left alone until
they are renamed.

What else is in the folder is hostile until shown otherwise:
- the folder is walked by directory descriptors, every step opened with ``O_NOFOLLOW``: a
  symbolic link (to a file or a folder, inside or outside) is never followed, only reported and
  left where it is, so nothing outside the folder is ever read;
- FIFOs, sockets and devices are reported and skipped, never opened (a file is opened with
  ``O_NONBLOCK`` and checked to be a regular file once open, in case it was swapped meanwhile);
- a file that cannot be read, is too large, or was stored but cannot be moved away is reported
  and left in place, and not tried again until it changes: one bad entry never stops the scan
  nor holds up the others;
- taken files move to ``processed/`` by a rename, or, when the folder is on another file system
  (EXDEV), by a durable copy then the removal of the source.

The watcher's health (``FolderWatcher.health()``, also written to ``<data_dir>/folder-status.json``
after each scan) says whether its thread is alive, when it last finished a scan, its last error
and what it has left alone; ``uploader status`` reports it (``folder_problems``). Given the node's
health :class:`~uploader.health.Component`, the watcher also beats it after each good scan and
marks it failed when the folder itself is in trouble (cannot be opened, or files cannot be moved
out of it); the container healthcheck reads that. Entries left alone need staff but do not make
the node unhealthy. Reasons given there never hold a file name.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from identifiable_node.config import FolderSettings
from identifiable_node.ingest import Ingestor
from identifiable_node.store import SetAsideKind
from uploader.errors import NotDicomError, RetriableError
from uploader.hardening import describe
from uploader.health import Component
from uploader.health import describe as short_reason
from uploader.store.spool import durable_write

log = logging.getLogger(__name__)
_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DEPTH = 16  # folders below the watched folder
HEALTH_FILE = "folder-status.json"
_SHOWN = 20  # entries left alone, listed in the health report


def _temporary(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(_TEMP_SUFFIXES)


def shown(rel: tuple[str, ...]) -> str:
    """A relative path for a report: control characters (a newline in a name) escaped."""
    text = "/".join(rel)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


class FolderWatcher:
    """Scans the folder, takes stable files, moves them to processed/ (or deletes them)."""

    def __init__(
        self,
        settings: FolderSettings,
        ingestor: Ingestor,
        known_protocols: set[str],
        *,
        max_bytes: int = 1 << 30,
        health: Component | None = None,
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.protocols = known_protocols
        self.root = settings.path
        self.max_bytes = max_bytes
        self._seen: dict[tuple[str, ...], tuple[int, int, int, float]] = {}  # size, mtime, ino
        self._refused: dict[tuple[str, ...], tuple[int, int, int]] = {}  # left until changed
        self._refusal: dict[tuple[str, ...], str] = {}  # and why
        self._notes: dict[tuple[str, ...], str] = {}  # entries left alone this scan, and why
        self._counts = {"taken": 0, "quarantined": 0}
        self._alive = False
        self._last_scan = 0.0
        self._last_error = ""
        self._failures = 0  # scans in a row that failed
        self._published_at = 0.0
        self.wake = threading.Event()
        self._observer: Any = None
        self._part = health

    # -- health ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The watcher's state, without identifiers other than entry names (for staff)."""
        notes = sorted(self._notes.items())
        return {
            "alive": self._alive,
            "last_scan": self._last_scan,
            "poll_interval_s": self.settings.poll_interval_s,
            "last_error": self._last_error,
            "failing_scans": self._failures,
            "taken": self._counts["taken"],
            "quarantined": self._counts["quarantined"],
            "left_alone": len(notes),
            "entries": [f"{shown(rel)}: {why}" for rel, why in notes[:_SHOWN]],
        }

    def _publish(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._published_at < 1.0:
            return
        self._published_at = time.monotonic()
        target = self.ingestor.spool.root / HEALTH_FILE
        try:
            durable_write(target, json.dumps(self.health()).encode())
        except OSError as exc:  # only a report: never in the way of the scan
            log.warning("watched folder: cannot write its status (%s)", type(exc).__name__)

    # -- the loop ----------------------------------------------------------------------------
    def start_events(self) -> None:
        """Start watchdog (if enabled): any event wakes the scanner early."""
        if not self.settings.watch_events:
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class _Wake(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                watcher.wake.set()

        self._observer = Observer()
        self._observer.schedule(_Wake(), str(self.root), recursive=True)
        self._observer.start()

    def stop_events(self) -> None:
        """Stop watchdog."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def run(self, stop: threading.Event) -> None:
        """Scan until ``stop`` is set. A failing scan is recorded and retried; the thread ends
        only when asked, and its health says so when it does."""
        self._alive = True
        try:
            while not stop.is_set():
                pending = self._guarded_scan()
                self._publish(force=True)
                wait = self.settings.poll_interval_s
                if pending:
                    wait = min(wait, self.settings.stable_s / 2 + 0.05)
                self.wake.wait(wait)
                self.wake.clear()
        finally:
            self._alive = False
            self.stop_events()
            self._publish(force=True)
            if self._part is not None and not stop.is_set():
                self._part.stopped("its thread ended")

    def _guarded_scan(self) -> int:
        try:
            if self._observer is None and self.settings.watch_events:
                self.root.mkdir(parents=True, exist_ok=True)
                self.start_events()
            pending = self.scan()
        except Exception as exc:  # a scan that fails is told, then tried again: never fatal
            self._failures += 1
            error = f"the scan failed: {describe(exc)}"
            if error != self._last_error or self._failures in (3, 10) or self._failures % 100 == 0:
                log.error("watched folder: %s (%d time(s) in a row)", error, self._failures)  # noqa: TRY400 - one line, no values
            self._last_error = error
            self.stop_events()
            if self._part is not None:
                self._part.failed(f"the folder cannot be scanned: {short_reason(exc)}")
            return 0
        self._failures = 0
        if self._part is not None:
            trouble = self._folder_trouble()
            if trouble:
                self._part.failed(trouble)
            else:
                self._part.beat()
        return pending

    def _folder_trouble(self) -> str | None:
        """What keeps the folder as a whole from working, though it can be read: taken files
        could not be moved out (no write permission on the folder)."""
        if not os.access(self.root, os.W_OK | os.X_OK):
            uid = os.getuid()
            return f"files cannot be moved out of the folder: no write permission for uid {uid}"
        return None

    # -- one scan ----------------------------------------------------------------------------
    def scan(self) -> int:
        """One pass: take every stable file; return how many are still settling.

        Raises:
            OSError: the watched folder itself cannot be opened.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        before, self._notes = self._notes, {}
        present: set[tuple[str, ...]] = set()
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            pending = self._walk(fd, (), present, time.time())
        finally:
            os.close(fd)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        for gone in set(self._refused) - present:
            del self._refused[gone]
            self._refusal.pop(gone, None)
        for rel, why in self._notes.items():
            if before.get(rel) != why:  # once per entry and reason; its name in the status
                log.warning("watched folder: an entry is left alone: %s", why.split(":")[0])
        self._last_scan = time.time()
        return pending

    def _note(self, rel: tuple[str, ...], why: str) -> None:
        self._notes[rel] = why

    def _walk(
        self, dir_fd: int, rel: tuple[str, ...], present: set[tuple[str, ...]], now: float
    ) -> int:
        pending = 0
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden, or a file still being written under a temporary name
            path = (*rel, entry.name)
            try:
                pending += self._entry(dir_fd, entry, path, present, now)
            except Exception as exc:  # one bad entry never stops the scan
                self._note(path, f"could not be handled ({describe(exc)}): left in place")
        return pending

    def _entry(
        self,
        dir_fd: int,
        entry: os.DirEntry[str],
        rel: tuple[str, ...],
        present: set[tuple[str, ...]],
        now: float,
    ) -> int:
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            self._note(rel, "a symbolic link: never followed, left in place")
            return 0
        if stat.S_ISDIR(st.st_mode):
            return self._folder(dir_fd, entry.name, rel, present, now)
        if not stat.S_ISREG(st.st_mode):
            self._note(rel, f"{_kind(st.st_mode)}: skipped, never opened")
            return 0
        if _temporary(entry.name):
            return 1
        present.add(rel)
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
        refused = self._refused.get(rel)
        if refused == signature:
            self._note(rel, self._refusal_reason(rel))
            return 0
        self._refused.pop(rel, None)
        if st.st_size > self.max_bytes:
            return self._refuse(rel, signature, f"larger than {self.max_bytes >> 20} MB")
        seen = self._seen.get(rel)
        if seen is None or seen[:3] != signature:
            self._seen[rel] = (*signature, now)
            return 1
        stable = self.settings.stable_s
        if now - seen[3] < stable or now - st.st_mtime < stable:
            return 1
        self._take(dir_fd, entry.name, rel, signature)
        return 0

    def _folder(
        self,
        dir_fd: int,
        name: str,
        rel: tuple[str, ...],
        present: set[tuple[str, ...]],
        now: float,
    ) -> int:
        if len(rel) > MAX_DEPTH:
            self._note(rel, f"a folder more than {MAX_DEPTH} deep: not scanned")
            return 0
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            why = "a symbolic link" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else "a folder"
            self._note(rel, f"{why} that cannot be opened ({exc.strerror}): left in place")
            return 0
        try:
            return self._walk(fd, rel, present, now)
        finally:
            os.close(fd)

    def _refuse(self, rel: tuple[str, ...], signature: tuple[int, int, int], why: str) -> int:
        """Leave a file in place, reported, until it changes (not tried on every scan)."""
        self._refused[rel] = signature
        self._refusal[rel] = f"{why}: left in place until it changes"
        self._note(rel, self._refusal[rel])
        return 0

    def _refusal_reason(self, rel: tuple[str, ...]) -> str:
        return self._refusal.get(rel, "left in place until it changes")

    def _read(self, dir_fd: int, name: str, signature: tuple[int, int, int]) -> bytes | str:
        """The file's bytes, or why it cannot be read."""
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except PermissionError:
            return "cannot be read (permission denied)"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symbolic link: never followed"
            return f"cannot be opened ({exc.strerror})"
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_ino != signature[2]:
                return "changed into something else while being taken"
            chunks, size = [], 0
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_bytes:
                    return f"larger than {self.max_bytes >> 20} MB"
            return b"".join(chunks)
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        finally:
            os.close(fd)

    def _protocol(self, rel: tuple[str, ...]) -> str | None:
        if not self.settings.protocol_from_subfolder:
            return None
        return rel[0] if len(rel) > 1 and rel[0] in self.protocols else None

    def _take(
        self, dir_fd: int, name: str, rel: tuple[str, ...], signature: tuple[int, int, int]
    ) -> None:
        data = self._read(dir_fd, name, signature)
        if isinstance(data, str):
            self._refuse(rel, signature, data)
            return
        try:
            self.ingestor.take_bytes(
                data,
                source=f"folder:{rel[0] if len(rel) > 1 else '.'}",
                protocol=self._protocol(rel),
            )
        except NotDicomError as exc:
            safe_name = shown((name,)).replace("\\", "_").replace("/", "_")
            reason = f"{shown(rel)}: {exc}"
            kept = self.ingestor.spool.quarantine(data, safe_name, reason)
            # on the quarantine page, where staff see why and an admin deletes it
            self.ingestor.store.set_aside(None, SetAsideKind.QUARANTINED, str(kept), reason)
            self._counts["quarantined"] += 1
            log.warning("a file from the watched folder was quarantined: %s", exc)
            self._seen.pop(rel, None)
            self._release(dir_fd, name, rel, None, signature)  # its copy is in quarantine
            return
        except (OSError, RetriableError) as exc:
            self._last_error = f"a file cannot be stored yet: {type(exc).__name__}"
            log.error("cannot take a file from the watched folder yet: %s", type(exc).__name__)  # noqa: TRY400
            return
        else:
            self._counts["taken"] += 1
        self._seen.pop(rel, None)
        self._release(dir_fd, name, rel, data, signature)

    def _release(
        self,
        dir_fd: int,
        name: str,
        rel: tuple[str, ...],
        data: bytes | None,
        signature: tuple[int, int, int],
    ) -> None:
        """Only called once the file is stored (or quarantined: ``data`` None): move it to
        processed/ (a durable copy, then the removal of the source, across file systems), or
        delete it."""
        try:
            keep = data is not None and self.settings.after == "move"
            if not (keep and data is not None and self._moved(dir_fd, name, rel, data)):
                os.unlink(name, dir_fd=dir_fd)
        except OSError as exc:
            why = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
            self._refuse(rel, signature, f"stored, but cannot be moved away ({why})")

    def _moved(self, dir_fd: int, name: str, rel: tuple[str, ...], data: bytes) -> bool:
        """Rename the file into processed/; False when it was copied there instead (another
        file system): the source is still to be removed."""
        target = self.ingestor.spool.processed.joinpath(*rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(name, target, src_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            durable_write(target, data)  # copy, fsync, rename into place, fsync the folder
            return False
        return True


def read_health(data_dir: Path) -> dict[str, Any] | None:
    """The running node's watched-folder health (None when it has none: folder disabled)."""
    try:
        state: dict[str, Any] = json.loads((data_dir / HEALTH_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def folder_problems(state: dict[str, Any] | None, now: float | None = None) -> list[str]:
    """What is wrong with the watched folder itself, one line each (empty: healthy): its thread
    stopped, no scan finished for a while, scans failing. A healthcheck calls this on
    ``read_health(data_dir)``; ``uploader status`` prints it, and the entries left alone
    (``state["entries"]``), which need staff but do not make the node unhealthy."""
    if state is None:
        return []
    now = time.time() if now is None else now
    problems = []
    if not state.get("alive"):
        problems.append("the watched folder's thread has stopped")
    elif now - float(state.get("last_scan") or 0) > max(60.0, 10 * state.get("poll_interval_s", 5)):
        problems.append("the watched folder has not finished a scan for over a minute")
    if state.get("failing_scans"):
        problems.append(f"{state['failing_scans']} scan(s) in a row failed: {state['last_error']}")
    return problems
