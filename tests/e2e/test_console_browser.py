"""The web console in a real browser (Debian's chromium driven by Playwright) against a
live ``minipbx run``: log in, add a user through the form, register a SIPp phone as that
user and see it on the dashboard, place a call and find its record in the CDR search.

Screenshots of the key pages at phone (375x812) and desktop (1920x1080) sizes go to
``$CONSOLE_SCREENSHOTS`` (default: the test's tmp directory); the path is printed.
Playwright's own browser downloads are not used: ``executable_path=/usr/bin/chromium``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Pbx, RegisterFn, SippFactory
from tests.e2e.support import free_port, udp_listening, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = {"phone": (375, 812), "desktop": (1920, 1080)}
BANNER_PORT = re.compile(r"web console and REST API http://127\.0\.0\.1:(\d+)/")
BANNER_PASSWORD = re.compile(r"admin admin  password (\S+)")


def _banner(pbx: Pbx) -> tuple[str, str]:
    """The console's base URL and the first admin's password, from the server's banner."""
    found: dict[str, str] = {}

    def read() -> bool:
        text = pbx.stdout_path.read_text(errors="replace")
        port, password = BANNER_PORT.search(text), BANNER_PASSWORD.search(text)
        if port and password:
            found["url"] = f"http://127.0.0.1:{port.group(1)}"
            found["password"] = password.group(1)
        return bool(found)

    assert wait_for(read, 20.0), "no banner with the web port and admin password:\n" + (
        pbx.stdout_path.read_text(errors="replace")
    )
    return found["url"], found["password"]


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where the screenshots go (printed, so a CI job can collect them)."""
    configured = os.environ.get("CONSOLE_SCREENSHOTS")
    path = Path(configured) if configured else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {path}")
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless chromium with a fresh profile (skipped without chromium or playwright)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1920, "height": 1080},
        )
        try:
            yield context
        finally:
            context.close()


def _shoot(page: Any, url: str, name: str, artifacts: Path) -> None:
    """Screenshots of ``url`` at every size in :data:`SIZES`."""
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.goto(url)
        page.screenshot(path=str(artifacts / f"{name}-{size}.png"), full_page=True)
        # nothing wider than the screen but the scrolling tables
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{name} at {size}: the page scrolls sideways by {overflow}px"
    page.set_viewport_size({"width": 1920, "height": 1080})


def test_console_in_chromium(
    browser: Any,
    pbx: Pbx,
    sipp: SippFactory,
    register: RegisterFn,
    artifacts: Path,
) -> None:
    base, admin_password = _banner(pbx)
    page = browser.new_page()
    problems: list[str] = []
    # (answers with error statuses, e.g. a form's 422, are logged too: not problems)
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))

    # logged out: the login page, then back to where we were going
    page.goto(base + "/users")
    assert "/login" in page.url
    _shoot(page, page.url, "login", artifacts)
    page.fill("#username", "admin")
    page.fill("#password", "wrong password")
    page.click("main button[type=submit]")
    assert page.locator(".error-box").inner_text() == "Wrong username or password."
    page.fill("#password", admin_password)
    page.click("main button[type=submit]")
    page.wait_for_url(base + "/users")

    # a new user through the form (a bad one first: the error shows at the field)
    extension = f"7{secrets.randbelow(900) + 100}"
    sip_password = "pw-" + secrets.token_hex(6)
    page.goto(base + "/users/new")
    page.fill("#f-extension", extension)
    page.fill("#f-display_name", "Browser Phone")
    page.fill("#f-call_level", "500")
    page.click("main button[type=submit]")
    assert page.locator(".field.has-error #f-call_level").count() == 1
    assert page.locator(".field.has-error #f-password").count() == 1
    page.fill("#f-password", sip_password)
    page.fill("#f-call_level", "2")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r".*/users\?done=created"))
    assert page.locator("#users-table", has_text="Browser Phone").count() == 1

    # a dial plan with a rule, through the editor
    page.goto(base + "/dial-plans/new")
    page.fill("#f-name", "browser-plan")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r".*/dial-plans\?done=created"))
    page.click("text=Rules")
    page.fill("input[name='r0.pattern']", "7XXX")
    page.select_option("select[name='r0.action']", "local")
    page.click("text=Save rules")
    page.wait_for_url(re.compile(r".*/rules\?done=saved"))
    assert page.input_value("input[name='r0.pattern']") == "7XXX"
    rules_url = page.url.split("?")[0]

    # the phone registers: the dashboard lists it
    callee_port = free_port()
    register(extension, sip_password, callee_port)
    uas = sipp("uas_answer.xml", name=f"callee-{extension}", port=callee_port).start()
    assert wait_for(lambda: udp_listening(callee_port), 5.0), "the callee SIPp did not bind"
    page.goto(base + "/")
    row = page.locator("#registrations tr", has_text=extension)
    assert row.count() == 1, page.content()
    assert f"127.0.0.1:{callee_port}" in row.inner_text()

    # a call to it, then its record in the CDR search
    caller, caller_password = pbx.take_user()
    call = sipp(
        "uac_call.xml",
        name=f"caller-{caller}",
        rows=[(caller, caller_password, extension)],
        auth=True,
    ).run()
    answered = uas.wait()
    assert call.returncode == 0, call.describe()
    assert answered.returncode == 0, answered.describe()

    def found_record() -> bool:
        page.goto(f"{base}/cdrs?called={extension}")
        return page.locator("#cdr-table tbody tr").count() >= 1

    assert wait_for(found_record, 10.0, interval=0.5), page.content()
    record = page.locator("#cdr-table tbody tr").first.inner_text()
    assert caller in record and extension in record and "ANSWERED" in record
    with page.expect_download() as download:
        page.click("#cdr-csv")
    csv_path = artifacts / "cdrs.csv"
    download.value.save_as(str(csv_path))
    assert extension in csv_path.read_text()

    # screenshots of the key pages at both sizes
    _shoot(page, base + "/", "dashboard", artifacts)
    _shoot(page, base + "/users", "users", artifacts)
    _shoot(page, base + "/users/new", "user-form", artifacts)
    _shoot(page, base + "/dial-plans", "dial-plans", artifacts)
    _shoot(page, rules_url, "dial-plan-rules", artifacts)
    _shoot(page, f"{base}/cdrs?called={extension}", "cdrs", artifacts)
    _shoot(page, base + "/settings", "settings", artifacts)

    # log out
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/login"))
    page.goto(base + "/")
    assert "/login" in page.url
    assert not problems, f"browser console errors (CSP?): {problems}"
    assert len(list(artifacts.glob("*.png"))) == 16
