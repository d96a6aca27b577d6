"""Compute a Digest ``Authorization`` / ``Proxy-Authorization`` header for a SIPp scenario.

SIPp 3.6.1's ``[authentication]`` keyword reads only the first ``WWW-Authenticate`` /
``Proxy-Authenticate`` header of a challenge and gives up when it is not MD5
("createAuthHeader: authentication must use MD5 or AKAv1-MD5"). minipbx offers SHA-256 first
and MD5 second (RFC 8760 2.4), so the scenarios pick the MD5 challenge with ``<ereg>`` and run
this script with ``<exec>``; it writes the header line to a file the next request inserts
with ``[file name=...]``.

Usage: sipp_digest.py OUT HEADER METHOD URI USER PASSWORD CHALLENGE
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys

_PARAM = re.compile(r'([\w-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorization(
    header: str, method: str, uri: str, user: str, password: str, challenge: str
) -> str:
    """The credentials header line answering an MD5 ``challenge`` (RFC 2617 / RFC 7616)."""
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(challenge)
    }
    if params.get("algorithm", "MD5").upper() != "MD5":
        raise SystemExit(f"not an MD5 challenge: {challenge}")
    realm, nonce = params["realm"], params["nonce"]
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce, nc = secrets.token_hex(8), "00000001"
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', f'cnonce="{cnonce}"', "qop=auth", f"nc={nc}"]
    else:
        fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    fields.append("algorithm=MD5")
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return f"{header}: Digest " + ", ".join(fields)


def main(argv: list[str]) -> int:
    """Write the header line (no line break: SIPp inserts the file as it is)."""
    out, header, method, uri, user, password, challenge = argv
    line = authorization(header, method, uri, user, password, challenge)
    with open(out + ".tmp", "w") as fh:
        fh.write(line)
    os.replace(out + ".tmp", out)  # the scenario never reads a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
