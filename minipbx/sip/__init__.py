"""The sans-IO SIP core: messages, URIs, headers, SDP, digest auth, transactions, dialogs.

Nothing in this package does I/O or reads a clock; callers pass bytes and ``now``.
"""

from minipbx.sip.errors import ParseError, SipError, TransactionError
from minipbx.sip.headers import CSeq, NameAddr, Token, Via
from minipbx.sip.message import Headers, Message, Request, Response, build_request
from minipbx.sip.parser import Keepalive, StreamError, StreamFramer, parse
from minipbx.sip.uri import AbsoluteUri, SipUri, TelUri, Uri, parse_uri

__all__ = [
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
