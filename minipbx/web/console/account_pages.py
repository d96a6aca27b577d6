"""My account: an admin changes their own password.

The change goes through the API's endpoint function (current password checked as a
login, rate limit included; the new one checked and hashed with argon2). Every session
of the account ends with it, this one too: the answer logs out and goes to the login.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import Field as Info

from minipbx.web.api import session
from minipbx.web.api.session import PasswordChange, Secret
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal, TooManyAttemptsError, end_session
from minipbx.web.console.forms import EXPECTED, GENERAL, errors_of, fields_of, parse, validated
from minipbx.web.console.render import page, redirect
from minipbx.web.context import WebContext

router = APIRouter()


class PasswordForm(PasswordChange):
    """The API's request and the new password typed again."""

    repeat_password: Annotated[Secret, Info(description="The new password once more.")]


FIELDS = fields_of(PasswordForm)


async def _account_page(
    request: Request,
    ctx: WebContext,
    principal: Principal,
    errors: dict[str, str] | None = None,
) -> Response:
    tenant = None if principal.tenant_id is None else await ctx.web.get_tenant(principal.tenant_id)
    return await page(
        request,
        principal,
        "account.html",
        422 if errors else 200,
        title="My account",
        fields=FIELDS,
        values={},
        errors=errors or {},
        tenant_domain=tenant.domain if tenant is not None else "",
    )


@router.get("/account", response_class=HTMLResponse)
async def account(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """The account's facts and the change-password form."""
    return await _account_page(request, ctx, principal)


@router.post("/account/password", response_class=HTMLResponse)
async def change_password(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """Change the password; on success every session ends and the login page follows."""
    data = parse(await request.form(), FIELDS, new=True)
    body, errors = validated(PasswordForm, {}, data)
    if isinstance(body, PasswordForm):
        if body.new_password != body.repeat_password:
            errors = {"repeat_password": "does not match the new password"}
        else:
            change = PasswordChange(
                current_password=body.current_password, new_password=body.new_password
            )
            errors = await _change(ctx, principal, request, change)
    if errors:
        return await _account_page(request, ctx, principal, errors)
    done = redirect("/login", "password")
    end_session(request, done)
    return done


async def _change(
    ctx: WebContext, principal: Principal, request: Request, body: PasswordChange
) -> dict[str, str]:
    """The errors of changing the password through the API's endpoint ({}: changed)."""
    try:
        await session.change_password(ctx, principal, request, body)
    except TooManyAttemptsError as exc:
        return {GENERAL: f"Too many failed attempts. Try again in {exc.retry_after} seconds."}
    except HTTPException as exc:
        return {"current_password": str(exc.detail)}
    except EXPECTED as exc:
        found = errors_of(exc)
        if "password" in found:  # the store names the new password "password"
            found["new_password"] = found.pop("password")
        return found
    return {}
