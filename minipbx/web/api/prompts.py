"""Prompt recordings: list a tenant's prompts, listen, upload its own, revert to the default.

A tenant's recordings live in ``<data_dir>/prompts/<tenant_id>/<lang>/<name>.wav``
(:func:`minipbx.media.prompts.override_dir`) and replace the package's prompt of that name
for its calls; ``custom_*`` names are recordings of its own (no default). Uploads are WAV
files of any common form (PCM, float, G.711; any rate; mono or stereo), sent as the raw
body or as the form field ``file``; they are converted to 8 kHz 16-bit mono in a worker
thread and written atomically. A refused upload answers 400, 413 or 415 with a message
saying what to upload. A tenant admin reaches its own tenant only (another: 404); a system
admin names the tenant with ``tenant_id`` (default: the default tenant).
"""

from __future__ import annotations

import asyncio
import logging
import wave
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from minipbx.media.player import wav_bytes
from minipbx.media.prompts import (
    DEFAULT_LANG,
    LANG_PATTERN,
    MAX_UPLOAD_BYTES,
    NAME_PATTERN,
    UPLOAD_HINT,
    PromptError,
    PromptSet,
    WavInfo,
    decode_wav,
    languages,
    override_dir,
    remove_override,
    save_override,
)
from minipbx.store import NotFoundError
from minipbx.web.api.crud import not_found, tenant_scope
from minipbx.web.api.schemas import OutModel, TenantQuery
from minipbx.web.auth import Admin, Ctx, Principal
from minipbx.web.context import WebContext

log = logging.getLogger("minipbx.web")

FORM_FIELD = "file"
_FORM_SLACK = 64 * 1024  # multipart boundaries and the other fields around the file
Lang = Annotated[
    str,
    Query(pattern=LANG_PATTERN, max_length=20, description="Language code (default: en)"),
]
Name = Annotated[
    str, PathParam(pattern=NAME_PATTERN, max_length=64, description="The prompt's name")
]
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"A WAV file ({UPLOAD_HINT}; converted), at most 20 MB and 5 minutes.",
        "content": {
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {FORM_FIELD: {"type": "string", "format": "binary"}},
                    "required": [FORM_FIELD],
                }
            },
        },
    }
}
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not a usable WAV file (truncated, damaged, empty)"},
    404: {"description": "No such tenant, language or prompt"},
    413: {"description": "Larger than 20 MB or longer than 5 minutes"},
    415: {"description": "Not a WAV file (MP3, Ogg...) or an unsupported WAV encoding"},
}


class PromptOut(OutModel):
    """A prompt as the tenant's calls hear it."""

    name: str
    text: str
    source: Literal["custom", "default"]
    has_default: bool
    duration_ms: int
    url: str


class PromptList(OutModel):
    """Every prompt of a tenant in one language."""

    tenant_id: int
    lang: str
    languages: list[str]
    items: list[PromptOut]


# --- shared with the console (minipbx.web.console.prompt_pages) ---------------------------


async def prompt_tenant(ctx: WebContext, principal: Principal, tenant_id: int | None) -> int:
    """The tenant whose prompts are meant: a tenant admin's own (another: 404); for a
    system admin the one named (404 if unknown) or the default tenant."""
    scope = tenant_scope(principal, tenant_id)
    if scope is None:
        return (await ctx.tenants.ensure_default()).id
    if principal.is_system:
        try:
            await ctx.web.get_tenant(scope)
        except NotFoundError:
            raise not_found("tenant", scope) from None
    return scope


def prompt_set(ctx: WebContext, tenant_id: int, lang: str) -> PromptSet:
    """The prompts of ``lang`` with the tenant's recordings (404: no such language)."""
    try:
        return PromptSet(lang, override_dir(ctx.data_dir, tenant_id, lang))
    except PromptError as exc:
        raise NotFoundError(str(exc)) from None


