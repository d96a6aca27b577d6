"""Voicemail e-mail through a real SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS
with AUTH, implicit TLS, the errors an admin sees, the mailer's queue with a server that is
down and comes back, delete-after-mail, and "send test mail" in the API and the console."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from minipbx.mail import (
    Delivery,
    Mailer,
    MailError,
    MessageRefusedError,
    SmtpSettings,
    load_smtp_settings,
    make_test_mail,
    send,
    send_test_mail,
    voicemail_mail,
)
from minipbx.store import (
    Database,
    SqlSettingsRepo,
    SqlTenantRepo,
    SqlUserRepo,
    SqlUserSettingsRepo,
    SqlVoicemailRepo,
)
from minipbx.voicemail import SqlMailboxes
from minipbx.web import StaticLiveState, WebContext, create_app
from minipbx.web.passwords import Passwords
from tests.e2e.support import free_port
from tests.pbx.test_voicemail import SPEECH
from tests.tls_certs import write_self_signed
from tests.web.conftest import PASSWORD, client_for, make_admin
from tests.web.console.conftest import csrf_of, log_in

HOST = "127.0.0.1"
USER, SECRET = "pbx", "s3cret"
RECEIVED = dt.datetime(2030, 1, 9, 14, 30, tzinfo=dt.UTC)
# aiosmtpd warns when a test server takes logins without TLS: those tests do it on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


# --- the SMTP server -----------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A self-signed certificate for 127.0.0.1 (and localhost)."""
    folder = tmp_path_factory.mktemp("certs")
    return Certs(*write_self_signed(folder, "minipbx test SMTP", dns=("localhost",)))


class Inbox:
    """The server's handler: keeps what it received; refuses some recipients."""

    def __init__(self, refuse: str = "") -> None:
        self.mails: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str], bool]] = []  # from, to, over TLS
        self.refuse = refuse

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse and address == self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        tls = server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or implicit
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), tls))
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(parsed)
        return "250 2.0.0 OK"


