"""A node's YAML configuration file and its secrets, read the same way by both nodes.

Every error is one line naming the file (and the key); a secret's value never appears in one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from uploader.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_mapping(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (an empty file is an empty mapping).

    Raises:
        ConfigError: unreadable, not YAML, or not a mapping.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration is a YAML mapping of sections")
    return data


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Load a YAML file into a pydantic model; every error is one line naming file and key.

    Raises:
        ConfigError: unreadable, not YAML, or invalid.
    """
    data = read_mapping(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors()]
        if len(problems) == 1:
            raise ConfigError(f"{path}: {problems[0]}") from exc
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{path}: {len(problems)} problems:\n{lines}") from exc


def _problem(err: Any) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown setting (the node's guide in docs/ lists them all)"
    return f"{where}: {msg}"


def read_secret(path: Path | None, what: str) -> str:
    """Read a secret from a file (a Docker secret); the value never appears in errors.

    Raises:
        ConfigError: no file configured, unreadable, or empty.
    """
    if path is None:
        raise ConfigError(f"{what}: no secret file is configured")
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{path}: the {what} file is empty")
    return value
