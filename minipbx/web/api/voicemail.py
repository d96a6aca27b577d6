"""Voicemail messages: search, move between folders, listen, delete (with the audio)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from minipbx.store import NotFoundError, VoicemailRecord
from minipbx.store.pbxrecords import VOICEMAIL_FOLDERS
from minipbx.web.api.crud import Resource, crud_router, owned, tenant_scope
from minipbx.web.api.schemas import ApiModel, OutModel, RowId, TenantQuery, Text, record_model
from minipbx.web.api.users import USERS
from minipbx.web.auth import Admin, Ctx, Principal
from minipbx.web.context import WebContext

log = logging.getLogger("minipbx.web")

VoicemailOut = record_model("VoicemailMessage", VoicemailRecord)


class VoicemailUpdate(ApiModel):
    """Move a message to another folder."""

    folder: Text


class VoicemailPage(OutModel):
    """A page of messages, newest first; ask for the next with ``before_id``."""

    items: list[VoicemailOut]  # type: ignore[valid-type]
    next_before_id: int | None


def audio_path(data_dir: Path, message: VoicemailRecord) -> Path | None:
    """The message's audio file, if it lies inside the data directory."""
    root = data_dir.resolve()
    path = (root / message.path).resolve()
    return path if path.is_relative_to(root) else None


async def _list(ctx: WebContext, tenant_id: int | None) -> Sequence[VoicemailRecord]:
    return await ctx.web.list_voicemail(tenant_id=tenant_id)


async def _get(ctx: WebContext, message_id: int) -> VoicemailRecord:
    return await ctx.voicemail.get(message_id)


async def _change(
    ctx: WebContext, _: Principal, message: VoicemailRecord, fields: dict[str, Any]
) -> VoicemailRecord:
    if "folder" in fields:
        message = await ctx.voicemail.move(message.id, fields["folder"])
    return message


async def _remove(ctx: WebContext, message: VoicemailRecord) -> None:
    await ctx.voicemail.remove(message.id)
    path = audio_path(ctx.data_dir, message)
    if path is not None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("event=voicemail_file_not_removed path=%s error=%s", path, exc)


VOICEMAIL: Resource[VoicemailRecord] = Resource(
    what="voicemail message",
    path="/voicemail",
    tag="voicemail",
    out=VoicemailOut,
    list_rows=_list,
    get_row=_get,
    update=VoicemailUpdate,
    change_row=_change,
    remove_row=_remove,
    listing=False,
)
search_router = APIRouter(prefix="/voicemail", tags=["voicemail"])


@search_router.get("", response_model=VoicemailPage)
async def search(
    ctx: Ctx,
    principal: Admin,
    tenant_id: TenantQuery = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    folder: Literal[VOICEMAIL_FOLDERS] | None = None,  # type: ignore[valid-type]
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Messages, newest first, of the tenant, of one user, of one folder."""
    scope = tenant_scope(principal, tenant_id)
    if user_id is not None:
        await owned(ctx, principal, USERS, user_id)
    items = await ctx.web.list_voicemail(
        tenant_id=scope, user_id=user_id, folder=folder, before_id=before_id, limit=limit
    )
    last = items[-1].id if len(items) == limit else None
    return {"items": items, "next_before_id": last}


@search_router.get(
    "/{row_id}/audio",
    response_class=FileResponse,
    responses={200: {"content": {"audio/wav": {}}, "description": "The recording"}},
)
async def audio(ctx: Ctx, principal: Admin, row_id: RowId) -> FileResponse:
    """The message's recording (WAV)."""
    message = await owned(ctx, principal, VOICEMAIL, row_id)
    path = audio_path(ctx.data_dir, message)
    if path is None or not path.is_file():
        raise NotFoundError(f"the recording of voicemail message {row_id} is missing")
    return FileResponse(path, media_type="audio/wav", filename=f"voicemail-{row_id}.wav")


router = APIRouter()
router.include_router(search_router)
router.include_router(crud_router(VOICEMAIL))
