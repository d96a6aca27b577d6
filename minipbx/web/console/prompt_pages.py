"""Prompts: the tenant's prompts in a language, played in the page, with an upload form.

Uploading replaces the recording a tenant's calls hear (converted like the API's upload,
:mod:`minipbx.web.api.prompts`); "Revert" removes it after a confirmation, so the shipped
recording plays again. A system admin picks the tenant; a tenant admin sees its own.
Playing and downloading use the API's audio endpoint (the session cookie authenticates
GETs there).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from minipbx.media.prompts import (
    CUSTOM_PREFIX,
    DEFAULT_LANG,
    LANG_PATTERN,
    MAX_UPLOAD_BYTES,
    PromptError,
    is_custom_name,
)
from minipbx.web.api import prompts as api
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal
from minipbx.web.console.render import page, query, redirect
from minipbx.web.context import WebContext

router = APIRouter()
_LANG = re.compile(LANG_PATTERN)


def _tenant_param(principal: Principal, text: object) -> int | None:
    """The tenant a form or query names (system admins only; tenant admins: their own)."""
    if not principal.is_system or not isinstance(text, str) or not text.isdigit():
        return None
    number = int(text)
    return number if 0 < number < 2**31 else None


def _lang_param(text: object) -> str:
    return text if isinstance(text, str) and _LANG.fullmatch(text) else DEFAULT_LANG


def _back(tenant_id: int, lang: str, principal: Principal) -> str:
    return "/prompts" + query(tenant_id=tenant_id if principal.is_system else None, lang=lang)


async def _prompts_page(
    request: Request,
    ctx: WebContext,
    principal: Principal,
    tenant_id: int,
    lang: str,
    chosen: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    found = await api.listing(ctx, tenant_id, lang)
    return await page(
        request,
        principal,
        "prompts.html",
        status,
        tenant_id=tenant_id,
        lang=lang,
        languages=found["languages"],
        items=found["items"],
        custom_count=sum(item["source"] == "custom" for item in found["items"]),
        chosen=chosen,
        errors=errors or {},
        custom_prefix=CUSTOM_PREFIX,
        tenants=await ctx.tenants.list_tenants() if principal.is_system else [],
    )


@router.get("/prompts", response_class=HTMLResponse)
async def prompts_page(
    request: Request,
    ctx: Ctx,
    principal: ConsoleAdmin,
    tenant_id: str = "",
    lang: str = "",
    name: str = "",
) -> Response:
    """The prompts of a tenant in a language; ``name`` is preselected in the upload form."""
    tenant = await api.prompt_tenant(ctx, principal, _tenant_param(principal, tenant_id))
    return await _prompts_page(request, ctx, principal, tenant, _lang_param(lang), name)


def _target(form_name: object, custom: object) -> str:
    """The prompt an upload is for: the new custom name if one is typed, else the chosen."""
    if isinstance(custom, str) and custom.strip():
        typed = custom.strip().lower()
        return typed if typed.startswith(CUSTOM_PREFIX) else CUSTOM_PREFIX + typed
    return form_name if isinstance(form_name, str) else ""


@router.post("/prompts", response_class=HTMLResponse)
async def upload(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """Upload a recording for the chosen prompt (or a new custom one)."""
    form = await request.form()
    requested = _tenant_param(principal, form.get("tenant_id"))
    tenant = await api.prompt_tenant(ctx, principal, requested)
    lang = _lang_param(form.get("lang"))
    name = _target(form.get("name"), form.get("custom_name"))
    prompts = api.prompt_set(ctx, tenant, lang)
    file = form.get("file")
    errors: dict[str, str] = {}
    status = 400
    if not prompts.may_record(name):
        errors["name"] = (
            f"a name of your own starts with {CUSTOM_PREFIX} and has only a-z, 0-9 and _"
            if form.get("custom_name")
            else "choose a prompt from the list"
        )
    elif not isinstance(file, UploadFile) or not file.filename:
        errors["file"] = "choose a WAV file"
    else:
        try:
            data = await file.read(MAX_UPLOAD_BYTES + 1)
            if len(data) > MAX_UPLOAD_BYTES:
                raise api.too_large()
            await api.store(request, ctx, principal, tenant, lang, name, data)
        except PromptError as exc:
            errors["file"], status = exc.message, exc.status
    if errors:
        chosen = name if prompts.may_record(name) and not is_custom_name(name) else ""
        return await _prompts_page(request, ctx, principal, tenant, lang, chosen, errors, status)
    return redirect(_back(tenant, lang, principal), "saved")


def _revert_target(principal: Principal, request: Request) -> tuple[int | None, str]:
    params = request.query_params
    return _tenant_param(principal, params.get("tenant_id")), _lang_param(params.get("lang"))


@router.get("/prompts/{name}/revert", response_class=HTMLResponse)
async def revert_page(request: Request, ctx: Ctx, principal: ConsoleAdmin, name: str) -> Response:
    """Confirm removing the tenant's recording of ``name``."""
    requested, lang = _revert_target(principal, request)
    tenant = await api.prompt_tenant(ctx, principal, requested)
    prompts = api.prompt_set(ctx, tenant, lang)
    if not prompts.is_custom(name):
        return redirect(_back(tenant, lang, principal))
    after = "the shipped recording plays again" if prompts.is_listed(name) else "it is deleted"
    values: dict[str, Any] = {"tenant_id": tenant if principal.is_system else None, "lang": lang}
    return await page(
        request,
        principal,
        "confirm.html",
        title="Revert prompt",
        question=f"Remove your recording of {name}? Then {after}.",
        action=f"/prompts/{name}/revert" + query(**values),
        button="Remove recording",
        back=_back(tenant, lang, principal),
    )


@router.post("/prompts/{name}/revert")
async def revert(request: Request, ctx: Ctx, principal: ConsoleAdmin, name: str) -> Response:
    """Remove the tenant's recording of ``name`` (after the confirmation page)."""
    requested, lang = _revert_target(principal, request)
    tenant = await api.prompt_tenant(ctx, principal, requested)
    if (await request.form()).get("confirm") != "yes":
        return redirect(f"/prompts/{name}/revert" + query(tenant_id=requested, lang=lang))
    api.revert(ctx, principal, tenant, lang, name)
    return redirect(_back(tenant, lang, principal), "deleted")
