"""Check a node's configuration as a whole before anything is created on disk.

A start that fails leaves nothing behind, and it names every problem at once: a collector runs
each check, keeps the one-line message of each ConfigError, and raises one ConfigError listing
them all (one per line) if there were any.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from uploader.errors import ConfigError

T = TypeVar("T")


class Problems:
    """Collects configuration problems; ``raise_if_any`` reports them together."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def check(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn``; keep its ConfigError (if any) and return None in that case."""
        try:
            return fn()
        except ConfigError as exc:
            self.items.append(str(exc))
            return None

    def readable(self, path: Path | None, what: str) -> None:
        """A file the node reads must exist and be readable by the node's user."""
        if path is None:
            return
        if not path.is_file():
            self.items.append(f"{path}: the {what} does not exist")
        elif not os.access(path, os.R_OK):
            uid = os.getuid()
            self.items.append(f"{path}: the {what} is not readable by this user (uid {uid})")

    def raise_if_any(self) -> None:
        """Raises:
        ConfigError: one message listing every problem found (nothing was created).
        """
        if len(self.items) == 1:
            raise ConfigError(self.items[0])
        if self.items:
            lines = "\n".join(f"  - {p}" for p in self.items)
            raise ConfigError(f"{self.source}: {len(self.items)} problems:\n{lines}")
