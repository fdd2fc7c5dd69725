"""A node as an object: ``start()`` brings its parts up one by one, ``stop()`` takes them down.

Each part is recorded as it comes up, with the action that stops it (:meth:`Node.started`);
``stop()`` first sets the node's ``stopping`` event (every loop sees it), then runs those
actions in the reverse order, so the order a node's correctness depends on is the order its
``_start`` is written in: what feeds a part comes up after it and goes down before it. A part
that fails to stop is logged and the others still stop. Used as a context manager, ``stop()``
runs however the block ends, and a ``start()`` that fails halfway stops what it had started
before the error goes on.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Self

from uploader.health import describe

log = logging.getLogger(__name__)


class Node(ABC):
    """Base of both nodes. Subclasses write ``_start``; ``stop_order`` lists the parts that
    ``stop()`` will stop, in that order (what the shutdown tests check)."""

    def __init__(self, on_stop_step: Callable[[str], None] | None = None) -> None:
        self.stopping = threading.Event()
        self._parts: list[tuple[str, Callable[[], None]]] = []
        self._on_stop_step = on_stop_step  # called with each part's name just before it stops
        self.stopped: list[str] = []  # the parts stopped so far, in order
        self.stop_failures: list[str] = []  # "part: reason" for each part that failed to stop
        self._lock = threading.Lock()

    @abstractmethod
    def _start(self) -> None:
        """Bring the parts up, calling :meth:`started` after each."""

    def started(self, name: str, stop: Callable[[], None]) -> None:
        """Record that part ``name`` is up; ``stop`` takes it down again."""
        with self._lock:
            self._parts.append((name, stop))

    @property
    def stop_order(self) -> list[str]:
        """The parts that are up, in the order ``stop()`` will stop them."""
        with self._lock:
            return [name for name, _ in reversed(self._parts)]

    def start(self) -> None:
        """Start every part. Raises what ``_start`` raised, once the parts already up stopped."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def request_stop(self) -> None:
        """Ask the node to stop (a signal handler's whole job): :meth:`wait` returns."""
        self.stopping.set()

    def wait(self) -> None:
        """Block until :meth:`request_stop` (or a part that ends the node) sets ``stopping``."""
        self.stopping.wait()

    def stop(self) -> None:
        """Stop every part that is up, in the reverse order of their start (idempotent)."""
        self.stopping.set()
        while True:
            with self._lock:
                if not self._parts:
                    return
                name, action = self._parts.pop()
            if self._on_stop_step is not None:
                self._on_stop_step(name)
            try:
                action()
            except Exception as exc:  # the other parts must still stop
                log.exception("stopping %s failed", name)
                self.stop_failures.append(f"{name}: {describe(exc)}")
            self.stopped.append(name)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
