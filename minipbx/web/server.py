"""Serving the web application inside the PBX process, on the PBX's event loop.

:class:`WebServer` binds its TCP socket itself (so a port in use is one clear
:class:`WebServerError` at start, and port 0 gives a free port whose number
:attr:`WebServer.port` reports), then runs uvicorn as a task of the running loop. uvicorn's
own signal handling is switched off: SIGINT/SIGTERM belong to the PBX, which stops the
web server in :meth:`WebServer.stop` as part of its shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

log = logging.getLogger("minipbx.web")

STOP_TIMEOUT = 5.0


class WebServerError(Exception):
    """The web server cannot start (port in use, unreadable certificate); one line."""


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the PBX owns SIGINT and SIGTERM)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; WebServerError when that fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise WebServerError(f"cannot listen on http {where}: {exc.strerror or exc}") from None
    return sock


class WebServer:
    """uvicorn serving ``app`` on one socket of the running loop (HTTPS with cert/key)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        certfile: Path | None = None,
        keyfile: Path | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.certfile = certfile
        self.keyfile = keyfile
        self.port = 0
        self._sock: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def scheme(self) -> str:
        """``https`` when serving TLS, else ``http``."""
        return "https" if self.certfile else "http"

    @property
    def url(self) -> str:
        """The base URL of the server (with the bound port)."""
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}/"

    def _config(self) -> uvicorn.Config:
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=True,
            ssl_certfile=str(self.certfile) if self.certfile else None,
            ssl_keyfile=str(self.keyfile) if self.keyfile else None,
            timeout_graceful_shutdown=int(STOP_TIMEOUT),
        )
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # we log web_listening
        try:
            config.load()
        except (OSError, ssl.SSLError) as exc:
            raise WebServerError(f"cannot load the HTTPS certificate: {exc}") from None
        return config

    async def start(self) -> None:
        """Bind the socket and start serving (WebServerError if it cannot)."""
        config = self._config()
        self._sock = bind(self.host, self.requested_port)
        self.port = int(self._sock.getsockname()[1])
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it
            raise WebServerError("the web server stopped at start")
        log.info("event=web_listening url=%s", self.url)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (a few seconds at most)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT + 1.0)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
