"""The journal's writer: the thread that turns journaled instances into spool files.

On the node's C-STORE path an instance is durable once it is in the journal
(:mod:`uploader.store.journal`); this writer writes the spool files from the journal once
arrivals pause for ``write_delay_s`` (or the journal is a quarter full), so that it does not
compete with the receiver for the CPU, fsyncs them and checkpoints the journal. A spool write
the disk refuses stays in the journal and is tried again, less often each time; a failed fsync
stops checkpoints until the node restarts. Its state is published beside the journal for
``uploader status`` (no identifiers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from uploader.hardening import describe
from uploader.store.journal import Journal, Record
from uploader.store.spool import fsync_files, quick_write

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """A journaled instance whose spool file is still to be written."""

    record: Record
    path: Path
    study_uid: str
    failures: int = 0  # spool writes that failed
    retry_at: float = 0.0  # monotonic time of the next try


def idle_status() -> dict[str, object]:
    """The status of a node without a journal (nothing waits)."""
    return {
        "waiting_for_spool_files": 0,
        "failing_spool_writes": 0,
        "checkpoints_stopped": False,
        "retired": False,
        "used_mb": 0.0,
    }


class JournalWriter:
    """Writes spool files from the journal in its own thread (``start``/``stop``)."""

    def __init__(
        self,
        journal: Journal,
        spool_root: Path,
        *,
        write_delay_s: float = 0.2,
        checkpoint_idle_s: float = 1.0,
    ) -> None:
        self.journal = journal
        self.spool_root = spool_root
        self.write_delay_s = write_delay_s
        self.checkpoint_idle_s = checkpoint_idle_s
        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._waiting: Counter[str] = Counter()  # study UID -> instances without a spool file
        self._journaled: set[Path] = set()  # their spool paths (the first copy is the one kept)
        self._unsynced: list[Path] = []
        self._last_append = 0.0
        self._stopping = False  # no new journal appends
        self._closing = False  # the writer's last pass
        self._inflight = 0  # journal appends under way
        self._checkpoints_stopped = False  # after a failed spool fsync, until restart
        self._published: dict[str, object] = {}
        self._published_at = 0.0  # at most once a second
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer thread."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
            self.thread.start()

    def stop(self, wait_s: float = 30.0) -> None:
        """Refuse new journal appends (they are stored the slow way), wait for those under
        way, write what is pending, checkpoint the journal (clean if it can be), stop."""
        if self.thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.wait_for(lambda: self._inflight == 0, timeout=wait_s)
            self._closing = True
            self._cond.notify_all()
        self.thread.join(timeout=wait_s)
        self.thread = None

    def alive(self) -> bool:
        """True while the writer thread runs."""
        return self.thread is not None and self.thread.is_alive()

    def busy(self, study_uid: str) -> bool:
        """True while some of the study's instances have no spool file yet."""
        with self._cond:
            return self._waiting[study_uid] > 0

    def journaled(self, path: Path) -> bool:
        """True if the instance for ``path`` is journaled and its spool file not yet written."""
        with self._cond:
            return path in self._journaled

    def pending_bytes(self, path: Path) -> bytes | None:
        """The journaled bytes for ``path`` while its spool file is still to be written."""
        with self._cond:
            pending = next((i for i in self._pending if i.path == path), None)
        if pending is None:
            return None
        with contextlib.suppress(OSError):
            return self.journal.read(pending.record)
        return None

    def append(
        self,
        path: Path,
        study_uid: str,
        parts: Sequence[bytes | memoryview],
        crc: int | None,
        origin: tuple[str, str | None],
    ) -> bool:
        """Journal an instance and queue its spool file; False: the caller stores it the slow
        way (no writer running, stopping, or the journal full until the next checkpoint)."""
        if not self.alive():
            return False
        with self._cond:
            if self._stopping:
                return False
            self._inflight += 1
        try:
            meta = {"path": str(path.relative_to(self.spool_root)), "source": origin[0]}
            record = self.journal.append({**meta, "protocol": origin[1]}, parts, crc)
            if record is None:
                return False  # the journal is full until the next checkpoint
            with self._cond:
                self._last_append = time.monotonic()
                self._waiting[study_uid] += 1
                self._journaled.add(path)
                self._pending.append(_Pending(record, path, study_uid))
                self._pending_bytes += record.size
            return True
        finally:
            with self._cond:
                self._inflight -= 1
                if self._stopping:  # stop() waits for the last one; otherwise let the writer
                    self._cond.notify_all()  # sleep: waking it per instance costs the receiver

    def status(self) -> dict[str, object]:
        """The journal's state for `uploader status` (no identifiers)."""
        with self._cond:
            waiting = len(self._pending)
            failing = sum(1 for i in self._pending if i.failures)
        return {
            "waiting_for_spool_files": waiting,
            "failing_spool_writes": failing,
            "checkpoints_stopped": self._checkpoints_stopped,
            "retired": bool(self.journal.retired),
            "used_mb": round(self.journal.used() / (1 << 20), 1),
        }

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                if self._turn():
                    return
            except Exception as exc:  # a defect must not leave the journal undrained
                log.error("spool writer: %s", describe(exc))  # noqa: TRY400 - no values
                time.sleep(1.0)

    def _turn(self) -> bool:
        """One turn of the writer; True when it is done (the node is stopping)."""
        journal = self.journal
        with self._cond:
            self._cond.wait(timeout=self.write_delay_s)
            closing = self._closing
            now = time.monotonic()
            quiet = now - self._last_append >= self.write_delay_s
            full = self._pending_bytes > journal.capacity // 4
            batch: list[_Pending] = []
            if closing or quiet or full:  # items that failed wait for their own time
                batch = [i for i in self._pending if i.retry_at <= now or closing]
                taken = {id(i) for i in batch}
                self._pending = deque(i for i in self._pending if id(i) not in taken)
                self._pending_bytes = sum(i.record.size for i in self._pending)
        failed = [item for item in batch if not self._write_out(item)]
        if failed and not closing:  # the journal keeps them: try again later, less often
            with self._cond:
                for item in failed:
                    item.failures += 1
                    item.retry_at = time.monotonic() + min(60.0, 2.0**item.failures)
                self._pending.extendleft(reversed(failed))
                self._pending_bytes += sum(item.record.size for item in failed)
        idle = time.monotonic() - self._last_append >= self.checkpoint_idle_s
        if self._unsynced and (closing or idle or journal.used() > journal.capacity // 2):
            self._checkpoint(clean=closing)
        elif closing:
            self._checkpoint(clean=True)
        self._publish()
        return closing  # anything not written stays in the journal for the next start

    def _publish(self) -> None:
        """Write the status beside the journal when it changed (read by `uploader status`)."""
        if time.monotonic() - self._published_at < 1.0:
            return
        state = self.status()
        if state != self._published:
            self._published_at = time.monotonic()
            target = self.journal.folder / "status.json"
            with contextlib.suppress(OSError):  # only a report: never in the way
                target.with_suffix(".tmp").write_text(json.dumps(state))
                target.with_suffix(".tmp").replace(target)
                self._published = state

    def _write_out(self, item: _Pending) -> bool:
        """Write one spool file from the journal; False if the disk refused."""
        try:
            quick_write(item.path, [self.journal.read(item.record)])
        except OSError as exc:
            if item.failures in (0, 3) or item.failures % 10 == 0:  # not a line per retry
                log.error(  # noqa: TRY400 - expected, no traceback
                    "spool write failed (%d time(s)), the journal keeps it: %s",
                    item.failures + 1,
                    type(exc).__name__,
                )
            return False
        item.record.written = True
        with self._cond:
            self._unsynced.append(item.path)
            self._journaled.discard(item.path)
            self._waiting[item.study_uid] -= 1
            if self._waiting[item.study_uid] <= 0:
                del self._waiting[item.study_uid]
        return True

    def _checkpoint(self, *, clean: bool = False) -> None:
        """fsync the spool files written since the last checkpoint, then checkpoint. If an
        fsync fails, checkpoints stop until the node restarts: a retried fsync can succeed
        without the data having reached the disk, and the journal still holds it."""
        if self._checkpoints_stopped:
            return
        with self._cond:
            paths, self._unsynced = self._unsynced, []
        seq = self.journal.checkpointable()
        try:
            fsync_files(paths)
        except OSError as exc:
            self._checkpoints_stopped = True
            log.error(  # noqa: TRY400 - expected, no traceback
                "spool fsync failed (%s): the journal keeps everything until a restart",
                type(exc).__name__,
            )
            return
        try:
            self.journal.checkpoint(seq, clean=clean)
        except OSError as exc:
            log.error("journal checkpoint failed, will retry: %s", type(exc).__name__)  # noqa: TRY400 - expected, no traceback
