"""Admin pages: the users of the pages."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from uploader.store.db import Store
from uploader.web.accounts import Role, Session
from uploader.web.site import Site


def add(site: Site, store: Store) -> None:
    """The users page (admins only)."""

    @site.page("/users", role=Role.ADMIN)
    def users(request: Request, session: Session) -> Response:
        return site.render("users.html", session, users=site.accounts.users())
