"""Logging in and out of the console.

The login form has no session yet, so its CSRF token is a random value also set as a
short-lived cookie (double submit): a form posted from another site cannot know it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from minipbx.web.auth import (
    ConsoleAdmin,
    Ctx,
    LoginFailedError,
    TooManyAttemptsError,
    client_ip,
    end_session,
    is_secure,
    login,
    start_session,
)
from minipbx.web.console.render import page, redirect, safe_next

router = APIRouter()
LOGIN_COOKIE = "minipbx_login"
Field = Annotated[str, Form(max_length=1024)]


async def _login_page(
    request: Request,
    next_url: str,
    *,
    username: str = "",
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = await page(
        request,
        None,
        "login.html",
        status,
        next_url=safe_next(next_url),
        username=username,
        error=error,
        login_token=token,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/login",
        secure=is_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/") -> Response:
    """The login form."""
    return await _login_page(request, next)


@router.post("/login", response_class=HTMLResponse)
async def login_post(
    request: Request,
    ctx: Ctx,
    username: Field = "",
    password: Field = "",
    csrf_token: Field = "",
    next: Field = "/",
) -> Response:
    """Check the credentials; on success set the session cookie and go to ``next``."""
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        return await _login_page(
            request,
            next,
            username=username,
            error="The form expired; please log in again.",
            status=403,
        )
    try:
        admin = await login(ctx, username, password, client_ip(request))
    except TooManyAttemptsError as exc:
        response = await _login_page(
            request,
            next,
            username=username,
            error=f"Too many failed logins. Try again in {exc.retry_after} seconds.",
            status=429,
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except LoginFailedError:
        return await _login_page(
            request, next, username=username, error="Wrong username or password.", status=401
        )
    done = RedirectResponse(safe_next(next), 303)
    start_session(ctx, request, done, admin)
    done.delete_cookie(LOGIN_COOKIE, path="/login")
    return done


@router.post("/logout")
async def logout(request: Request, _: ConsoleAdmin) -> Response:
    """End the session (the CSRF token is checked by ``console_admin``)."""
    response = redirect("/login")
    end_session(request, response)
    return response
