"""Admin accounts and API tokens, as the CLI, the first start and the API create them."""

from __future__ import annotations

import logging

from minipbx.store import (
    AdminRecord,
    ApiTokenRecord,
    InvalidInputError,
    SqlAdminRepo,
    hash_token,
    new_token,
)
from minipbx.web.passwords import Passwords, check_password, new_password

log = logging.getLogger("minipbx.web")

FIRST_ADMIN = "admin"


def checked_password(password: str) -> str:
    """``password`` if it may be an admin's; InvalidInputError naming ``password``."""
    problem = check_password(password)
    if problem is not None:
        raise InvalidInputError(f"invalid password: {problem}")
    return password


async def add_admin(
    admins: SqlAdminRepo,
    passwords: Passwords,
    username: str,
    password: str,
    *,
    tenant_id: int | None = None,
    enabled: bool = True,
) -> AdminRecord:
    """Create an admin with an argon2 hash of ``password`` (tenant None: system admin)."""
    password_hash = await passwords.hash(checked_password(password))
    return await admins.add(username, password_hash, tenant_id=tenant_id, enabled=enabled)


async def set_admin_password(
    admins: SqlAdminRepo, passwords: Passwords, username: str, password: str
) -> AdminRecord:
    """Replace an admin's password (its sessions end; its API tokens stay valid)."""
    password_hash = await passwords.hash(checked_password(password))
    return await admins.set_password(username, password_hash)


async def ensure_first_admin(admins: SqlAdminRepo, passwords: Passwords) -> str | None:
    """With no admin at all, create system admin :data:`FIRST_ADMIN` with a random
    password and return it (for the start banner); else None."""
    if await admins.list_admins():
        return None
    password = new_password()
    await add_admin(admins, passwords, FIRST_ADMIN, password)
    log.info("event=first_admin_created username=%s", FIRST_ADMIN)
    return password


async def create_token(
    admins: SqlAdminRepo, username: str, name: str
) -> tuple[str, ApiTokenRecord]:
    """A new API token of ``username``: the token (shown once) and its stored record."""
    token = new_token()
    record = await admins.add_token(username, name, hash_token(token))
    return token, record