def audio_url(tenant_id: int, lang: str, name: str) -> str:
    """Where the API serves the prompt's audio."""
    return f"/api/v1/prompts/{name}.wav?tenant_id={tenant_id}&lang={lang}"


def _duration_ms(path: Path) -> int:
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() * 1000 // wav.getframerate()
    except (OSError, wave.Error, EOFError, ZeroDivisionError):
        return 0


def describe(prompts: PromptSet, tenant_id: int, name: str) -> dict[str, Any]:
    """The :class:`PromptOut` fields of ``name`` (reads its WAV header)."""
    return {
        "name": name,
        "text": prompts.text(name),
        "source": "custom" if prompts.is_custom(name) else "default",
        "has_default": prompts.is_listed(name),
        "duration_ms": _duration_ms(prompts.path(name)),
        "url": audio_url(tenant_id, prompts.lang, name),
    }


async def listing(ctx: WebContext, tenant_id: int, lang: str) -> dict[str, Any]:
    """The :class:`PromptList` of a tenant (file headers are read in a worker thread)."""
    prompts = prompt_set(ctx, tenant_id, lang)

    def items() -> list[dict[str, Any]]:
        return [describe(prompts, tenant_id, name) for name in prompts.names()]

    return {
        "tenant_id": tenant_id,
        "lang": lang,
        "languages": languages(),
        "items": await asyncio.to_thread(items),
    }


def _recordable(prompts: PromptSet, name: str) -> None:
    if not prompts.may_record(name):
        raise NotFoundError(
            f"no prompt named {name!r} in language {prompts.lang!r}"
            " (GET /api/v1/prompts lists them; names of your own start with custom_)"
        )


def _convert_and_save(directory: Path, name: str, data: bytes) -> WavInfo:
    samples, info = decode_wav(data)
    save_override(directory, name, wav_bytes(samples))
    return info


def _gate(request: Request) -> asyncio.Semaphore:
    """One conversion at a time per application (each holds a CPU for up to a second)."""
    gate: asyncio.Semaphore | None = getattr(request.app.state, "prompt_gate", None)
    if gate is None:
        gate = request.app.state.prompt_gate = asyncio.Semaphore(1)
    return gate


async def store(
    request: Request,
    ctx: WebContext,
    principal: Principal,
    tenant_id: int,
    lang: str,
    name: str,
    data: bytes,
) -> dict[str, Any]:
    """Convert and save the tenant's recording of ``name``; its :class:`PromptOut` fields.
    :class:`PromptError` (with the status to answer) when the file cannot be used."""
    prompts = prompt_set(ctx, tenant_id, lang)
    _recordable(prompts, name)
    directory = override_dir(ctx.data_dir, tenant_id, lang)
    try:
        async with _gate(request):
            info = await asyncio.to_thread(_convert_and_save, directory, name, data)
    except PromptError as exc:
        log.info(
            "event=prompt_upload_refused tenant=%d lang=%s name=%s admin=%s status=%d reason=%r",
            *(tenant_id, lang, name, principal.username, exc.status, exc.message),
        )
        raise
    prompts.reload(name)
    log.info(
        "event=prompt_uploaded tenant=%d lang=%s name=%s admin=%s bytes=%d rate=%d bits=%d"
        " encoding=%s channels=%d seconds=%.1f",
        *(tenant_id, lang, name, principal.username, len(data), info.rate, info.bits),
        *(info.encoding, info.channels, info.seconds),
    )
    return describe(prompts, tenant_id, name)


def revert(ctx: WebContext, principal: Principal, tenant_id: int, lang: str, name: str) -> None:
    """Delete the tenant's recording of ``name`` (404 when it has none)."""
    prompts = prompt_set(ctx, tenant_id, lang)
    _recordable(prompts, name)
    if not remove_override(override_dir(ctx.data_dir, tenant_id, lang), name):
        raise NotFoundError(f"prompt {name!r} has no recording of the tenant's own to remove")
    log.info(
        "event=prompt_reverted tenant=%d lang=%s name=%s admin=%s",
        *(tenant_id, lang, name, principal.username),
    )


