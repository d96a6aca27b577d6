"""E-mail through a tenant's SMTP server: voicemail messages (with retries) and test mail.

- :class:`SmtpSettings` are a tenant's ``smtp.*`` settings (the tenant's own value of each
  key, else the system-wide one: :func:`load_smtp_settings`). Security is ``none`` (plain
  SMTP, RFC 5321), ``starttls`` (RFC 3207: plain connection upgraded to TLS, required:
  a server that does not offer it is an error, never a silent downgrade) or ``tls``
  (implicit TLS from the first byte, RFC 8314 3.3, port 465). ``require_secure`` (the
  "server requires a secure connection" box, default on) refuses to send the login (SMTP
  AUTH, RFC 4954) over a connection that is not encrypted. Certificates are verified
  against the system's CAs (plus ``ca_file``) and the host name.
- Sending uses the standard library's :mod:`smtplib` in a worker thread
  (``asyncio.to_thread``): no new dependency, and the event loop never waits on a slow
  server. Every failure is a :class:`MailError` whose message says what to fix
  ("SMTP server refused the login: 535 ...", "cannot connect to smtp.example.com:587:
  connection refused", "certificate verify failed for smtp.example.com: ...").
- :class:`Mailer` delivers voicemail from a persistent queue (:class:`MailQueue`, the
  messages not yet e-mailed, kept in the database by :mod:`minipbx.voicemail`): a failure
  is recorded on the message (attempts, last error, shown in the console) and retried
  with back-off (``retry_first`` doubling up to ``retry_max``: 30 s to 1 h); a message is
  never dropped because mail failed, and is deleted after mailing (when its user wants
  that) only once the server accepted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formatdate, make_msgid
from typing import Protocol

from minipbx.store.errors import StoreError

log = logging.getLogger("minipbx.mail")

SECURITY_MODES = ("none", "starttls", "tls")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}
SETTING_KEYS = {
    "host": "smtp.host",
    "port": "smtp.port",
    "security": "smtp.security",
    "username": "smtp.username",
    "password": "smtp.password",
    "sender": "smtp.from",
    "require_secure": "smtp.require_secure",
}
"""Field of :class:`SmtpSettings` -> the settings key it is stored under."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MailError(Exception):
    """Mail that could not be sent; ``str()`` says why, for the admin."""


class MessageRefusedError(MailError):
    """The server refused this message (its sender or recipient), not every message."""


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """How to reach a tenant's SMTP server (see the module doc). ``port`` 0: the usual
    port of ``security`` (25, 587, 465)."""

    host: str
    port: int = 0
    security: str = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = ""
    require_secure: bool = True
    timeout: float = 30.0
    ca_file: str | None = None  # extra CA certificates to trust (a private CA)
    helo_name: str | None = None  # our name in EHLO (None: this host's FQDN)

    def __post_init__(self) -> None:
        if not self.host:
            raise MailError("SMTP is not configured: set the SMTP server (smtp_host)")
        if self.security not in SECURITY_MODES:
            raise MailError(f"SMTP security {self.security!r} is not one of none, starttls, tls")
        if not 0 <= self.port <= 65535:
            raise MailError(f"SMTP port {self.port} is not between 1 and 65535")

    @property
    def effective_port(self) -> int:
        """The port connected to."""
        return self.port or DEFAULT_PORTS[self.security]

    @property
    def address(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.effective_port}"

    @property
    def from_address(self) -> str:
        """The sender: ``sender``, else the login when it is an address."""
        if self.sender:
            return self.sender
        if "@" in self.username:
            return self.username
        raise MailError("no sender address: set the SMTP sender address (smtp_from)")

    @classmethod
    def from_values(cls, values: Mapping[str, str | None], **extra: object) -> SmtpSettings:
        """Settings from stored text values by key (``smtp.host``...); MailError when a
        value is unusable (the API checks them, but the table can be edited by hand)."""

        def get(name: str) -> str:
            return (values.get(SETTING_KEYS[name]) or "").strip()

        port_text = get("port")
        if port_text and not port_text.isdigit():
            raise MailError(f"SMTP port {port_text!r} is not a number")
        secure_text = get("require_secure").lower()
        return cls(
            host=get("host"),
            port=int(port_text or 0),
            security=get("security").lower() or "starttls",
            username=get("username"),
            password=values.get(SETTING_KEYS["password"]) or "",
            sender=get("sender"),
            require_secure=(secure_text in _TRUE) if secure_text else True,
            **extra,  # type: ignore[arg-type]
        )


