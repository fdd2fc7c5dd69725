"""Every long-running part of a node is watched: a part that stops or keeps failing is named.

Each thread or worker registers a :class:`Component` and reports on it: ``beat()`` after each
good turn, ``failed(reason)`` after a bad one, ``stopped(reason)`` when it ends. Parts that
cannot report themselves are watched from outside: ``watch_thread`` (alive?) and ``probe`` (a
function returning a problem or None). A monitor thread writes the whole picture to a health
file every few seconds (``health.json`` in the node's data folder); the container healthcheck
and ``uploader status`` read that file. A part is *unhealthy* when it stopped, when its last
``fail_after`` turns all failed, or when it has not beaten for ``stale_after_s``. The file also
carries the time it was written, so a monitor that itself stopped is seen as well.

Reasons are short and hold no patient data: the callers pass exception class names or
``strerror`` texts (see :func:`describe`), never a path from a patient's study.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uploader.store.spool import durable_write

log = logging.getLogger(__name__)

HEALTH_FILE = "health.json"
STALE_FILE_S = 60.0  # a health file older than this: the monitor itself stopped


def describe(exc: BaseException) -> str:
    """A short reason for an exception with no file names in it (they may name a patient)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


@dataclass
class Component:
    """One watched part. Thread-safe: reporters and the monitor share it."""

    name: str
    fail_after: int = 3
    stale_after_s: float | None = None
    _state: str = "starting"
    _reason: str = ""
    _failures: int = 0
    _last_beat: float = field(default_factory=time.time)
    _since: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self) -> None:
        """A good turn: the part is alive and its last step worked."""
        with self._lock:
            now = time.time()
            if self._state != "ok":
                self._since = now
            self._state, self._reason, self._failures, self._last_beat = "ok", "", 0, now

    def failed(self, reason: str) -> None:
        """A bad turn (the part goes on and will try again)."""
        with self._lock:
            now = time.time()
            self._failures += 1
            self._last_beat = now
            if self._state != "failing":
                self._since = now
            self._state, self._reason = "failing", reason

    def stopped(self, reason: str) -> None:
        """The part ended and will not come back by itself."""
        with self._lock:
            self._state, self._reason, self._since = "stopped", reason, time.time()

    def report(self, now: float) -> dict[str, Any]:
        """The part's state for the health file; ``healthy`` says whether it counts as up."""
        with self._lock:
            state, reason, failures = self._state, self._reason, self._failures
            since, last = self._since, self._last_beat
        healthy = state in ("ok", "starting") or (state == "failing" and failures < self.fail_after)
        if state == "failing" and failures >= self.fail_after > 1:
            reason = f"{reason} ({failures} times in a row)"
        if healthy and self.stale_after_s is not None and now - last > self.stale_after_s:
            healthy, state = False, "stuck"
            reason = f"no sign of life for {now - last:.0f} s"
        return {
            "state": state,
            "healthy": healthy,
            "reason": reason,
            "since": round(since, 3),
            "failures": failures,
        }


class Health:
    """A node's registry of watched parts and the monitor that writes its health file."""

    def __init__(self, data_dir: Path, interval_s: float = 5.0) -> None:
        self.path = data_dir / HEALTH_FILE
        self.interval_s = interval_s
        self._components: dict[str, Component] = {}
        self._checks: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None

    def component(
        self, name: str, *, fail_after: int = 3, stale_after_s: float | None = None
    ) -> Component:
        """Register (or return) the part called ``name``."""
        if name not in self._components:
            self._components[name] = Component(name, fail_after, stale_after_s)
        return self._components[name]

    def watch_thread(self, name: str, thread: threading.Thread) -> Component:
        """Watch a thread from outside: it counts as stopped once it is no longer alive."""
        part = self.component(name)

        def check() -> None:
            if thread.ident is not None and not thread.is_alive() and part._state != "stopped":
                part.stopped("its thread ended")
            elif thread.is_alive() and part._state == "starting":
                part.beat()

        self._checks.append(check)
        return part

    def probe(self, name: str, problem: Callable[[], str | None]) -> Component:
        """Watch a part by asking: ``problem()`` returns what is wrong, or None when all is well."""
        part = self.component(name, fail_after=1)

        def check() -> None:
            try:
                found = problem()
            except Exception as exc:  # a probe that breaks is itself a finding
                found = f"its check failed: {describe(exc)}"
            if found:
                part.failed(found)
            elif part._state != "stopped":
                part.beat()

        self._checks.append(check)
        return part

    def snapshot(self) -> dict[str, Any]:
        """Run the outside checks; return the whole picture (what the health file holds)."""
        for check in self._checks:
            check()
        now = time.time()
        parts = {name: c.report(now) for name, c in sorted(self._components.items())}
        return {
            "written": round(now, 3),
            "healthy": all(p["healthy"] for p in parts.values()),
            "components": parts,
        }

    def write(self) -> dict[str, Any]:
        """Write the health file now; return what was written."""
        state = self.snapshot()
        try:
            durable_write(self.path, json.dumps(state, indent=1).encode())
        except OSError as exc:
            log.error("cannot write the health file: %s", describe(exc))  # noqa: TRY400
        return state

    def start(self, stop: threading.Event) -> None:
        """Write the health file now and then every ``interval_s`` until ``stop`` is set."""
        previous: set[str] = set()

        def loop() -> None:
            nonlocal previous
            while True:
                state = self.write()
                sick = {n for n, p in state["components"].items() if not p["healthy"]}
                for name in sorted(sick - previous):
                    log.error("%s is unhealthy: %s", name, state["components"][name]["reason"])
                for name in sorted(previous - sick):
                    log.warning("%s is healthy again", name)
                previous = sick
                if stop.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=loop, name="health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Remove the health file (a stopped node has no health to report)."""
        self.path.unlink(missing_ok=True)


def read_health(data_dir: Path, now: float | None = None) -> list[str] | None:
    """The problems a running node's health file reports ([] when healthy).

    Returns None when there is no health file (the node is not running). A file that is
    unreadable or older than ``STALE_FILE_S`` is itself a problem.
    """
    path = data_dir / HEALTH_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return [f"health file {path}: unreadable ({describe(exc)})"]
    age = (now if now is not None else time.time()) - float(state.get("written", 0))
    problems = [
        f"{name}: {part.get('state')}: {part.get('reason')}"
        for name, part in state.get("components", {}).items()
        if not part.get("healthy")
    ]
    if age > STALE_FILE_S:
        problems.append(f"the node's health monitor has not written for {age:.0f} s")
    return problems


def print_health(problems: list[str] | None) -> None:
    """The health lines of ``uploader status`` (from :func:`read_health`)."""
    if problems is None:
        print("node: not running (no health file)")
    elif not problems:
        print("node: running, every part healthy")
    for problem in problems or []:
        print(f"UNHEALTHY {problem}")
