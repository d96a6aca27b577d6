"""The sans-IO SIP core: messages, URIs, headers, SDP, digest auth, transactions, dialogs.

Nothing in this package does I/O or reads a clock; callers pass bytes and ``now``.
An install compiles it to C with mypyc (``setup.py``); the same code runs as plain Python
when it is not compiled, and ``COMPILED`` says which one is running.
"""

from minipbx.sip import parser as _parser
from minipbx.sip.errors import ParseError, SipError, TransactionError
from minipbx.sip.headers import CSeq, NameAddr, Token, Via
from minipbx.sip.message import Headers, Message, Request, Response, build_request
from minipbx.sip.parser import Keepalive, StreamError, StreamFramer, parse
from minipbx.sip.uri import AbsoluteUri, SipUri, TelUri, Uri, parse_uri

#: True when the SIP core runs as C extension modules built by mypyc, False as plain Python.
COMPILED: bool = not _parser.__file__.endswith(".py")

__all__ = [
    "COMPILED",
    "AbsoluteUri",
    "CSeq",
    "Headers",
    "Keepalive",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "SipError",
    "SipUri",
    "StreamError",
    "StreamFramer",
    "TelUri",
    "Token",
    "TransactionError",
    "Uri",
    "Via",
    "build_request",
    "parse",
    "parse_uri",
]