class SettingsSource(Protocol):
    """Where settings are read (``minipbx.store.SqlSettingsRepo``)."""

    async def get(self, key: str, *, tenant_id: int | None = None) -> str | None: ...

    async def resolve(self, key: str, tenant_id: int) -> str | None: ...


async def load_smtp_settings(
    settings: SettingsSource, tenant_id: int | None, **extra: object
) -> SmtpSettings:
    """The SMTP settings of a tenant (each key: the tenant's value, else the system-wide
    one) or the system-wide ones (``tenant_id`` None). MailError when not configured."""
    values: dict[str, str | None] = {}
    for key in SETTING_KEYS.values():
        if tenant_id is None:
            values[key] = await settings.get(key)
        else:
            values[key] = await settings.resolve(key, tenant_id)
    return SmtpSettings.from_values(values, **extra)


def smtp_settings_loader(
    settings: SettingsSource, **extra: object
) -> Callable[[int], Awaitable[SmtpSettings]]:
    """A function giving a tenant's settings (what :class:`Mailer` asks)."""

    async def load(tenant_id: int) -> SmtpSettings:
        return await load_smtp_settings(settings, tenant_id, **extra)

    return load


# -- sending ----------------------------------------------------------------------------------


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()  # verifies the chain and the host name
    if settings.ca_file:
        context.load_verify_locations(cafile=settings.ca_file)
    return context


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{exc.smtp_code} {' '.join(message.split())}".strip()


