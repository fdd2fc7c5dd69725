"""Keyed pseudonyms: subject and session IDs, UIDs and the per-patient date shift.

Every pseudonym is ``HMAC-SHA256(site key, domain || value)``: deterministic under one key (a
study sent twice, or a late series, gets the same identifiers) and, without the key, neither
reversible nor open to brute force over the small space of NHS numbers or MRNs. A bare hash
is. Each kind of pseudonym has its own domain string so that two kinds never collide.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from uploader.errors import ConfigError

KEY_BYTES = 32
_MIN_KEY_BYTES = 16
#: Shifts fall 1 to 10 years into the past, so a shifted date never equals the real one.
SHIFT_MIN_DAYS = 366
SHIFT_SPAN_DAYS = 3287
_PLACEHOLDER = re.compile(r"\{(\w+)(?::(\d+))?\}")
SUBJECT_FIELDS = frozenset({"protocol", "site", "hash"})
SESSION_FIELDS = frozenset({"protocol", "site", "subject", "hash"})


def generate_key(path: Path) -> bytes:
    """Write a new random site key to ``path`` (mode 0600, hex) and return it.

    Raises:
        ConfigError: the file exists already (a key is never overwritten) or cannot be written.
    """
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{path}: a key file exists already; it is never overwritten") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the key file: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def read_key(path: Path) -> bytes:
    """Read a site key file: hex text (as ``generate_key`` writes) or raw bytes.

    Raises:
        ConfigError: missing, unreadable, or shorter than 128 bits. The key is never echoed.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the key file: {exc.strerror}") from exc
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigError(f"{path}: the key is too short (at least {_MIN_KEY_BYTES} bytes needed)")
    return key


def check_pattern(pattern: str, allowed: frozenset[str], what: str) -> None:
    """Raise ConfigError if a pseudonym pattern uses a placeholder that is not allowed."""
    for m in _PLACEHOLDER.finditer(pattern):
        if m.group(1) not in allowed:
            names = ", ".join(sorted(allowed))
            raise ConfigError(f"{what} pattern {pattern!r}: unknown {{{m.group(1)}}} (use {names})")
    if "{hash" not in pattern:
        raise ConfigError(f"{what} pattern {pattern!r} needs a {{hash:N}} part to be unique")


class Pseudonymiser:
    """The keyed pseudonym functions of one site. Pass one in; tests pin the key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._uids: dict[str, str] = {}

    def digest(self, domain: str, value: str) -> bytes:
        """Return HMAC-SHA256 of ``value`` under the site key, separated by ``domain``."""
        msg = domain.encode() + b"\x00" + value.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def code(self, domain: str, value: str, length: int) -> str:
        """Return ``length`` characters of base32 (A-Z, 2-7) of the keyed digest."""
        text = base64.b32encode(self.digest(domain, value)).decode("ascii")
        return text[: max(1, min(length, len(text)))]

    def uid(self, original: str) -> str:
        """Return the ``2.25.`` UID for an original UID: a version-8 UUID from the keyed digest."""
        try:
            return self._uids[original]
        except KeyError:
            pass
        raw = bytearray(self.digest("uid", original)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # UUID version 8 (RFC 9562: custom)
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        new = "2.25." + str(int.from_bytes(raw, "big"))
        if len(self._uids) > 100_000:
            self._uids.clear()
        self._uids[original] = new
        return new

    def date_shift_days(self, patient_key: str) -> int:
        """Return the patient's date shift in days (negative): the same for all their studies."""
        n = int.from_bytes(self.digest("dateshift", patient_key)[:8], "big")
        return -(SHIFT_MIN_DAYS + n % SHIFT_SPAN_DAYS)

    def subject_id(
        self,
        patient_key: str,
        pattern: str,
        protocol: str = "",
        site: str = "",
        avoid: Callable[[str], bool] | None = None,
    ) -> str:
        """Return the subject ID for a patient from the protocol's pattern.

        ``avoid``: a hash code it rejects (one that spells a name part of the patient, say) is
        replaced by the next keyed one: the pseudonym is chosen, the patient never refused.
        """
        return self._fill(pattern, "subject", patient_key, avoid, protocol=protocol, site=site)

    def session_label(
        self,
        study_key: str,
        pattern: str,
        avoid: Callable[[str], bool] | None = None,
        **fields: str,
    ) -> str:
        """Return the session label for a study from the protocol's pattern."""
        return self._fill(pattern, "session", study_key, avoid, **fields)

    def _fill(
        self,
        pattern: str,
        domain: str,
        value: str,
        avoid: Callable[[str], bool] | None,
        **fields: str,
    ) -> str:
        def sub(m: re.Match[str]) -> str:
            name, width = m.group(1), m.group(2)
            if name == "hash":
                code = self.code(domain, value, int(width or 8))
                for attempt in range(1, 64):
                    if avoid is None or not avoid(code):
                        break
                    code = self.code(domain, f"{value}\x00{attempt}", int(width or 8))
                return code
            return fields.get(name, "")

        return _PLACEHOLDER.sub(sub, pattern)
