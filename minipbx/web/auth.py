"""Who is asking: API bearer tokens, console session cookies, CSRF, logins.

Two kinds of credential reach the same :class:`Principal`:

- ``Authorization: Bearer <token>``: an API token (``minipbx token create``, or
  ``POST /api/v1/tokens``; only its SHA-256 is stored) or a session token from
  ``POST /api/v1/auth/login`` (see :mod:`minipbx.web.sessions`). Bearer requests need no
  CSRF token: a browser never adds that header by itself.
- the console's session cookie (:data:`COOKIE`: signed, HttpOnly, SameSite=Lax, Secure
  over HTTPS). A state-changing request carrying it must also carry the session's CSRF
  token, in the ``X-CSRF-Token`` header (scripts, API calls) or the ``csrf_token`` form
  field (console forms); :class:`CsrfMiddleware` also refuses it when its Origin or
  Referer names another site.

Roles: a system admin (``tenant_id`` None) sees every tenant, a tenant admin only its
own. Handlers check the tenant of every object they touch (:mod:`minipbx.web.api.crud`).

For the console (``minipbx.web.console``): :func:`console_admin` is the dependency of every
page (no session: :class:`LoginRequiredError`, which the app turns into a redirect to
``/login?next=...``), :func:`login` checks a username and password with rate limiting,
:func:`start_session` / :func:`end_session` set and clear the cookie and
:func:`csrf_for` gives the token to put in forms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from minipbx.store import AdminRecord, NotFoundError, hash_token
from minipbx.web import sessions
from minipbx.web.context import WebContext

log = logging.getLogger("minipbx.web")

COOKIE = "minipbx_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOKEN_TOUCH_EVERY = 60.0  # seconds between last_used_at updates of one API token
_BEARER = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated admin. ``via``: ``token`` (API token), ``bearer`` (session token in
    the Authorization header) or ``cookie``."""

    admin_id: int
    username: str
    tenant_id: int | None
    via: str
    token_id: int | None = None
    session: sessions.Session | None = None

    @property
    def is_system(self) -> bool:
        """True for a system admin (every tenant)."""
        return self.tenant_id is None


class LoginRequiredError(Exception):
    """A console page was asked for without a valid session (the app redirects to login)."""

    def __init__(self, next_url: str) -> None:
        super().__init__("login required")
        self.next_url = next_url


class LoginFailedError(Exception):
    """Wrong username or password (or a disabled admin): one message for all."""


