"""Staff roles (a module of its own: the command line names them without loading the accounts)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a signed-in user may do: reviewers decide on studies; admins also manage and audit."""

    REVIEWER = "reviewer"
    ADMIN = "admin"
