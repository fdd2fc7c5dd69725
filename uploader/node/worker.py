"""The worker loop both nodes run: one step after another until told to stop, idle when there is
nothing to do, every failing step counted against the worker's health."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from uploader.health import Component, describe

log = logging.getLogger(__name__)


def worker_thread(
    name: str,
    step: Callable[[], bool],
    stop: threading.Event,
    part: Component,
    idle_s: float,
) -> threading.Thread:
    """A thread (not started) that calls ``step()`` until ``stop`` is set.

    ``step`` returns True when it did something (the next one follows at once) and False when
    there was nothing to do (the loop waits ``idle_s``). An exception is logged, reported on
    ``part`` (a step that keeps failing turns the node unhealthy) and the loop goes on; the
    step in progress when ``stop`` is set finishes first.
    """

    def loop() -> None:
        while not stop.is_set():
            try:
                busy = step()
            except Exception as exc:  # counted: a step that keeps failing turns the node unhealthy
                log.exception("%s step failed", name)
                part.failed(describe(exc))
                busy = False
            else:
                part.beat()
            if not busy:
                stop.wait(idle_s)

    return threading.Thread(target=loop, name=name, daemon=True)