def _explain(exc: BaseException, settings: SmtpSettings) -> MailError:
    """A MailError saying, in the admin's words, what went wrong."""
    where = settings.address
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return MailError(f"SMTP server refused the login: {_reply(exc)}")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(
            f"{rcpt}: {code} {msg.decode('utf-8', 'replace')}"
            for rcpt, (code, msg) in exc.recipients.items()
        )
        return MessageRefusedError(f"SMTP server refused the recipient {refused}")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return MessageRefusedError(f"SMTP server refused the sender {exc.sender}: {_reply(exc)}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return MailError(f"SMTP server {where} answered {_reply(exc)}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return MailError(f"SMTP server {where} closed the connection ({exc or 'no reason'})")
    if isinstance(exc, smtplib.SMTPException):
        return MailError(f"SMTP error with {where}: {exc}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or str(exc)
        return MailError(f"certificate verify failed for {settings.host}: {why}")
    if isinstance(exc, ssl.SSLError):
        return MailError(f"TLS with {where} failed: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return MailError(f"cannot find SMTP server {settings.host}: {exc.strerror or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return MailError(f"cannot connect to {where}: connection refused")
    if isinstance(exc, TimeoutError):
        return MailError(f"cannot connect to {where}: timed out after {settings.timeout:g} s")
    if isinstance(exc, OSError):
        reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
        return MailError(f"cannot connect to {where}: {reason}")
    return MailError(f"sending mail through {where} failed: {exc}")


def _session(smtp: smtplib.SMTP, settings: SmtpSettings, message: EmailMessage) -> None:
    """EHLO, STARTTLS when asked, AUTH when there is a login, then the message."""
    smtp.ehlo()
    encrypted = settings.security == "tls"
    if settings.security == "starttls":
        if not smtp.has_extn("starttls"):
            raise MailError(
                f"the SMTP server {settings.address} does not offer STARTTLS;"
                " choose security tls (port 465) or none"
            )
        smtp.starttls(context=_tls_context(settings))  # RFC 3207 4.2: EHLO again after
        smtp.ehlo()
        encrypted = True
    if settings.username:
        if not encrypted and settings.require_secure:
            raise MailError(
                f"refusing to send the SMTP password to {settings.address} over an unencrypted"
                " connection: choose security starttls or tls (or allow logins in plain text)"
            )
        if not smtp.has_extn("auth"):
            raise MailError(
                f"the SMTP server {settings.address} does not offer a login (AUTH);"
                " leave the SMTP username empty"
            )
        smtp.login(settings.username, settings.password)
    recipients = [a.strip() for a in str(message["To"]).split(",") if a.strip()]
    smtp.send_message(message, from_addr=settings.from_address, to_addrs=recipients)


def send_blocking(settings: SmtpSettings, message: EmailMessage) -> None:
    """Send ``message`` (blocking: run it in a thread). Raises MailError."""
    _ = settings.from_address  # MailError before connecting when there is none
    try:
        smtp: smtplib.SMTP
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.host,
                settings.effective_port,
                local_hostname=settings.helo_name,
                timeout=settings.timeout,
                context=_tls_context(settings),
            )
        else:
            smtp = smtplib.SMTP(
                settings.host,
                settings.effective_port,
                local_hostname=settings.helo_name,
                timeout=settings.timeout,
            )
        with smtp:
            _session(smtp, settings, message)
    except MailError:
        raise
    except (smtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
        raise _explain(exc, settings) from exc


async def send(settings: SmtpSettings, message: EmailMessage) -> None:
    """Send ``message`` from a worker thread. Raises MailError."""
    await asyncio.to_thread(send_blocking, settings, message)


def _clean(text: str, limit: int = 200) -> str:
    """``text`` safe in a header: no control characters (no header injection)."""
    return _CONTROL.sub(" ", text).strip()[:limit]


def make_test_mail(settings: SmtpSettings, to: str) -> EmailMessage:
    """The message "send test mail" sends."""
    message = EmailMessage()
    message["Subject"] = "minipbx test mail"
    message["From"] = settings.from_address
    message["To"] = _clean(to)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=settings.from_address.rpartition("@")[2] or None)
    message.set_content(
        "This is a test mail from minipbx: the SMTP settings work.\n\n"
        f"Server: {settings.address} (security: {settings.security})\n"
    )
    return message


async def send_test_mail(settings: SmtpSettings, to: str) -> None:
    """Send a test mail to ``to``; MailError says what is wrong with the settings."""
    if not to or "@" not in to:
        raise MailError(f"{to!r} is not an e-mail address")
    await send(settings, make_test_mail(settings, to))
    log.info("event=test_mail_sent server=%s to=%s", settings.address, to)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A voicemail message to e-mail: whose, to where, and what it is."""

    message_id: int
    tenant_id: int
    extension: str
    to: str
    attach: bool
    delete_after: bool
    caller: str
    caller_name: str
    received: datetime  # aware
    seconds: float
    attempts: int = 0


def voicemail_mail(sender: str, delivery: Delivery, wav: bytes | None) -> EmailMessage:
    """The e-mail of a voicemail message: subject "New voicemail from <caller> (<n> s)",
    a body with caller, time and length, and the WAV attached when given."""
    caller = _clean(delivery.caller, 64)
    name = _clean(delivery.caller_name, 100)
    who = f"{name} ({caller})" if name and caller else (name or caller or "an unknown caller")
    seconds = max(1, round(delivery.seconds))
    local = delivery.received.astimezone()
    message = EmailMessage()
    message["Subject"] = f"New voicemail from {who} ({seconds} s)"
    message["From"] = sender
    message["To"] = _clean(delivery.to, 320)
    message["Date"] = format_datetime(local)
    message["Message-ID"] = make_msgid(
        f"vm{delivery.message_id}", domain=sender.rpartition("@")[2] or None
    )
    lines = [
        f"You have a new voicemail message in mailbox {delivery.extension}.",
        "",
        f"From:     {who}",
        f"Received: {local:%A %d %B %Y %H:%M:%S %Z}",
        f"Length:   {seconds} s",
        "",
        "The recording is attached (WAV)."
        if wav is not None
        else "Call your voicemail to listen to it.",
    ]
    message.set_content("\n".join(lines) + "\n")
    if wav is not None:
        stamp = f"{delivery.received:%Y%m%d-%H%M%S}"
        tail = re.sub(r"[^0-9A-Za-z+]", "", caller)[:32] or "unknown"
        message.add_attachment(
            wav, maintype="audio", subtype="wav", filename=f"voicemail-{stamp}-{tail}.wav"
        )
    return message


# -- the voicemail mail queue -----------------------------------------------------------------


class MailQueue(Protocol):
    """The messages waiting to be e-mailed (``minipbx.voicemail.SqlMailboxes``)."""

    async def pending(self, limit: int) -> list[Delivery]:
        """Messages not yet e-mailed whose user has an address, oldest first."""
        ...

    async def audio_of(self, message_id: int) -> bytes | None:
        """A message's recording (None when the file is gone)."""
        ...

    async def mail_failed(self, message_id: int, error: str) -> int:
        """Record a failed attempt; returns the attempts so far."""
        ...

    async def mailed(self, delivery: Delivery) -> None:
        """Record the message as e-mailed; delete it when its user wants that."""
        ...

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever a new message was stored."""
        ...


Sender = Callable[[SmtpSettings, EmailMessage], Awaitable[None]]


class Mailer:
    """Sends voicemail e-mail from a :class:`MailQueue`, retrying with back-off.

    ``settings_for(tenant_id)`` gives the SMTP settings (raising MailError when there are
    none: that counts as a failed attempt, visible in the console). A failed message waits
    ``retry_first * 2 ** (attempts - 1)`` seconds, at most ``retry_max``, before the next
    try (counted from this process's start: after a restart every message is tried at
    once). When one message of a tenant fails for a reason that is not the message's own
    (no connection, refused login), the tenant's other messages wait for the next pass
    with the same error, so a dead server is not dialled once per message.
    """

    def __init__(
        self,
        queue: MailQueue,
        settings_for: Callable[[int], Awaitable[SmtpSettings]],
        *,
        retry_first: float = 30.0,
        retry_max: float = 3600.0,
        poll: float = 60.0,
        batch: int = 200,
        clock: Callable[[], float] = time.monotonic,
        sender: Sender = send,
    ) -> None:
        if retry_first <= 0 or retry_max < retry_first or poll <= 0 or batch < 1:
            raise ValueError("Mailer: retry_first, retry_max, poll and batch must be positive")
        self.queue = queue
        self.settings_for = settings_for
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.poll = poll
        self.batch = batch
        self.clock = clock
        self.sender = sender
        self._not_before: dict[int, float] = {}
        self._wake = asyncio.Event()
        queue.add_listener(self.wake)

    def wake(self) -> None:
        """Look at the queue now (a new message was stored)."""
        self._wake.set()

    def delay(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failures."""
        return min(self.retry_max, self.retry_first * 2.0 ** max(0, attempts - 1))

    async def deliver_due(self) -> float | None:
        """One pass over the queue: send what is due. Returns when the next failed message
        is due (the clock's time), or None when none waits."""
        now = self.clock()
        pending = await self.queue.pending(self.batch)
        waiting = {d.message_id for d in pending}
        self._not_before = {k: v for k, v in self._not_before.items() if k in waiting}
        broken: dict[int, MailError] = {}  # tenants whose server failed in this pass
        for delivery in pending:
            if self._not_before.get(delivery.message_id, now) > now:
                continue
            error = broken.get(delivery.tenant_id)
            if error is None:
                error = await self._try(delivery)
                if error is not None and not isinstance(error, MessageRefusedError):
                    broken[delivery.tenant_id] = error
            if error is not None:
                attempts = await self.queue.mail_failed(delivery.message_id, str(error))
                wait = self.delay(attempts)
                self._not_before[delivery.message_id] = self.clock() + wait
                log.warning(
                    "event=voicemail_mail_failed id=%s tenant=%s attempts=%d retry_in=%.0f"
                    " error=%r",
                    delivery.message_id,
                    delivery.tenant_id,
                    attempts,
                    wait,
                    str(error),
                )
        return min(self._not_before.values(), default=None)

    async def _try(self, delivery: Delivery) -> MailError | None:
        """Send one message; the error, or None once it was sent and recorded."""
        try:
            settings = await self.settings_for(delivery.tenant_id)
            wav = await self.queue.audio_of(delivery.message_id) if delivery.attach else None
            message = voicemail_mail(settings.from_address, delivery, wav)
        except MailError as exc:
            return exc
        except ValueError as exc:  # a bad address in a header
            return MessageRefusedError(f"cannot build the e-mail: {exc}")
        try:
            await self.sender(settings, message)
        except MailError as exc:
            return exc
        log.info(
            "event=voicemail_mailed id=%s tenant=%s to=%s attached=%s",
            delivery.message_id,
            delivery.tenant_id,
            delivery.to,
            wav is not None,
        )
        self._not_before.pop(delivery.message_id, None)
        await self.queue.mailed(delivery)
        return None

    async def run(self) -> None:
        """Deliver until cancelled: at start, when woken, when a retry is due, and every
        ``poll`` seconds (messages stored by another process)."""
        while True:
            self._wake.clear()
            try:
                due = await self.deliver_due()
            except StoreError as exc:
                log.warning("event=voicemail_mail_queue_unavailable error=%r", str(exc))
                due = self.clock() + self.retry_first
            except Exception:  # a bug must not stop voicemail e-mail for good
                log.exception("event=voicemail_mailer_failed")
                due = self.clock() + self.retry_first
            wait = self.poll if due is None else min(self.poll, max(0.0, due - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)


__all__ = [
    "DEFAULT_PORTS",
    "SECURITY_MODES",
    "SETTING_KEYS",
    "Delivery",
    "MailError",
    "MailQueue",
    "Mailer",
    "MessageRefusedError",
    "SmtpSettings",
    "load_smtp_settings",
    "make_test_mail",
    "send",
    "send_blocking",
    "send_test_mail",
    "smtp_settings_loader",
    "voicemail_mail",
]
