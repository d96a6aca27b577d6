"""The asyncio STUN listener on real sockets, and ``minipbx run`` answering a real client."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from pathlib import Path

import pytest

from minipbx.config import ConfigError, load
from minipbx.stun import BINDING, Message, MessageClass, XorMappedAddress
from minipbx.transport.config import TransportError
from minipbx.transport.stun import StunListener
from tests.e2e.support import free_port, require_tool, stop

HOST = "127.0.0.1"


async def _query(port: int, data: bytes) -> tuple[bytes, tuple[str, int]]:
    """Send ``data`` from a fresh UDP socket; the answer and our own address."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: tuple[str, int]) -> None:
            answer.set_result(reply)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(HOST, port))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(answer, 2.0), transport.get_extra_info("sockname")
    finally:
        transport.close()


async def test_listener_answers_binding_requests() -> None:
    listener = StunListener(HOST, 0)
    await listener.start()
    try:
        assert listener.listening and listener.port != 0
        request = Message(BINDING, MessageClass.REQUEST, b"abcdefghijkl")
        reply, ours = await _query(listener.port, bytes(request))
        answer = Message.parse(reply)
        assert answer.message_class is MessageClass.SUCCESS
        assert answer.get(XorMappedAddress) == XorMappedAddress(*ours)
        assert listener.server.stats.answered == 1
    finally:
        await listener.stop()
    assert not listener.listening
    await listener.stop()  # idempotent


async def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        listener = StunListener(HOST, port)
        with pytest.raises(TransportError) as exc:
            await listener.start()
    assert str(exc.value) == f"cannot listen for STUN on udp {HOST}:{port}: Address already in use"
    assert not listener.listening


@pytest.mark.slow
def test_minipbx_run_answers_the_stun_client(tmp_path: Path) -> None:
    """``minipbx run`` with ``[server] stun_port``, queried by Debian's ``stun`` client.

    That client (stun-client 0.97) speaks RFC 3489, so this also covers the backwards
    compatibility of RFC 8489 12; the modern path is covered by the listener test above.
    """
    stun = require_tool("stun", "stun-client")
    from tests.e2e.conftest import start_pbx

    port = free_port()
    config = f"[server]\nstun_port = {port}\n"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    pbx = start_pbx(tmp_path / "a", {"100": "pw-100"}, config=config)
    try:
        source = free_port()
        done = subprocess.run(
            [stun, f"{HOST}:{port}", "1", "-v", "-p", str(source)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        output = done.stdout + done.stderr
        assert f"MappedAddress = {HOST}:{source}" in output, output
        assert re.search(r"ok=1", output), output
        full = subprocess.run([stun, f"{HOST}:{port}"], capture_output=True, text=True, timeout=30)
        assert "Primary: Open" in full.stdout + full.stderr  # no NAT between us and ourselves
        # A second PBX finds the STUN port taken: one error line, and it serves SIP anyway.
        second = start_pbx(tmp_path / "b", {"100": "pw-100"}, config=config)
        assert stop(second.process) == 0
        assert (
            "event=stun_unavailable error=cannot listen for STUN on udp "
            f"{HOST}:{port}: Address already in use"
        ) in second.log()
    finally:
        code = stop(pbx.process)
    log = pbx.log()
    assert code == 0, log
    assert f"event=listening transport=stun local={HOST}:{port}" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("", {}, 3478),
        ("[server]\nstun_port = 0\n", {}, 0),
        ("[server]\nstun_port = 3479\n", {}, 3479),
        ("", {"MINIPBX_STUN_PORT": ""}, None),
        ("[server]\nstun_port = 3479\n", {"MINIPBX_STUN_PORT": "5349"}, 5349),
    ],
)
def test_stun_port_setting(tmp_path: Path, toml: str, env: dict[str, str], expected: int) -> None:
    path = tmp_path / "minipbx.toml"
    path.write_text(toml)
    assert load(path, env=env).stun_port == expected


def test_stun_port_must_be_a_port() -> None:
    with pytest.raises(ConfigError, match="stun_port must be a port number"):
        load(env={"MINIPBX_STUN_PORT": "65536"})
