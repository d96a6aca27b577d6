"""One-off checks with sipsak (OPTIONS) and sipvicious svwar (extension enumeration)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Pbx
from tests.e2e.support import HOST, free_port, require_tool

pytestmark = pytest.mark.slow

FIRST_SCAN, LAST_SCAN = 100, 110  # the range the issue names; test users start at 100


def test_options_answers_200_with_allow(pbx: Pbx) -> None:
    sipsak = require_tool("sipsak", "sipsak")
    done = subprocess.run(
        [sipsak, "-vv", "-H", HOST, "-l", str(free_port()), "-s", f"sip:{HOST}:{pbx.port}"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"sipsak exited {done.returncode} (0 means a 200):\n{output}"
    assert "SIP/2.0 200" in output, output
    allow = [line for line in output.splitlines() if line.lower().startswith("allow:")]
    assert allow, f"no Allow header:\n{output}"
    methods = {m.strip() for m in allow[0].split(":", 1)[1].split(",")}
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"} <= methods, allow[0]


def test_svwar_finds_no_extension(pbx: Pbx, tmp_path: Path) -> None:
    """Known extensions (100..) and unknown ones get the same answer: nothing to enumerate."""
    svwar = require_tool("svwar", "sipvicious")
    assert str(FIRST_SCAN) in pbx.passwords, "the scan must cover existing extensions"
    done = subprocess.run(
        [
            svwar,
            "--force",
            f"-e{FIRST_SCAN}-{LAST_SCAN}",
            "-m",
            "REGISTER",
            "-b",
            HOST,
            "-x",
            HOST,
            "-P",
            str(free_port()),
            HOST,
            "-p",
            str(pbx.port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},  # svwar keeps no state in the real home
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"svwar exited {done.returncode}:\n{output}"
    assert "found nothing" in output, output
    found = [
        line for line in output.splitlines() if line.startswith("|") and "Extension" not in line
    ]
    assert not found, f"svwar enumerated extensions:\n{output}"
