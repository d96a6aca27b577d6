"""The REST API: one router per object type, assembled by :func:`api_router`."""

from __future__ import annotations

from fastapi import APIRouter

from minipbx.web.api import (
    admins,
    cards,
    cdrs,
    dialplans,
    ivr,
    live,
    prompts,
    rates,
    session,
    settings,
    tenants,
    trunks,
    users,
    voicemail,
)

MODULES = (
    session,
    live,
    tenants,
    settings,
    users,
    trunks,
    dialplans,
    ivr,
    rates,
    cards,
    voicemail,
    prompts,
    cdrs,
    admins,
)


def api_router() -> APIRouter:
    """Every API endpoint (mounted under ``/api/v1`` by :func:`minipbx.web.create_app`)."""
    router = APIRouter()
    for module in MODULES:
        router.include_router(module.router)
    return router
