"""The pages' frame: a FastAPI app with sign-in, sessions, CSRF and strict security headers.

A node builds a ``Site`` and adds its pages with ``site.page`` (GET, signed in) and
``site.action`` (POST, signed in, CSRF token checked before the handler runs, so no handler can
forget it). Handlers are plain functions run in the thread pool: reading files and drawing
images never holds up the event loop. Templates are Jinja2 with autoescaping on for every
file: a DICOM value is always text. Static files (htmx, our CSS and script) come from the
package: no CDN, no build step.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from uploader.hardening import describe
from uploader.web.accounts import Accounts, Session, SignInRefused
from uploader.web.roles import Role

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
HTMX = "htmx-2.0.11.min.js"
MAX_FORM = 64 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}
#: Characters a value must not bring into a page: C0 controls but tab and line ends, and the
#: direction marks, embeddings, overrides and isolates that would show the text after them (a
#: patient ID beside a name) in another order than it has.
HIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: A row id in a path: ASCII digits, no more than SQLite's integers hold.
_ROW_ID = re.compile(r"[0-9]{1,18}")
Handler = Callable[..., Response]  # plain functions: run in the thread pool, off the event loop


def shown(value: Any) -> Any:
    """What a template prints of a value: text with its hidden characters (``HIDDEN``) shown as
    U+FFFD (every ``{{ }}`` goes through this before it is escaped)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return HIDDEN.sub("\ufffd", value)
    return value


def row_id(text: str) -> int | None:
    """A row id given in a path (``/studies/12``), or None for anything else (words, other
    scripts' digits, numbers too large for the store)."""
    return int(text) if _ROW_ID.fullmatch(text) else None


class SignInNeeded(Exception):  # noqa: N818 - control flow to the sign-in page
    """No live session: go to the sign-in page."""