def too_large() -> PromptError:
    """The refusal of a body over :data:`MAX_UPLOAD_BYTES`."""
    return PromptError(f"the file is too large (more than 20 MB); {UPLOAD_HINT}", 413)


async def read_upload(request: Request) -> bytes:
    """The uploaded file: the form field ``file`` of a multipart body, else the raw body;
    :class:`PromptError` 413 past :data:`MAX_UPLOAD_BYTES`."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_UPLOAD_BYTES + _FORM_SLACK:
        raise too_large()
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        upload = (await request.form(max_files=1, max_fields=20)).get(FORM_FIELD)
        if not isinstance(upload, UploadFile):
            raise PromptError(f"no file in the form: send the WAV file as the field {FORM_FIELD!r}")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
    else:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) > MAX_UPLOAD_BYTES:
                raise too_large()
        data = bytes(buffer)
    if len(data) > MAX_UPLOAD_BYTES:
        raise too_large()
    return data


# --- endpoints ----------------------------------------------------------------------------

router = APIRouter(prefix="/prompts", tags=["prompts"])


@router.get("", response_model=PromptList, responses={404: REFUSALS[404]})
async def list_prompts(
    ctx: Ctx, principal: Admin, tenant_id: TenantQuery = None, lang: Lang = DEFAULT_LANG
) -> Any:
    """Every prompt of the tenant in ``lang``: its text, and whether the tenant's own
    recording (custom) or the shipped one (default) plays."""
    tenant = await prompt_tenant(ctx, principal, tenant_id)
    return await listing(ctx, tenant, lang)


@router.get(
    "/{name}.wav",
    response_class=FileResponse,
    responses={200: {"content": {"audio/wav": {}}, "description": "The recording"}},
)
async def download_prompt(
    ctx: Ctx, principal: Admin, name: Name, tenant_id: TenantQuery = None, lang: Lang = DEFAULT_LANG
) -> FileResponse:
    """The recording the tenant's calls play for ``name`` (its own, else the default)."""
    tenant = await prompt_tenant(ctx, principal, tenant_id)
    prompts = prompt_set(ctx, tenant, lang)
    try:
        path = prompts.path(name)
    except PromptError as exc:
        raise NotFoundError(str(exc)) from None
    return FileResponse(path, media_type="audio/wav", filename=f"{name}.wav")


async def upload_prompt(
    request: Request,
    ctx: Ctx,
    principal: Admin,
    name: Name,
    tenant_id: TenantQuery = None,
    lang: Lang = DEFAULT_LANG,
) -> Any:
    """Replace the tenant's recording of ``name`` with the uploaded WAV file (raw body or
    form field ``file``), converted to 8 kHz 16-bit mono."""
    tenant = await prompt_tenant(ctx, principal, tenant_id)
    _recordable(prompt_set(ctx, tenant, lang), name)
    try:
        data = await read_upload(request)
        return await store(request, ctx, principal, tenant, lang, name, data)
    except PromptError as exc:
        raise HTTPException(exc.status, exc.message) from None


for _method in ("PUT", "POST"):
    router.add_api_route(
        "/{name}.wav",
        upload_prompt,
        methods=[_method],
        response_model=PromptOut,
        summary="Upload a prompt recording",
        openapi_extra=UPLOAD_BODY,
        responses=REFUSALS,
        operation_id=f"upload_prompt_{_method.lower()}",
    )


@router.delete("/{name}.wav", status_code=204, responses={404: REFUSALS[404]})
async def revert_prompt(
    ctx: Ctx, principal: Admin, name: Name, tenant_id: TenantQuery = None, lang: Lang = DEFAULT_LANG
) -> Response:
    """Remove the tenant's recording of ``name``: the default plays again (a custom_*
    prompt is gone)."""
    tenant = await prompt_tenant(ctx, principal, tenant_id)
    await asyncio.to_thread(revert, ctx, principal, tenant, lang, name)
    return Response(status_code=204)
