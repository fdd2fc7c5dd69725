"""The national data opt-out list: a deny list, or the NDOO response file used as an allow list.

NHS numbers are compared as digits only ("943 476 5919" and "9434765919" are the same). The file
is re-read when it changes. No number is ever logged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from uploader.errors import ConfigError

log = logging.getLogger(__name__)


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


class OptOut:
    """Decides whether a patient may be sent."""

    def __init__(self, path: Path | None, mode: str = "deny") -> None:
        self.path = path
        self.mode = mode
        self._mtime: float | None = None
        self._numbers: frozenset[str] = frozenset()
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the opt-out list: {exc.strerror}") from exc
        self._numbers = frozenset(d for d in (_digits(line) for line in lines) if d)
        self._mtime = mtime
        log.info("opt-out list loaded: %d number(s), %s mode", len(self._numbers), self.mode)

    def blocked(self, patient_ids: list[str]) -> bool:
        """True if this patient must not be sent (re-reading the file if it changed).

        Raises:
            ConfigError: the configured list cannot be read (fail closed: the caller waits).
        """
        if self.path is None:
            return False
        self._load()
        ids = {d for d in (_digits(p) for p in patient_ids) if d}
        if self.mode == "deny":
            return bool(ids & self._numbers)
        return not (ids & self._numbers)
