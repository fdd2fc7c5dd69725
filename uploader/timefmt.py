"""Times as people read them in command output: ISO 8601, UTC, to the second."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(epoch_s: float) -> str:
    """``1733090000.4`` -> ``2024-12-01T21:53:20Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
