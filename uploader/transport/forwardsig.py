"""The forwarding key: what proves an instance or a manifest came from the identifiable node.

Both nodes hold the same secret (a Docker secret file; never the site key, which stays on the
identifiable node). The forwarder sends, with each instance (a header of its multipart part) and
with each manifest (a request header), ``HMAC-SHA256(key, kind || bytes)`` in hex. The bytes are
the whole file as written by the identifiable node, so the tag covers every UID in it (and every
other value): an instance whose UIDs the identifiable node did not write, or that was changed on
the way, has no valid tag and is refused. Checking is a constant-time compare. A status request
(the identifiable node asking what the anonymised node holds of a study, a GET) carries the tag
of the de-identified Study Instance UID it asks about.

The same key gives the anonymised node a keyed digest for refused instances: a refusal is
recorded and logged by ``uid_digest`` of the SOP Instance UID (which may embed a date), never by
the UID; staff on the identifiable node, who hold the key, can match it to their instance.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from uploader.errors import ConfigError

HEADER = "X-Forward-Signature"
_INSTANCE, _MANIFEST, _UID = b"sdu-instance-v1\x00", b"sdu-manifest-v1\x00", b"sdu-uid-v1\x00"
_STATUS = b"sdu-status-v1\x00"
MIN_KEY_CHARS = 32


class ForwardKey:
    """Signs and checks what one node forwards to the other."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"the forwarding key must be at least {MIN_KEY_CHARS} characters")
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> ForwardKey:
        """Read the key from its secret file (stripped text; ``deploy/setup.sh`` writes 64 hex).

        Raises:
            ConfigError: unreadable, empty or too short (the value is never shown).
        """
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the forwarding key") from exc
        if len(text) < MIN_KEY_CHARS:
            raise ConfigError(
                f"{path}: the forwarding key must be at least {MIN_KEY_CHARS} characters"
            )
        return cls(text.encode())

    def _tag(self, kind: bytes, data: bytes | memoryview) -> str:
        mac = hmac.new(self._key, kind, hashlib.sha256)
        mac.update(data)
        return mac.hexdigest()

    def sign_instance(self, data: bytes | memoryview) -> str:
        """The tag sent with an instance (its whole file)."""
        return self._tag(_INSTANCE, data)

    def sign_manifest(self, body: bytes) -> str:
        """The tag sent with a manifest (its exact JSON body)."""
        return self._tag(_MANIFEST, body)

    def instance_signed(self, data: bytes | memoryview, tag: str) -> bool:
        """True if ``tag`` is this key's tag for the instance."""
        return hmac.compare_digest(self.sign_instance(data), tag.strip().lower())

    def manifest_signed(self, body: bytes, tag: str) -> bool:
        """True if ``tag`` is this key's tag for the manifest body."""
        return hmac.compare_digest(self.sign_manifest(body), tag.strip().lower())

    def sign_status(self, study_uid: str) -> str:
        """The tag sent with a status request (a GET: it covers the de-identified study UID
        asked about)."""
        return self._tag(_STATUS, study_uid.encode("utf-8", "replace"))

    def status_signed(self, study_uid: str, tag: str) -> bool:
        """True if ``tag`` is this key's tag for a status request about ``study_uid``."""
        return hmac.compare_digest(self.sign_status(study_uid), tag.strip().lower())

    def uid_digest(self, uid: str) -> str:
        """A keyed digest of a UID, to record a refused instance by (20 hex digits)."""
        return "uid-" + self._tag(_UID, uid.encode("utf-8", "replace"))[:20]
