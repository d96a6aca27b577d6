"""The auto attendant's console pages: the list, the menu form with its keys table."""

from __future__ import annotations

from minipbx.store.ivr import SqlIvrRepo
from minipbx.web import WebContext
from tests.web.conftest import Tenants
from tests.web.console.conftest import Console


def _form(**fields: str) -> dict[str, str]:
    base = {
        "name": "main",
        "greeting": "greeting_main, ivr_enter_extension",
        "timeout_seconds": "5",
        "digit_timeout_seconds": "3",
        "retries": "2",
        "max_digits": "4",
        "invalid_prompt": "invalid_option",
        "timeout_action": "hangup",
        "rows": "4",
    }
    return {**base, **fields}


async def test_console_list_create_edit_delete(
    tenant_a: Console, ctx: WebContext, tenants: Tenants
) -> None:
    page = await tenant_a.get("/ivr-menus")
    assert page.status_code == 200 and "None yet" in page.text
    assert 'href="/ivr-menus"' in page.text  # in the navigation
    form = await tenant_a.get("/ivr-menus/new")
    assert form.status_code == 200
    assert 'name="o0.key"' in form.text and 'name="after_hours_menu"' in form.text
    r = await tenant_a.post("/ivr-menus/new", _form(name="support", greeting="support_hello"))
    assert r.status_code == 303, r.text
    r = await tenant_a.post(
        "/ivr-menus/new",
        _form(
            dial_by_extension="on",
            hours="mon-fri 08:00-18:00",
            after_hours_menu="support",
            **{
                "o0.key": "1",
                "o0.action": "user",
                "o0.target": "101",
                "o2.key": "2",
                "o2.action": "menu",
                "o2.target": "support",
            },
        ),
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ivr-menus?done=created"
    listing = await tenant_a.get("/ivr-menus")
    assert "main" in listing.text and "support" in listing.text
    repo = SqlIvrRepo(ctx.db)
    main = await repo.find(tenants.a.id, "main")
    assert main is not None and main.dial_by_extension and main.after_hours_menu == "support"
    assert [(o.key, o.action, o.target) for o in main.options] == [
        ("1", "user", "101"),
        ("2", "menu", "support"),
    ]
    edit = await tenant_a.get(f"/ivr-menus/{main.id}")
    assert edit.status_code == 200
    assert 'value="greeting_main, ivr_enter_extension"' in edit.text
    assert 'value="101"' in edit.text

    # an error is shown in its row and field, and nothing is saved
    bad = _form(**{"o0.key": "1", "o0.action": "menu", "o0.target": "nowhere", "rows": "2"})
    r = await tenant_a.post(f"/ivr-menus/{main.id}", bad)
    assert r.status_code == 422
    assert "no menu &#39;nowhere&#39;" in r.text and 'aria-invalid="true"' in r.text
    assert (await repo.get(main.id)).options == main.options
    r = await tenant_a.post(f"/ivr-menus/{main.id}", _form(retries="12"))
    assert r.status_code == 422 and "12 is not between 0 and 10" in r.text

    # saving replaces the menu with the form (a cleared key removes its option)
    r = await tenant_a.post(
        f"/ivr-menus/{main.id}", _form(retries="5", **{"o1.key": "0", "o1.action": "hangup"})
    )
    assert r.status_code == 303, r.text
    saved = await repo.get(main.id)
    assert saved.retries == 5 and [o.key for o in saved.options] == ["0"]
    assert saved.hours == "" and saved.after_hours_menu is None

    # deleting asks first, and refuses while another menu names it
    support = await repo.find(tenants.a.id, "support")
    assert support is not None
    await repo.update(main.id, options=[{"key": "9", "action": "menu", "target": "support"}])
    confirm = await tenant_a.get(f"/ivr-menus/{support.id}/delete")
    assert confirm.status_code == 200 and "Delete IVR menu support?" in confirm.text
    r = await tenant_a.post(f"/ivr-menus/{support.id}/delete", {"confirm": "yes"})
    assert r.status_code == 409 and "used by menu &#39;main&#39; (key 9)" in r.text
    r = await tenant_a.post(f"/ivr-menus/{main.id}/delete", {"confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == "/ivr-menus?done=deleted"
    assert await repo.find(tenants.a.id, "main") is None


async def test_console_is_per_tenant(
    tenant_a: Console, sysadmin: Console, ctx: WebContext, tenants: Tenants
) -> None:
    repo = SqlIvrRepo(ctx.db)
    theirs = await repo.add(tenants.b.id, "secret", greeting="g")
    assert (await tenant_a.get(f"/ivr-menus/{theirs.id}")).status_code == 404
    r = await tenant_a.post(f"/ivr-menus/{theirs.id}", _form(name="secret"))
    assert r.status_code == 404
    assert "secret" not in (await tenant_a.get("/ivr-menus")).text
    # a system admin sees every tenant's menus and picks the tenant of a new one
    listing = await sysadmin.get("/ivr-menus")
    assert "secret" in listing.text and "b.example" in listing.text
    edit = await sysadmin.get(f"/ivr-menus/{theirs.id}")
    assert edit.status_code == 200 and "b.example" in edit.text and "ivr:secret" in edit.text
    new = await sysadmin.get("/ivr-menus/new")
    assert 'name="tenant_id"' in new.text and f'value="{tenants.b.id}"' in new.text
    assert 'name="tenant_id"' not in (await tenant_a.get("/ivr-menus/new")).text
    r = await sysadmin.post("/ivr-menus/new", _form(name="hq", tenant_id=str(tenants.a.id)))
    assert r.status_code == 303, r.text
    assert await repo.find(tenants.a.id, "hq") is not None


async def test_console_form_needs_csrf(tenant_a: Console) -> None:
    r = await tenant_a.client.post("/ivr-menus/new", data=_form())
    assert r.status_code == 403
