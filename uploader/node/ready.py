"""The ready file: a node writes ``node.ready`` in its data folder once every part is up, and
removes it when it stops. Tests, the demo and ``uploader status`` read it; it holds no secret
and no patient data (the process ID and the ports)."""

from __future__ import annotations

import json
from pathlib import Path

from uploader.store.spool import durable_write

READY_FILE = "node.ready"


def announce(data_dir: Path, info: dict[str, object]) -> None:
    """Write the ready file (durably: a reader never sees half of it)."""
    durable_write(data_dir / READY_FILE, json.dumps(info).encode())


def withdraw(data_dir: Path) -> None:
    """Remove the ready file (the node is stopping, or never got ready)."""
    (data_dir / READY_FILE).unlink(missing_ok=True)


def is_ready(data_dir: Path) -> bool:
    """True while a node announces itself ready on ``data_dir``."""
    return (data_dir / READY_FILE).exists()