class Logins:
    """The server's authenticator: one account, every attempt remembered."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.attempts.append(login)
        # handled=False: the server answers (535 on failure) itself
        return AuthResult(success=(login, password) == (USER, SECRET), handled=False)


@contextmanager
def smtp_server(
    inbox: Inbox,
    port: int,
    mode: str = "none",
    certs: Certs | None = None,
    logins: Logins | None = None,
    auth_require_tls: bool = True,
) -> Iterator[Controller]:
    """A real SMTP server on 127.0.0.1:``port``: ``mode`` none, starttls (required before
    MAIL) or tls (implicit); with ``logins``, AUTH is required."""
    kwargs: dict[str, Any] = {"server_hostname": "mail.test", "ready_timeout": 10.0}
    if mode != "none":
        assert certs is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs.cert, certs.key)
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            kwargs.update(ssl_context=context)
    if mode == "tls":  # aiosmtpd counts only STARTTLS as TLS for AUTH; this one is all TLS
        auth_require_tls = False
    if logins is not None:
        kwargs.update(authenticator=logins, auth_required=True, auth_require_tls=auth_require_tls)
    controller = Controller(inbox, hostname=HOST, port=port, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def settings(
    port: int, security: str = "none", certs: Certs | None = None, **kw: Any
) -> SmtpSettings:
    base: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "security": security,
        "sender": "pbx@example.com",
        "helo_name": "pbx.test",
        "timeout": 5.0,
        "ca_file": str(certs.cert) if certs is not None else None,
    }
    return SmtpSettings(**{**base, **kw})


def delivery(**kw: Any) -> Delivery:
    base: dict[str, Any] = {
        "message_id": 7,
        "tenant_id": 1,
        "extension": "100",
        "to": "alice@example.com",
        "attach": True,
        "delete_after": False,
        "caller": "0612345678",
        "caller_name": "",
        "received": RECEIVED,
        "seconds": 3.4,
    }
    return Delivery(**{**base, **kw})


# --- sending -------------------------------------------------------------------------------


async def test_plain_smtp_without_login() -> None:
    inbox, port = Inbox(), free_port(tcp=True)
    with smtp_server(inbox, port):
        await send_test_mail(settings(port), "ops@example.com")
    (mail,) = inbox.mails
    assert mail["Subject"] == "minipbx test mail" and mail["To"] == "ops@example.com"
    assert inbox.envelopes == [("pbx@example.com", ["ops@example.com"], False)]


async def test_starttls_with_login_and_attachment(certs: Certs) -> None:
    inbox, logins, port = Inbox(), Logins(), free_port(tcp=True)
    config = settings(port, "starttls", certs, username=USER, password=SECRET)
    with smtp_server(inbox, port, "starttls", certs, logins):
        await send(config, voicemail_mail(config.from_address, delivery(), SPEECH))
    assert logins.attempts == [USER]
    assert inbox.envelopes == [("pbx@example.com", ["alice@example.com"], True)]
    (mail,) = inbox.mails
    assert mail["Subject"] == "New voicemail from 0612345678 (3 s)"
    body = mail.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "mailbox 100" in text and "0612345678" in text and "3 s" in text and "2030" in text
    (attachment,) = list(mail.iter_attachments())
    assert attachment.get_content_type() == "audio/wav"
    assert attachment.get_filename() == "voicemail-20300109-143000-0612345678.wav"
    assert attachment.get_content() == SPEECH


async def test_implicit_tls_with_login(certs: Certs) -> None:
    inbox, logins, port = Inbox(), Logins(), free_port(tcp=True)
    config = settings(port, "tls", certs, username=USER, password=SECRET)
    with smtp_server(inbox, port, "tls", certs, logins):
        await send(config, voicemail_mail(config.from_address, delivery(), None))
    assert logins.attempts == [USER] and inbox.envelopes[0][2]
    (mail,) = inbox.mails
    assert list(mail.iter_attachments()) == []
    assert "Call your voicemail" in str(mail.get_body(("plain",)))


async def test_wrong_password(certs: Certs) -> None:
    inbox, port = Inbox(), free_port(tcp=True)
    config = settings(port, "starttls", certs, username=USER, password="wrong")
    with smtp_server(inbox, port, "starttls", certs, Logins()), pytest.raises(MailError) as got:
        await send_test_mail(config, "ops@example.com")
    assert (
        str(got.value)
        == "SMTP server refused the login: 535 5.7.8 Authentication credentials invalid"
    )
    assert inbox.mails == []


async def test_untrusted_certificate(certs: Certs) -> None:
    port = free_port(tcp=True)
    with smtp_server(Inbox(), port, "starttls", certs), pytest.raises(MailError) as got:
        await send_test_mail(settings(port, "starttls"), "ops@example.com")  # no ca_file
    message = str(got.value)
    assert message.startswith(f"certificate verify failed for {HOST}: ")
    assert "self" in message and "signed" in message
    with smtp_server(Inbox(), port, "tls", certs), pytest.raises(MailError) as got:
        await send_test_mail(settings(port, "tls"), "ops@example.com")
    assert str(got.value).startswith(f"certificate verify failed for {HOST}: ")


async def test_server_down() -> None:
    port = free_port(tcp=True)
    with pytest.raises(MailError) as got:
        await send_test_mail(settings(port), "ops@example.com")
    assert str(got.value) == f"cannot connect to {HOST}:{port}: connection refused"


async def test_login_is_never_sent_in_plain_text_unless_allowed() -> None:
    inbox, logins, port = Inbox(), Logins(), free_port(tcp=True)
    with smtp_server(inbox, port, logins=logins, auth_require_tls=False):
        with pytest.raises(MailError) as got:
            await send_test_mail(settings(port, username=USER, password=SECRET), "a@example.com")
        assert "refusing to send the SMTP password" in str(got.value)
        assert logins.attempts == []  # not even tried
        relaxed = settings(port, username=USER, password=SECRET, require_secure=False)
        await send_test_mail(relaxed, "a@example.com")
    assert logins.attempts == [USER] and len(inbox.mails) == 1


async def test_starttls_must_be_offered() -> None:
    port = free_port(tcp=True)
    with smtp_server(Inbox(), port), pytest.raises(MailError) as got:
        await send_test_mail(settings(port, "starttls"), "a@example.com")
    assert str(got.value) == (
        f"the SMTP server {HOST}:{port} does not offer STARTTLS;"
        " choose security tls (port 465) or none"
    )


async def test_login_without_auth_on_the_server() -> None:
    port = free_port(tcp=True)
    config = settings(port, username=USER, password=SECRET, require_secure=False)
    with smtp_server(Inbox(), port), pytest.raises(MailError) as got:  # AUTH only after TLS
        await send_test_mail(config, "a@example.com")
    assert str(got.value) == (
        f"the SMTP server {HOST}:{port} does not offer a login (AUTH);"
        " leave the SMTP username empty"
    )


async def test_recipient_refused() -> None:
    port = free_port(tcp=True)
    with (
        smtp_server(Inbox(refuse="nobody@example.com"), port),
        pytest.raises(MessageRefusedError) as got,
    ):
        await send_test_mail(settings(port), "nobody@example.com")
    assert (
        str(got.value)
        == "SMTP server refused the recipient nobody@example.com: 550 5.1.1 No such user here"
    )


def test_settings_values_and_their_errors() -> None:
    config = SmtpSettings.from_values(
        {
            "smtp.host": " mail.example.com ",
            "smtp.username": "me@example.com",
            "smtp.password": "p w",
        }
    )
    assert (config.security, config.effective_port, config.require_secure) == (
        "starttls",
        587,
        True,
    )
    assert config.from_address == "me@example.com" and config.password == "p w"
    assert "p w" not in repr(config)
    tls = SmtpSettings.from_values(
        {
            "smtp.host": "h",
            "smtp.security": "tls",
            "smtp.require_secure": "no",
            "smtp.from": "a@b.c",
        }
    )
    assert (tls.address, tls.require_secure, tls.from_address) == ("h:465", False, "a@b.c")
    with pytest.raises(MailError, match="SMTP is not configured"):
        SmtpSettings.from_values({})
    with pytest.raises(MailError, match="not a number"):
        SmtpSettings.from_values({"smtp.host": "h", "smtp.port": "x"})
    with pytest.raises(MailError, match="not one of none, starttls, tls"):
        SmtpSettings(host="h", security="ssl3")
    with pytest.raises(MailError, match="no sender address"):
        _ = SmtpSettings(host="h").from_address


def test_voicemail_mail_headers_cannot_be_injected() -> None:
    mail = voicemail_mail(
        "pbx@example.com", delivery(caller="06\r\nBcc: evil@example.com", caller_name="Al"), None
    )
    assert "\n" not in str(mail["Subject"]) and mail["Bcc"] is None
    assert str(mail["Subject"]).startswith("New voicemail from Al (06  Bcc")
    unknown = voicemail_mail("pbx@example.com", delivery(caller="", seconds=0.2), None)
    assert unknown["Subject"] == "New voicemail from an unknown caller (1 s)"
    made = make_test_mail(settings(25), "ops@example.com")
    assert made["From"] == "pbx@example.com"


# --- the queue -----------------------------------------------------------------------------


@dataclass
class Store:
    db: Database
    data: Path
    boxes: SqlMailboxes
    tenant_id: int
    alice: int
    changes: list[tuple[int, str]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    data = tmp_path / "data"
    db = Database.for_data_dir(data)
    await db.upgrade()
    tenant = await SqlTenantRepo(db).ensure_default()
    alice = await SqlUserRepo(db).add("100", "pw", email="alice@example.com")
    changes: list[tuple[int, str]] = []
    boxes = SqlMailboxes(db, data, on_change=lambda t, e: changes.append((t, e)))
    await boxes.load()
    yield Store(db, data, boxes, tenant.id, alice.id, changes)
    await db.close()


async def leave_message(store: Store, caller: str = "0612345678") -> int:
    box = await store.boxes.open(store.tenant_id, "100")
    assert box is not None
    message_id = await box.save(SPEECH, caller, 3.0, RECEIVED.timestamp())
    assert message_id is not None
    return message_id


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_server_down_then_back(store: Store) -> None:
    port, clock = free_port(tcp=True), Clock()
    config = settings(port)

    async def settings_for(tenant_id: int) -> SmtpSettings:
        assert tenant_id == store.tenant_id
        return config

    mailer = Mailer(store.boxes, settings_for, retry_first=30.0, retry_max=3600.0, clock=clock)
    repo = SqlVoicemailRepo(store.db)
    message_id = await leave_message(store)
    assert await mailer.deliver_due() == 1030.0  # refused: next try in 30 s
    record = await repo.get(message_id)
    assert record.emailed_at is None and record.email_attempts == 1
    assert record.email_error == f"cannot connect to {HOST}:{port}: connection refused"
    clock.t += 10
    assert await mailer.deliver_due() == 1030.0  # not due yet: no attempt
    assert (await repo.get(message_id)).email_attempts == 1
    clock.t = 1031.0
    assert await mailer.deliver_due() == 1031.0 + 60.0  # the wait doubles
    assert (await repo.get(message_id)).email_attempts == 2
    assert (store.data / record.path).is_file()  # the message is kept meanwhile
    inbox = Inbox()
    with smtp_server(inbox, port):
        clock.t = 1100.0
        assert await mailer.deliver_due() is None
    (mail,) = inbox.mails
    assert mail["Subject"] == "New voicemail from 0612345678 (3 s)"
    record = await repo.get(message_id)
    assert record.emailed_at is not None and record.email_attempts == 2
    assert (store.data / record.path).is_file()  # kept: delete-after-mail is off
    assert await mailer.deliver_due() is None and len(inbox.mails) == 1  # sent once


def test_back_off_is_capped() -> None:
    class Queue:
        def add_listener(self, listener: Any) -> None:
            pass

    mailer = Mailer(Queue(), settings_for=None, retry_first=30.0, retry_max=3600.0)  # type: ignore[arg-type]
    assert [mailer.delay(n) for n in (1, 2, 3, 7, 8, 30)] == [30, 60, 120, 1920, 3600, 3600]
    with pytest.raises(ValueError):
        Mailer(Queue(), settings_for=None, retry_first=0)  # type: ignore[arg-type]


async def test_delete_after_mail_only_once_sent(store: Store) -> None:
    await SqlUserSettingsRepo(store.db).update_settings(
        store.alice, voicemail_delete_after_mail=True, voicemail_email_attach=False
    )
    port, clock = free_port(tcp=True), Clock()

    async def settings_for(tenant_id: int) -> SmtpSettings:
        return settings(port)

    mailer = Mailer(store.boxes, settings_for, retry_first=1.0, clock=clock)
    message_id = await leave_message(store)
    path = store.data / (await SqlVoicemailRepo(store.db).get(message_id)).path
    await mailer.deliver_due()  # down: nothing deleted
    assert path.is_file()
    store.changes.clear()
    inbox = Inbox()
    with smtp_server(inbox, port):
        clock.t += 5
        await mailer.deliver_due()
    (mail,) = inbox.mails
    assert list(mail.iter_attachments()) == []  # the user does not want the WAV
    assert not path.exists()
    box = await store.boxes.open(store.tenant_id, "100")
    assert box is not None and await box.messages() == []
    assert store.changes == [(store.tenant_id, "100")]  # message waiting is told


async def test_one_broken_server_is_tried_once_per_pass(store: Store) -> None:
    calls: list[str] = []

    async def failing(config: SmtpSettings, message: EmailMessage) -> None:
        calls.append(str(message["To"]))
        raise MailError(f"cannot connect to {config.address}: connection refused")

    async def settings_for(tenant_id: int) -> SmtpSettings:
        return settings(25)

    mailer = Mailer(store.boxes, settings_for, sender=failing)
    first, second = await leave_message(store), await leave_message(store, "0699")
    await mailer.deliver_due()
    assert len(calls) == 1  # the second message did not dial the dead server again
    repo = SqlVoicemailRepo(store.db)
    assert [(await repo.get(i)).email_attempts for i in (first, second)] == [1, 1]
    assert (await repo.get(second)).email_error.startswith("cannot connect to")


async def test_a_refused_message_does_not_hold_up_the_others(store: Store) -> None:
    sent: list[str] = []

    async def picky(config: SmtpSettings, message: EmailMessage) -> None:
        if "0666" in str(message["Subject"]):
            raise MessageRefusedError("SMTP server refused the recipient x: 550 no")
        sent.append(str(message["Subject"]))

    async def settings_for(tenant_id: int) -> SmtpSettings:
        return settings(25)

    mailer = Mailer(store.boxes, settings_for, sender=picky)
    refused = await leave_message(store, "0666")
    await leave_message(store, "0612")
    await mailer.deliver_due()
    assert sent == ["New voicemail from 0612 (3 s)"]
    assert (await SqlVoicemailRepo(store.db).get(refused)).email_attempts == 1


async def test_unconfigured_smtp_is_a_visible_failure(store: Store) -> None:
    mailer = Mailer(
        store.boxes, lambda tenant_id: load_smtp_settings(SqlSettingsRepo(store.db), tenant_id)
    )
    message_id = await leave_message(store)
    await mailer.deliver_due()
    record = await SqlVoicemailRepo(store.db).get(message_id)
    assert record.email_attempts == 1
    assert record.email_error == "SMTP is not configured: set the SMTP server (smtp_host)"


async def test_tenant_settings_fall_back_to_system_ones(store: Store) -> None:
    repo = SqlSettingsRepo(store.db)
    await repo.set("smtp.host", "smtp.example.com")
    await repo.set("smtp.security", "tls")
    await repo.set("smtp.from", "pbx@example.com")
    await repo.set("smtp.host", "mail.tenant.example", tenant_id=store.tenant_id)
    config = await load_smtp_settings(repo, store.tenant_id)
    assert (config.host, config.security, config.sender) == (
        "mail.tenant.example",
        "tls",
        "pbx@example.com",
    )
    assert (await load_smtp_settings(repo, None)).host == "smtp.example.com"


async def test_new_message_wakes_the_running_mailer(store: Store) -> None:
    port = free_port(tcp=True)

    async def settings_for(tenant_id: int) -> SmtpSettings:
        return settings(port)

    mailer = Mailer(store.boxes, settings_for, poll=3600.0)
    inbox = Inbox()
    with smtp_server(inbox, port):
        task = asyncio.create_task(mailer.run())
        try:
            await asyncio.sleep(0)
            await leave_message(store)
            for _ in range(500):
                if inbox.mails:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert len(inbox.mails) == 1


# --- "send test mail" in the API and the console, delivery state in the list ---------------


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[tuple[WebContext, Any]]:
    data = tmp_path / "web"
    ctx = WebContext(
        db=Database.for_data_dir(data),
        live=StaticLiveState(started_at=1_800_000_000.0),
        secret=b"k" * 32,
        data_dir=data,
        passwords=Passwords(fast=True),
    )
    await ctx.db.upgrade()
    await ctx.tenants.ensure_default()
    yield ctx, create_app(ctx)
    await ctx.db.close()


async def test_test_mail_endpoint(web: tuple[WebContext, Any]) -> None:
    ctx, app = web
    port = free_port(tcp=True)
    tenant = await ctx.tenants.create("a.example", name="Tenant A")
    async with (
        client_for(app, await make_admin(ctx, "root", None)) as root,
        client_for(app, await make_admin(ctx, "alice", tenant.id)) as alice,
    ):
        url = "/api/v1/settings/test-mail"
        r = await root.post(url, json={"to": "ops@example.com"})
        assert r.status_code == 502
        assert r.json()["detail"] == "SMTP is not configured: set the SMTP server (smtp_host)"
        system = {"smtp_host": HOST, "smtp_port": port, "smtp_security": "none"}
        r = await root.patch("/api/v1/settings", json={**system, "smtp_from": "pbx@example.com"})
        assert r.status_code == 200, r.text
        assert r.json()["smtp_require_secure"] is None
        inbox = Inbox()
        with smtp_server(inbox, port):
            r = await root.post(url, json={"to": "ops@example.com"})
            assert r.status_code == 200, r.text
            assert r.json() == {"sent": True, "to": "ops@example.com", "server": f"{HOST}:{port}"}
            # a tenant admin tests its tenant's settings: its own sender, the system's server
            await alice.patch(
                f"/api/v1/tenants/{tenant.id}/settings", json={"smtp_from": "a@a.example"}
            )
            r = await alice.post(url, json={"to": "boss@a.example"})
            assert r.status_code == 200, r.text
        assert [e[:2] for e in inbox.envelopes] == [
            ("pbx@example.com", ["ops@example.com"]),
            ("a@a.example", ["boss@a.example"]),
        ]
        r = await root.post(url, json={"to": "ops@example.com"})  # the server is gone
        assert r.status_code == 502
        assert r.json()["detail"] == f"cannot connect to {HOST}:{port}: connection refused"
        assert (await root.post(url, json={"to": "nobody"})).status_code == 422
        assert (await root.post(url, json={})).status_code == 422
        r = await alice.post(url, json={"to": "x@a.example", "tenant_id": tenant.id + 99})
        assert r.status_code == 404
        r = await root.patch("/api/v1/settings", json={"voicemail_max_seconds": 2})
        assert r.status_code == 422


async def test_console_test_mail_and_delivery_state(web: tuple[WebContext, Any]) -> None:
    ctx, app = web
    port = free_port(tcp=True)
    await ctx.settings.set("smtp.host", HOST)
    await ctx.settings.set("smtp.port", str(port))
    await ctx.settings.set("smtp.security", "none")
    await ctx.settings.set("smtp.from", "pbx@example.com")
    await ctx.admins.add("sys", ctx.passwords.hash_now(PASSWORD), tenant_id=None)
    async with client_for(app) as client:
        csrf = await log_in(client, "sys")
        page = await client.get("/settings")
        assert 'action="/settings/test-mail"' in page.text and "Voicemail" in page.text
        inbox = Inbox()
        with smtp_server(inbox, port):
            r = await client.post(
                "/settings/test-mail", data={"csrf_token": csrf, "to": "ops@example.com"}
            )
        assert r.status_code == 200 and "Test mail sent to ops@example.com" in r.text
        assert len(inbox.mails) == 1
        r = await client.post(
            "/settings/test-mail", data={"csrf_token": csrf, "to": "ops@example.com"}
        )
        assert r.status_code == 502 and "connection refused" in r.text
        r = await client.post("/settings/test-mail", data={"csrf_token": csrf, "to": "x"})
        assert r.status_code == 422
        r = await client.post("/settings/test-mail", data={"to": "ops@example.com"})
        assert r.status_code in (400, 403)  # no CSRF token
        assert csrf_of(page.text)
        # the delivery state of messages in the voicemail list
        user = await SqlUserRepo(ctx.db).add("100", "pw", email="alice@example.com")
        repo = SqlVoicemailRepo(ctx.db)
        failed = await repo.add(user.id, "voicemail/1/100/a.wav", RECEIVED, duration_ms=3000)
        await repo.record_email_failure(failed.id, "cannot connect to smtp: connection refused")
        sent = await repo.add(user.id, "voicemail/1/100/b.wav", RECEIVED, duration_ms=2000)
        await repo.mark_emailed(sent.id, RECEIVED + dt.timedelta(minutes=1))
        listing = await client.get("/voicemail")
        assert listing.status_code == 200
        assert "not sent after 1 attempt" in listing.text
        assert "cannot connect to smtp: connection refused" in listing.text
        assert "sent 2030-01-09 14:31:00" in listing.text
        api = await client.get(f"/api/v1/voicemail/{failed.id}")
        assert api.json()["email_attempts"] == 1 and api.json()["email_error"].startswith("cannot")