class Forbidden(Exception):  # noqa: N818
    """Signed in, but not allowed (role, or a missing or wrong CSRF token)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Headers(BaseHTTPMiddleware):
    """Security headers on every response; pages and images are never cached."""

    def __init__(self, app: Any, tls: bool) -> None:
        super().__init__(app)
        self.tls = tls

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        h = response.headers
        h["Content-Security-Policy"] = CSP
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "no-referrer"
        h["X-Content-Type-Options"] = "nosniff"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        if not request.url.path.startswith("/static/"):
            h["Cache-Control"] = "no-store"
        if self.tls:
            h["Strict-Transport-Security"] = "max-age=31536000"
        return response


class Site:
    """The staff pages of one node."""

    def __init__(
        self, accounts: Accounts, *, title: str, templates: Path | None, tls: bool = True
    ) -> None:
        self.accounts, self.title, self.tls = accounts, title, tls
        self.on_stop: list[Callable[[], None]] = []  # what the pages run in the background
        self.cookie = "__Host-session" if tls else "session"
        self.signin_cookie = "__Host-signin" if tls else "signin"
        loaders = [FileSystemLoader(str(templates))] if templates else []
        self.env = Environment(
            loader=ChoiceLoader([*loaders, FileSystemLoader(str(HERE / "templates"))]),
            autoescape=True,  # every template, whatever its name: DICOM values are text
            finalize=shown,
        )
        self.env.globals.update(htmx=HTMX, site_title=title)
        self.app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
        self.app.add_middleware(_Headers, tls=tls)
        self.app.add_exception_handler(SignInNeeded, self._to_sign_in)  # type: ignore[arg-type]
        self.app.add_exception_handler(Forbidden, self._forbidden)  # type: ignore[arg-type]
        self._routes()

    def stop(self) -> None:
        """Stop what the pages started in the background (after their server has stopped)."""
        for stop in self.on_stop:
            stop()

    # -- what pages use ---------------------------------------------------------------------
    def session(self, request: Request, role: Role | None = None) -> Session:
        """The request's live session, or SignInNeeded; Forbidden if the role is not enough."""
        found = self.accounts.session(request.cookies.get(self.cookie, ""))
        if found is None:
            raise SignInNeeded
        if role is Role.ADMIN and found.user.role is not Role.ADMIN:
            raise Forbidden("this page is for administrators")
        return found

    def render(
        self, name: str, session: Session | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A rendered template (autoescaped)."""
        html = self.env.get_template(name).render(session=session, **context)
        return HTMLResponse(html, status_code=status)

    def page(self, path: str, role: Role | None = None) -> Callable[[Handler], Handler]:
        """Register a GET page for signed-in users; the handler gets (request, session, ...)."""

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                session = await run_in_threadpool(self.session, request, role)
                return await self._run(path, handler, request, session, **request.path_params)

            self.app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
            return handler

        return register

    def action(
        self, path: str, role: Role | None = None, max_form: int = MAX_FORM
    ) -> Callable[[Handler], Handler]:
        """Register a state-changing POST: signed in, CSRF token checked, form parsed first
        (at most ``max_form`` bytes, read only once the session is known)."""

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                session = await run_in_threadpool(self.session, request, role)
                form = await _form(request, max_form)
                given = form.get("csrf") or request.headers.get("x-csrf-token", "")
                if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                    raise Forbidden("the form's security token is missing or stale: reload")
                return await self._run(path, handler, request, session, form, **request.path_params)

            self.app.add_api_route(path, endpoint, methods=["POST"], include_in_schema=False)
            return handler

        return register

    async def _run(
        self,
        path: str,
        handler: Handler,
        request: Request,
        session: Session,
        *args: Any,
        **params: Any,
    ) -> Response:
        """Run a handler off the event loop. A failure is logged by its kind and place only
        (its message, or the server's traceback, could quote a DICOM value) and shown as a
        page that says no more."""
        try:
            found: Response = await run_in_threadpool(handler, request, session, *args, **params)
        except (SignInNeeded, Forbidden):
            raise
        except Exception as exc:  # anything a hostile file or request can provoke
            log.error("the page %s %s failed: %s", request.method, path, describe(exc))  # noqa: TRY400 - no values
            message = "This page failed; the node's log says where (without any value)."
            return self.render("error.html", session, 500, message=message)
        return found

    # -- sign-in, sign-out, static ----------------------------------------------------------
    def _routes(self) -> None:
        app = self.app

        @app.get("/health", include_in_schema=False)
        def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/static/{name}", include_in_schema=False)
        def static(name: str) -> Response:
            path = HERE / "static" / name
            if "/" in name or name.startswith(".") or not path.is_file():
                return Response("not found", status_code=404, media_type="text/plain")
            kind = _STATIC_TYPES.get(path.suffix, "application/octet-stream")
            headers = {"Cache-Control": "public, max-age=86400"}
            return Response(path.read_bytes(), media_type=kind, headers=headers)

        @app.get("/signin", include_in_schema=False)
        def sign_in_page(request: Request, next: str = "/") -> Response:
            return self._sign_in_form(_safe_next(next), "")

        @app.post("/signin", include_in_schema=False)
        async def sign_in(request: Request) -> Response:
            form = await _form(request)
            given, pre = form.get("csrf", ""), request.cookies.get(self.signin_cookie, "")
            nxt = _safe_next(form.get("next", "/"))
            if not pre or not hmac.compare_digest(given.encode(), pre.encode()):
                return self._sign_in_form(nxt, "The form expired: please sign in again.", 403)
            address = request.client.host if request.client else "-"
            try:
                token, _session = self.accounts.sign_in(
                    form.get("name", ""), form.get("password", ""), address
                )
            except SignInRefused as exc:
                if exc.throttled:
                    message = "Too many failed sign-ins: wait a few minutes and try again."
                    return self._sign_in_form(nxt, message, 429)
                return self._sign_in_form(nxt, "Wrong name or password.", 401)
            response = RedirectResponse(nxt, status_code=303)
            self._set_cookie(response, self.cookie, token)
            response.delete_cookie(self.signin_cookie, path="/", secure=self.tls, httponly=True)
            return response

        @app.post("/signout", include_in_schema=False)
        async def sign_out(request: Request) -> Response:
            token = request.cookies.get(self.cookie, "")
            session = self.accounts.session(token)
            form = await _form(request)
            if session is not None:
                if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
                    raise Forbidden("the form's security token is missing or stale: reload")
                self.accounts.revoke(token)
            response = RedirectResponse("/signin", status_code=303)
            response.delete_cookie(self.cookie, path="/", secure=self.tls, httponly=True)
            return response

    def _sign_in_form(self, nxt: str, message: str, status: int = 200) -> Response:
        pre = secrets.token_urlsafe(24)
        response = self.render("signin.html", None, status, next=nxt, csrf=pre, message=message)
        self._set_cookie(response, self.signin_cookie, pre)
        return response

    def _set_cookie(self, response: Response, name: str, value: str) -> None:
        response.set_cookie(
            name, value, path="/", secure=self.tls, httponly=True, samesite="strict"
        )

    async def _to_sign_in(self, request: Request, _exc: SignInNeeded) -> Response:
        target = "/signin?next=" + quote(request.url.path, safe="/")
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.method != "GET":
            return self.render("error.html", None, 401, message="Please sign in again.")
        return RedirectResponse(target, status_code=303)

    async def _forbidden(self, request: Request, exc: Forbidden) -> Response:
        session = self.accounts.session(request.cookies.get(self.cookie, ""))
        return self.render("error.html", session, 403, message=exc.why)


async def _form(request: Request, limit: int = MAX_FORM) -> dict[str, str]:
    """An urlencoded form's fields (first value each); bounded in size."""
    chunks, size = [], 0
    async for chunk in request.stream():  # read no more than ``limit`` of whatever is sent
        size += len(chunk)
        if size > limit:
            raise Forbidden(f"the form is too large (at most {limit // 1024} KiB)")
        chunks.append(chunk)
    body = b"".join(chunks)
    kind = request.headers.get("content-type", "")
    if body and not kind.startswith("application/x-www-form-urlencoded"):
        raise Forbidden("expected a form")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _safe_next(target: str) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
