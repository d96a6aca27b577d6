"""The ``minipbx`` command line.

Only the pieces that exist are wired here; ``minipbx run`` (the server) arrives with the
PBX issue. Every failure is one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from minipbx import __version__
from minipbx.sip import ParseError, parse


def _check(args: argparse.Namespace) -> int:
    """Parse SIP messages from files and print what they are, or why they are rejected."""
    status = 0
    for path in args.files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            print(f"minipbx: cannot read {path}: {exc.strerror}", file=sys.stderr)
            status = 2
            continue
        try:
            msg = parse(data)
        except ParseError as exc:
            action = f"answer {exc.status}" if exc.answerable else "drop"
            print(f"{path}: invalid ({action}): {exc.reason}")
            status = max(status, 1)
            continue
        print(f"{path}: ok: {msg!r} Call-ID={msg.call_id} CSeq={msg.cseq}")
    return status


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests)."""
    ap = argparse.ArgumentParser(prog="minipbx", description="minipbx IP-PBX")
    ap.add_argument("--version", action="version", version=f"minipbx {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    check = sub.add_parser("sip-check", help="parse SIP messages from files and report")
    check.add_argument("files", nargs="+", help="files holding one SIP message each")
    check.set_defaults(func=_check)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``minipbx`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
