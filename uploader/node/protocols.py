"""The trial protocols a node serves, loaded from its ``protocols_dir`` the same way on both."""

from __future__ import annotations

from pathlib import Path

from uploader.errors import ConfigError
from uploader.protocols.loader import load_protocol
from uploader.protocols.model import Protocol


def load_protocols(folder: Path) -> dict[str, tuple[Protocol, Path]]:
    """Every ``*.yaml``/``*.yml`` protocol in ``folder`` by its ID, with the file it came from
    (none when the folder does not exist).

    Raises:
        ConfigError: a protocol is invalid (its file and line are named), or two files define
            the same ID (which one would judge a study, or name its trial, is then ambiguous).
    """
    found: dict[str, tuple[Protocol, Path]] = {}
    for path in sorted(folder.glob("*.y*ml")) if folder.exists() else []:
        protocol = load_protocol(path)
        if protocol.id in found:
            first = found[protocol.id][1].name
            raise ConfigError(f"{path}: protocol {protocol.id} is also defined in {first}")
        found[protocol.id] = (protocol, path)
    return found