class TooManyAttemptsError(Exception):
    """Login refused by the rate limiter; ``retry_after`` seconds to wait."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


def get_ctx(request: Request) -> WebContext:
    """The :class:`WebContext` of the application serving ``request``."""
    ctx: WebContext = request.app.state.ctx
    return ctx


def client_ip(request: Request) -> str:
    """The peer address of the request (the proxy's, unless uvicorn trusts it)."""
    return request.client.host if request.client is not None else "unknown"


def is_secure(request: Request) -> bool:
    """True when the request came over HTTPS (directly or through a trusted proxy)."""
    return request.scope.get("scheme") == "https"


# --- resolving credentials -----------------------------------------------------------------


def _principal(admin: AdminRecord, via: str, **extra: object) -> Principal:
    return Principal(admin.id, admin.username, admin.tenant_id, via, **extra)  # type: ignore[arg-type]


async def _admin(ctx: WebContext, admin_id: int) -> AdminRecord | None:
    try:
        admin = await ctx.admins.get(admin_id)
    except NotFoundError:
        return None
    return admin if admin.enabled else None


async def session_principal(ctx: WebContext, token: str, via: str) -> Principal | None:
    """The admin of a valid session token (signature, expiry, admin enabled, password
    unchanged since it was issued), or None."""
    session = sessions.verify(ctx.secret, token, ctx.clock())
    if session is None:
        return None
    admin = await _admin(ctx, session.admin_id)
    if admin is None or sessions.fingerprint(admin.password_hash) != session.password:
        return None
    return _principal(admin, via, session=session)


async def token_principal(ctx: WebContext, token: str) -> Principal | None:
    """The admin owning an API token, or None (unknown token, disabled admin)."""
    if len(token) > 512:
        return None
    record = await ctx.admins.find_token_by_hash(hash_token(token))
    if record is None:
        return None
    admin = await _admin(ctx, record.admin_id)
    if admin is None:
        return None
    now = ctx.clock()
    if now - ctx.token_touched.get(record.id, 0.0) >= TOKEN_TOUCH_EVERY:
        ctx.token_touched[record.id] = now
        try:
            await ctx.admins.touch_token(record.id)
        except NotFoundError:
            return None  # revoked meanwhile
    return _principal(admin, "token", token_id=record.id)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise HTTPException(401, "expected Authorization: Bearer <token>", _BEARER)
    return value.strip()


async def _csrf_given(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def _check_csrf(request: Request, principal: Principal) -> None:
    if request.method not in UNSAFE_METHODS or principal.session is None:
        return
    ctx = get_ctx(request)
    if not sessions.csrf_ok(ctx.secret, principal.session, await _csrf_given(request)):
        log.warning(
            "event=web_csrf_refused ip=%s admin=%s path=%s",
            client_ip(request),
            principal.username,
            request.url.path,
        )
        raise HTTPException(403, f"missing or wrong CSRF token ({CSRF_HEADER} header)")


async def _cookie_principal(request: Request) -> Principal | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    principal = await session_principal(get_ctx(request), cookie, "cookie")
    if principal is not None:
        await _check_csrf(request, principal)
    return principal


BEARER_SCHEME = HTTPBearer(
    auto_error=False,
    description="An API token (minipbx token create, POST /api/v1/tokens) or the session "
    "token of POST /api/v1/auth/login.",
)


async def api_admin(
    request: Request, _: Annotated[object, Security(BEARER_SCHEME)] = None
) -> Principal:
    """Dependency of every API endpoint: the admin behind the request, or 401.

    (``BEARER_SCHEME`` only declares the scheme in the OpenAPI document; the header is
    read here, so a malformed one gets a message of its own.)"""
    ctx = get_ctx(request)
    token = _bearer(request)
    if token is not None:
        if token.startswith(sessions.PREFIX):
            principal = await session_principal(ctx, token, "bearer")
        else:
            principal = await token_principal(ctx, token)
        if principal is None:
            log.warning("event=web_bad_token ip=%s path=%s", client_ip(request), request.url.path)
            raise HTTPException(401, "invalid or expired token", _BEARER)
        return principal
    principal = await _cookie_principal(request)
    if principal is None:
        raise HTTPException(401, "not authenticated", _BEARER)
    return principal


async def system_admin(principal: Annotated[Principal, Depends(api_admin)]) -> Principal:
    """Dependency of system-only endpoints: 403 for a tenant admin."""
    if not principal.is_system:
        raise HTTPException(403, "only a system admin may do this")
    return principal


async def console_admin(request: Request) -> Principal:
    """Dependency of console pages: the session's admin; :class:`LoginRequiredError` without
    one; 403 for a state-changing request without the session's CSRF token."""
    principal = await _cookie_principal(request)
    if principal is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequiredError(target)
    return principal


Admin = Annotated[Principal, Depends(api_admin)]
SystemAdmin = Annotated[Principal, Depends(system_admin)]
ConsoleAdmin = Annotated[Principal, Depends(console_admin)]
Ctx = Annotated[WebContext, Depends(get_ctx)]


# --- logging in and out --------------------------------------------------------------------


async def login(ctx: WebContext, username: str, password: str, ip: str) -> AdminRecord:
    """Check a username and password; the admin, or :class:`LoginFailedError` /
    :class:`TooManyAttemptsError` (failures counted per IP and per username)."""
    wait = ctx.limiter.retry_after(ip, username)
    if wait:
        log.warning("event=web_login_throttled ip=%s username=%s", ip, username[:64])
        raise TooManyAttemptsError(wait)
    admin = await ctx.admins.get_by_username(username) if username.strip() else None
    usable = admin is not None and admin.enabled
    ok = await ctx.passwords.verify(admin.password_hash if usable and admin else None, password)
    if not ok or admin is None:
        ctx.limiter.failed(ip, username)
        log.warning("event=web_login_failed ip=%s username=%s", ip, username[:64])
        raise LoginFailedError("wrong username or password")
    ctx.limiter.succeeded(username)
    await ctx.admins.touch_login(admin.username)
    log.info("event=web_login ip=%s username=%s", ip, admin.username)
    return admin


def new_session(ctx: WebContext, admin: AdminRecord) -> str:
    """A session token for ``admin`` (cookie value or bearer token)."""
    return sessions.issue(
        ctx.secret, admin.id, admin.password_hash, ctx.clock(), ctx.session_seconds
    )


def start_session(ctx: WebContext, request: Request, response: Response, admin: AdminRecord) -> str:
    """Set the session cookie on ``response``; returns the session's CSRF token."""
    token = new_session(ctx, admin)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ctx.session_seconds),
        path="/",
        secure=is_secure(request),
        httponly=True,
        samesite="lax",
    )
    session = sessions.verify(ctx.secret, token, ctx.clock())
    assert session is not None
    return sessions.csrf_token(ctx.secret, session)


def end_session(request: Request, response: Response) -> None:
    """Clear the session cookie."""
    response.delete_cookie(
        COOKIE, path="/", secure=is_secure(request), httponly=True, samesite="lax"
    )


def csrf_for(ctx: WebContext, principal: Principal) -> str:
    """The CSRF token to put in the forms of ``principal``'s pages ("" without a session)."""
    if principal.session is None:
        return ""
    return sessions.csrf_token(ctx.secret, principal.session)


# --- CSRF: cross-site requests carrying the cookie -----------------------------------------


def _same_origin(source: str, host: str) -> bool:
    try:
        return urlsplit(source).netloc.lower() == host.lower()
    except ValueError:
        return False


class CsrfMiddleware:
    """Refuses (403) a state-changing request that carries the session cookie, no bearer
    token, and an Origin (else Referer) of another host: a browser on another site.

    The per-session CSRF token (checked by :func:`api_admin` / :func:`console_admin`) is
    the main defence; this one needs no body and catches what reaches handlers without it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            has_cookie = f"{COOKIE}=" in headers.get("cookie", "")
            bearer = headers.get("authorization", "").lower().startswith("bearer ")
            source = headers.get("origin") or headers.get("referer")
            host = headers.get("host", "")
            if has_cookie and not bearer and source and not _same_origin(source, host):
                client = scope.get("client")
                log.warning(
                    "event=web_cross_site_refused ip=%s origin=%s",
                    client[0] if client else "unknown",
                    source[:200],
                )
                await _forbidden(send)
                return
        await self.app(scope, receive, send)


async def _forbidden(send: Send) -> None:
    body = b'{"detail":"cross-site request refused"}'
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
