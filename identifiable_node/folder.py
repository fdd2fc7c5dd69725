"""The watched folder: files are taken once complete, released only once durably stored.

Polling finds everything (a network share may send no events); watchdog events only make the
next scan come sooner. A file counts as complete when its size and mtime held for ``stable_s``;
names that look temporary (``.partial-*``, ``*.tmp``, ``*.part``, dot-files) are left alone until
they are renamed.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from identifiable_node.config import FolderSettings
from identifiable_node.ingest import Ingestor
from uploader.errors import NotDicomError, RetriableError

log = logging.getLogger(__name__)
_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart")


def _temporary(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(_TEMP_SUFFIXES)


class FolderWatcher:
    """Scans the folder, takes stable files, moves them to processed/ (or deletes them)."""

    def __init__(
        self, settings: FolderSettings, ingestor: Ingestor, known_protocols: set[str]
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.protocols = known_protocols
        self.root = settings.path
        self._seen: dict[Path, tuple[int, float, float]] = {}  # path -> size, mtime, since
        self.wake = threading.Event()
        self._observer: Any = None

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

    def run(self, stop: threading.Event) -> None:
        """Scan until ``stop`` is set."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_events()
        try:
            while not stop.is_set():
                pending = self.scan()
                wait = (
                    min(self.settings.poll_interval_s, self.settings.stable_s / 2 + 0.05)
                    if pending
                    else self.settings.poll_interval_s
                )
                self.wake.wait(wait)
                self.wake.clear()
        finally:
            self.stop_events()

    def scan(self) -> int:
        """One pass: take every stable file; return how many are still settling."""
        now = time.time()
        present: set[Path] = set()
        pending = 0
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in sorted(dirs) if not d.startswith(".")]
            for name in sorted(files):
                if _temporary(name):
                    continue
                path = Path(folder) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                present.add(path)
                size_mtime = (st.st_size, st.st_mtime)
                seen = self._seen.get(path)
                if seen is None or seen[:2] != size_mtime:
                    self._seen[path] = (*size_mtime, now)
                    pending += 1
                elif (
                    now - seen[2] >= self.settings.stable_s
                    and now - st.st_mtime >= self.settings.stable_s
                ):
                    self._take(path)
                else:
                    pending += 1
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return pending

    def _protocol(self, path: Path) -> str | None:
        if not self.settings.protocol_from_subfolder:
            return None
        parts = path.relative_to(self.root).parts
        return parts[0] if len(parts) > 1 and parts[0] in self.protocols else None

    def _take(self, path: Path) -> None:
        rel = path.relative_to(self.root)
        try:
            self.ingestor.take_file(
                path,
                source=f"folder:{rel.parts[0] if len(rel.parts) > 1 else '.'}",
                protocol=self._protocol(path),
            )
        except NotDicomError as exc:
            self.ingestor.spool.quarantine(path, path.name, f"{rel}: {exc}")
            path.unlink(missing_ok=True)
            self._seen.pop(path, None)
            log.warning("a file from the watched folder was quarantined: %s", exc)
            return
        except (OSError, RetriableError) as exc:
            log.error("cannot take a file from the watched folder yet: %s", type(exc).__name__)  # noqa: TRY400
            return
        self._release(path, rel)
        self._seen.pop(path, None)

    def _release(self, path: Path, rel: Path) -> None:
        """Only called once the instance is durable: move to processed/ or delete."""
        if self.settings.after == "delete":
            path.unlink(missing_ok=True)
            return
        target = self.ingestor.spool.processed / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.replace(target)
        except OSError:
            shutil.move(str(path), str(target))
