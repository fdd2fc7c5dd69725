"""The one reader of the data tables packaged with the code (Annex E, IOD types, TG-263, the
pattern table, the name lists)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from uploader.errors import ConfigError


def packaged_json(package: str, path: str, what: str) -> Any:
    """Return the JSON file ``path`` of ``package``, parsed.

    Raises:
        ConfigError: missing or unreadable, naming ``what`` (a broken installation).
    """
    try:
        return json.loads(resources.files(package).joinpath(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the packaged {what} cannot be read: {exc}") from exc
