"""The ``minipbx admin`` and ``minipbx token`` commands (argparse wiring: minipbx.cli)."""

from __future__ import annotations

import argparse

from minipbx.store import Database, NotFoundError, SqlAdminRepo, SqlTenantRepo
from minipbx.web.accounts import add_admin, create_token, set_admin_password
from minipbx.web.passwords import Passwords


async def _tenant_id(db: Database, domain: str | None) -> int | None:
    if domain is None:
        return None
    tenant = await SqlTenantRepo(db).get_by_domain(domain)
    if tenant is None:
        raise NotFoundError(f"unknown domain {domain!r}")
    return tenant.id


async def _list(db: Database) -> None:
    admins = SqlAdminRepo(db)
    domains = {t.id: t.domain for t in await SqlTenantRepo(db).list_tenants()}
    print(f"{'username':<24} {'tenant':<24} {'enabled':<8} last login")
    for admin in await admins.list_admins():
        tenant = "(system)" if admin.tenant_id is None else domains.get(admin.tenant_id, "?")
        last = admin.last_login_at.isoformat(timespec="seconds") if admin.last_login_at else "-"
        print(f"{admin.username:<24} {tenant:<24} {'yes' if admin.enabled else 'no':<8} {last}")


async def run_admin_command(db: Database, args: argparse.Namespace) -> int:
    """Run the parsed ``admin``/``token`` command ``args`` on ``db``; store errors propagate
    (the CLI prints them as one line)."""
    admins, passwords = SqlAdminRepo(db), Passwords()
    action = getattr(args, "admin_command", None) or f"token {args.token_command}"
    if action == "add":
        tenant_id = await _tenant_id(db, args.tenant)
        await add_admin(admins, passwords, args.name, args.password, tenant_id=tenant_id)
        role = f"tenant admin of {args.tenant}" if args.tenant else "system admin"
        print(f"added {role} {args.name}")
    elif action == "list":
        await _list(db)
    elif action == "remove":
        await admins.remove(args.name)
        print(f"removed admin {args.name}")
    elif action == "password":
        await set_admin_password(admins, passwords, args.name, args.password)
        print(f"changed the password of admin {args.name}")
    else:
        token, _ = await create_token(admins, args.name, args.label)
        print(token)
    return 0
