"""Logging in through the API, who am I, changing one's own password, logging out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field

from minipbx.web import sessions
from minipbx.web.accounts import set_admin_password
from minipbx.web.api.schemas import ApiModel, OutModel, Text, wall
from minipbx.web.auth import (
    Admin,
    Ctx,
    LoginFailedError,
    Principal,
    client_ip,
    csrf_for,
    end_session,
    login,
    new_session,
)

router = APIRouter(prefix="/auth", tags=["auth"])
Secret = Annotated[Text, Field(max_length=1024)]


class Credentials(ApiModel):
    """A username and password."""

    username: Annotated[Text, Field(max_length=255)]
    password: Secret


class Me(OutModel):
    """The admin making the request."""

    id: int
    username: str
    tenant_id: int | None
    role: Literal["system", "tenant"]
    via: str
    csrf_token: str


class LoginOut(OutModel):
    """A session token: send it as ``Authorization: Bearer <token>`` until ``expires_at``."""

    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    admin: Me


class PasswordChange(ApiModel):
    """The current password and the new one (8 to 256 characters)."""

    current_password: Secret
    new_password: Secret


def _me(ctx: Any, principal: Principal) -> Me:
    return Me(
        id=principal.admin_id,
        username=principal.username,
        tenant_id=principal.tenant_id,
        role="system" if principal.is_system else "tenant",
        via=principal.via,
        csrf_token=csrf_for(ctx, principal),
    )


@router.post(
    "/login",
    response_model=LoginOut,
    responses={401: {"description": "Wrong username or password"}, 429: {"description": "Wait"}},
)
async def log_in(ctx: Ctx, request: Request, body: Credentials) -> Any:
    """Exchange a username and password for a session token (rate-limited per IP and per
    username: 5 failures in 5 minutes, then 429 with Retry-After)."""
    try:
        admin = await login(ctx, body.username, body.password, client_ip(request))
    except LoginFailedError as exc:
        raise HTTPException(401, str(exc)) from None
    token = new_session(ctx, admin)
    session = sessions.verify(ctx.secret, token, ctx.clock())
    assert session is not None
    principal = Principal(admin.id, admin.username, admin.tenant_id, "bearer", session=session)
    return LoginOut(token=token, expires_at=wall(session.expires_at), admin=_me(ctx, principal))  # type: ignore[arg-type]


@router.get("/me", response_model=Me)
async def me(ctx: Ctx, principal: Admin) -> Any:
    """Who the credentials belong to (and the CSRF token of a cookie session)."""
    return _me(ctx, principal)


@router.post("/password", status_code=204, responses={401: {"description": "Wrong password"}})
async def change_password(
    ctx: Ctx, principal: Admin, request: Request, body: PasswordChange
) -> Response:
    """Change one's own password; every session of the account ends (API tokens stay)."""
    try:
        await login(ctx, principal.username, body.current_password, client_ip(request))
    except LoginFailedError:
        raise HTTPException(401, "wrong current password") from None
    await set_admin_password(ctx.admins, ctx.passwords, principal.username, body.new_password)
    return Response(status_code=204)


@router.post("/logout", status_code=204)
async def log_out(request: Request) -> Response:
    """Clear the console's session cookie (a bearer session token just expires)."""
    response = Response(status_code=204)
    end_session(request, response)
    return response
