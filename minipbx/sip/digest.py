"""Sans-IO HTTP Digest authentication for SIP (RFC 3261 22, RFC 7616, RFC 8760).

Header values (:func:`parse_challenge`, :func:`parse_credentials`, ``str()`` of the frozen
:class:`Challenge` / :class:`Credentials`), the server side (:class:`DigestAuthenticator`:
stateless HMAC nonces, ``nc`` replay protection) and the client side for trunks
(:func:`select_challenge`, :func:`answer_challenge`). MD5, SHA-256 and their ``-sess``
variants; ``qop=auth`` and, for old phones, no qop (RFC 2069). No clock, no sockets: the
caller passes ``now`` and, where randomness is needed, an ``entropy`` callable.
"""

from __future__ import annotations

import binascii
import hashlib
import heapq
import hmac
import math
import re
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from enum import Enum

from minipbx.sip.errors import ParseError

Entropy = Callable[[int], bytes]


class Algorithm(Enum):
    """The Digest algorithms minipbx speaks (RFC 7616 3.3, 6.1; RFC 8760 2.3)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA_256 = "SHA-256"
    SHA_256_SESS = "SHA-256-sess"

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow (3.11)

    @property
    def hash_name(self) -> str:
        """The :mod:`hashlib` name of the underlying hash function."""
        return _HASH_NAMES[self]

    @property
    def is_session(self) -> bool:
        """True for the ``-sess`` variants (RFC 7616 3.4.2)."""
        return self in _SESSIONS

    @classmethod
    def from_name(cls, name: str | None) -> Algorithm | None:
        """Look up an ``algorithm`` parameter value; None for unknown names.

        An absent parameter means MD5 (RFC 7616 3.3); names compare case-insensitively.
        """
        if name is None:
            return cls.MD5
        return _ALGORITHMS_BY_NAME.get(name.lower())


_ALGORITHMS_BY_NAME = {a.value.lower(): a for a in Algorithm}
_HASH_NAMES = {
    Algorithm.MD5: "md5",
    Algorithm.MD5_SESS: "md5",
    Algorithm.SHA_256: "sha256",
    Algorithm.SHA_256_SESS: "sha256",
}
_SESSIONS = frozenset({Algorithm.MD5_SESS, Algorithm.SHA_256_SESS})
# hashlib's named constructors skip the lookup hashlib.new does on every call.
_HASH_NEW = {"md5": hashlib.md5, "sha256": hashlib.sha256}

# Client preference when a server offers several challenges (RFC 8760 2.4: the client
# uses the first supported one in its own order of preference).
_CLIENT_PREFERENCE = (Algorithm.SHA_256, Algorithm.SHA_256_SESS, Algorithm.MD5, Algorithm.MD5_SESS)


# --- Grammar (RFC 3261 25.1) -----------------------------------------------------------------

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE. qdtext excludes controls other
# than LWS; we reject every control except HTAB, inside quoted-pairs too, so that any
# parsed value can be written back (RFC 3261 25.1). Written as an unrolled loop (runs of
# qdtext between quoted-pairs): the regex engine then scans a plain value in one step.
_QDTEXT = r'[^"\\\x00-\x08\x0a-\x1f\x7f]*'  # a run of qdtext
_QUOTED_BODY = rf"{_QDTEXT}(?:\\[^\x00-\x08\x0a-\x1f\x7f]{_QDTEXT})*"
_QUOTED = re.compile(f'"({_QUOTED_BODY})"')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# One whole ``name = value`` item and its separator (SWS "," SWS, or the end): the common
# case in one regex call; anything it does not match goes through _parse_param for a
# precise error.
_ITEM = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=[ \t]*"
    f'(?:"({_QUOTED_BODY})"'
    r"|([A-Za-z0-9\-.!%*_+`'~]+))[ \t]*(?:(,)[ \t]*|\Z)"
)
_BAD_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # RFC 3261 7.3.1: a fold is equivalent to SP
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NC = re.compile(r"[0-9A-Fa-f]{8}")  # nc-value = 8LHEX (RFC 3261 25.1)


def _check_text(name: str, value: str) -> None:
    """Raise ValueError unless ``value`` can sit in a quoted-string."""
    if value.isascii() and value.isprintable():  # the usual case, without a regex
        return
    bad = _BAD_TEXT.search(value)
    if bad is not None:
        raise ValueError(f"{name}: character {bad.group()!r} not allowed in a quoted-string")


_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
_HEX = "0123456789ABCDEFabcdef"


def _check_token(name: str, value: str) -> None:
    if not value or value.strip(_TOKEN_CHARS):  # empty, or a character outside the set
        raise ValueError(f"{name}: {value!r} is not a token")


def _quote(value: str) -> str:
    """Write a quoted-string, escaping ``"`` and ``\\`` (RFC 3261 25.1 quoted-pair)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


# Parsed parameters: lower-case name -> (name as received, value).
_Params = dict[str, tuple[str, str]]


def _parse_auth_header(value: str, what: str) -> _Params:
    """Split ``Digest name=value, ...`` into parameters (RFC 3261 25.1 auth-param list)."""
    text = _FOLD.sub("", value) if "\n" in value else value
    if not text.isascii() and _SURROGATE.search(text):
        raise ParseError(f"{what}: not valid Unicode text")
    pos = _skip_ws(text, 0)
    scheme = _TOKEN.match(text, pos)
    if scheme is None:
        raise ParseError(f"{what}: expected an auth scheme at offset {pos}")
    if scheme.group().lower() != "digest":  # RFC 3261 22.1: SIP uses Digest only
        raise ParseError(f"{what}: unsupported auth scheme {scheme.group()!r}")
    pos = _skip_ws(text, scheme.end())
    if pos == scheme.end():  # "Digest" LWS digest-response
        raise ParseError(f"{what}: expected whitespace and parameters after the scheme")
    params: _Params = {}
    item = _ITEM.match
    while True:
        m = item(text, pos)
        if m is not None:
            name, quoted, token, comma = m.groups()
            if quoted is not None and "\\" in quoted:
                quoted = _QUOTED_PAIR.sub(r"\1", quoted)
            key = name.lower()
            if key in params:
                raise ParseError(f"{what}: duplicated parameter {name!r}")
            params[key] = (name, token if quoted is None else quoted)
            pos = m.end()
            if comma is None:
                return params
            continue
        name, param_value, pos = _parse_param(text, pos, what)
        key = name.lower()  # parameter names are case-insensitive
        if key in params:
            raise ParseError(f"{what}: duplicated parameter {name!r}")
        params[key] = (name, param_value)
        pos = _skip_ws(text, pos)
        if pos == len(text):
            return params
        if text[pos] != ",":  # COMMA = SWS "," SWS
            raise ParseError(f"{what}: expected ',' at offset {pos}, found {text[pos]!r}")
        pos = _skip_ws(text, pos + 1)


def _parse_param(text: str, pos: int, what: str) -> tuple[str, str, int]:
    """Parse ``auth-param-name EQUAL (token / quoted-string)`` at ``pos``."""
    name = _TOKEN.match(text, pos)
    if name is None:
        raise ParseError(f"{what}: expected a parameter name at offset {pos}")
    pos = _skip_ws(text, name.end())
    if text[pos : pos + 1] != "=":  # EQUAL = SWS "=" SWS
        raise ParseError(f"{what}: expected '=' after {name.group()!r}")
    pos = _skip_ws(text, pos + 1)
    if text[pos : pos + 1] == '"':
        quoted = _QUOTED.match(text, pos)
        if quoted is None:  # no closing quote, or a control character before it
            raise ParseError(f"{what}: unterminated or invalid quoted-string at offset {pos}")
        return name.group(), _QUOTED_PAIR.sub(r"\1", quoted.group(1)), quoted.end()
    token = _TOKEN.match(text, pos)
    if token is None:
        raise ParseError(f"{what}: expected a token or quoted-string at offset {pos}")
    return name.group(), token.group(), token.end()


def _take(params: _Params, key: str) -> str | None:
    """Remove and return the value of the parameter named ``key`` (lower case)."""
    item = params.pop(key, None)
    return None if item is None else item[1]


def _require(params: _Params, key: str, what: str) -> str:
    value = _take(params, key)
    if value is None:
        raise ParseError(f"{what}: missing required parameter {key!r}")
    return value


def _is_true(value: str | None) -> bool:
    # RFC 2617 3.2.1 / RFC 7616 3.3: anything other than "true" (any case) is false
    return value is not None and value.lower() == "true"


def _check_extras(params: tuple[tuple[str, str], ...], known: set[str]) -> None:
    seen: set[str] = set()
    for name, value in params:
        _check_token("parameter name", name)
        _check_text(name, value)
        key = name.lower()
        if key in known or key in seen:
            raise ValueError(f"parameter {name!r} duplicated or reserved")
        seen.add(key)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # dataclass fields, in order, by class


def _render(value: Challenge | Credentials, quoted: set[str]) -> str:
    """Write ``Digest name=value, ...`` from the fields of ``value``, in field order.

    RFC 3261 25.1: realm, nonce, opaque, domain, qop-options (challenge), username, uri,
    response, cnonce are quoted-strings; algorithm, stale, message-qop, nc are tokens.
    None, False and () mean absent; True is written ``true``; tuples are lists.
    """
    items = []
    names = _FIELD_NAMES.get(type(value))
    if names is None:
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in fields(value))
    for name in names:
        data = getattr(value, name)
        if name == "params" or data is None or data is False or data == ():
            continue
        if data is True:
            data = "true"
        elif isinstance(data, tuple):  # domain is space-separated, qop comma-separated
            data = (" " if name == "domain" else ",").join(data)
        items.append(f"{name}={_quote(data) if name in quoted else data}")
    items.extend(f"{n}={v if _TOKEN.fullmatch(v) else _quote(v)}" for n, v in value.params)
    return "Digest " + ", ".join(items)


# --- Header values ---------------------------------------------------------------------------

_CHALLENGE_KNOWN = {"realm", "nonce", "opaque", "stale", "algorithm", "qop", "domain", "userhash"}
_CREDENTIALS_KNOWN = {"username", "realm", "nonce", "uri", "response", "algorithm", "cnonce"}
_CREDENTIALS_KNOWN |= {"opaque", "qop", "nc", "userhash"}
_CHALLENGE_QUOTED = {"realm", "domain", "nonce", "opaque", "qop"}
_CREDENTIALS_QUOTED = {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"}


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge (RFC 3261 22.1).

    ``algorithm`` and ``qop`` keep their spelling; they are compared case-insensitively
    where used. ``params`` holds unknown parameters in order, names as received.
    """

    realm: str
    nonce: str
    opaque: str | None = None
    stale: bool = False
    algorithm: str | None = None  # None: absent, which means MD5 (RFC 7616 3.3)
    qop: tuple[str, ...] = ()  # empty: no qop-options (RFC 2069 server)
    domain: tuple[str, ...] = ()
    userhash: bool = False  # RFC 7616 3.4.4
    params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_text("realm", self.realm)
        _check_text("nonce", self.nonce)
        if self.opaque is not None:
            _check_text("opaque", self.opaque)
        if self.algorithm is not None:
            _check_token("algorithm", self.algorithm)
        for qop in self.qop:
            _check_token("qop", qop)
        for uri in self.domain:
            if not uri or _BAD_TEXT.search(uri) or re.search(r"[ \t]", uri):
                raise ValueError(f"domain: {uri!r} is not a URI")
        _check_extras(self.params, _CHALLENGE_KNOWN)

    def __str__(self) -> str:
        return _render(self, _CHALLENGE_QUOTED)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An ``Authorization`` / ``Proxy-Authorization`` Digest response (RFC 3261 22.2).

    ``nc`` is kept as sent (8 hex digits) because the response hash covers its text.
    With ``userhash`` true, ``username`` is H(username:realm) (RFC 7616 3.4.4).
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False
    params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("username", "realm", "nonce", "uri", "response", "cnonce", "opaque"):
            value = getattr(self, name)
            if value is not None:
                _check_text(name, value)
        if self.algorithm is not None:
            _check_token("algorithm", self.algorithm)
        if self.qop is not None:
            _check_token("qop", self.qop)
        nc = self.nc
        if nc is not None and (len(nc) != 8 or nc.strip(_HEX)):  # 8LHEX (RFC 3261 25.1)
            raise ValueError(f"nc: {self.nc!r} is not 8 hex digits")
        _check_extras(self.params, _CREDENTIALS_KNOWN)

    def __str__(self) -> str:
        return _render(self, _CREDENTIALS_QUOTED)


def parse_challenge(value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value.

    Raises :class:`ParseError` (status 400) on a grammar error, a scheme other than
    Digest, a duplicated parameter or a missing ``realm`` / ``nonce``.
    Tolerates quoted values where tokens are expected and vice versa.
    """
    what = "challenge"
    params = _parse_auth_header(value, what)
    # qop-options = "qop" EQUAL LDQUOT qop-value *("," qop-value) RDQUOT (RFC 3261 25.1)
    qop = (_take(params, "qop") or "").split(",")
    domain = re.split(r"[ \t]+", _take(params, "domain") or "")  # RFC 7616 3.3: URI list
    try:
        return Challenge(
            realm=_require(params, "realm", what),
            nonce=_require(params, "nonce", what),
            opaque=_take(params, "opaque"),
            stale=_is_true(_take(params, "stale")),
            algorithm=_take(params, "algorithm"),
            qop=tuple(item.strip(" \t") for item in qop if item.strip(" \t")),
            domain=tuple(uri for uri in domain if uri),
            userhash=_is_true(_take(params, "userhash")),
            params=tuple(params.values()),
        )
    except ParseError:
        raise
    except ValueError as exc:
        raise ParseError(f"{what}: {exc}") from exc


def parse_credentials(value: str) -> Credentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` header value.

    Raises :class:`ParseError` (status 400) on a grammar error, a scheme other than
    Digest, a duplicated parameter, a missing ``username`` / ``realm`` / ``nonce`` /
    ``uri`` / ``response`` or an ``nc`` that is not 8 hex digits. ``username*``
    (RFC 7616 3.4.4 extended notation) is not decoded: it stays in ``params``.
    """
    what = "credentials"
    params = _parse_auth_header(value, what)
    pop = params.pop
    try:  # the required ones, in this order (the first missing one is named)
        username, realm, nonce, uri, response = [pop(key)[1] for key in _CREDENTIALS_REQUIRED]
    except KeyError as exc:
        raise ParseError(f"{what}: missing required parameter {exc.args[0]!r}") from None
    algorithm, cnonce, opaque, qop, nc, userhash = [
        None if (item := pop(key, None)) is None else item[1] for key in _CREDENTIALS_OPTIONAL
    ]
    try:
        return Credentials(
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            cnonce,
            opaque,
            qop,
            nc,
            _is_true(userhash),
            tuple(params.values()),
        )
    except ValueError as exc:
        raise ParseError(f"{what}: {exc}") from exc


_CREDENTIALS_REQUIRED = ("username", "realm", "nonce", "uri", "response")
_CREDENTIALS_OPTIONAL = ("algorithm", "cnonce", "opaque", "qop", "nc", "userhash")


# --- Hashes (RFC 7616 3.4) -------------------------------------------------------------------


def _hash(algorithm: Algorithm, data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return _HASH_NEW[_HASH_NAMES[algorithm]](raw).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: Algorithm) -> str:
    """Return H(username:realm:password), the value a user store keeps (RFC 7616 3.4.2).

    The ``-sess`` variants use the same stored value as their base algorithm: the session
    key H(HA1:nonce:cnonce) is derived per request by :func:`compute_response`.
    """
    return _hash(algorithm, f"{username}:{realm}:{password}")


def compute_response(
    ha1: str,
    *,
    algorithm: Algorithm,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """Return the ``response`` hex digest for the given inputs (RFC 7616 3.4.1).

    ``ha1`` is the stored H(username:realm:password); ``qop`` None gives the RFC 2069
    form H(HA1:nonce:HA2); ``body`` is hashed only for ``qop=auth-int``. Raises
    ValueError for an unknown qop or missing ``nc`` / ``cnonce``.
    """
    ha1 = ha1.lower()
    if algorithm.is_session:  # RFC 7616 3.4.2: HA1 = H(H(user:realm:pw):nonce:cnonce)
        if cnonce is None:
            raise ValueError(f"{algorithm.value} needs a cnonce")
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    mode = None if qop is None else qop.lower()
    if mode == "auth-int":  # RFC 7616 3.4.3: A2 = method:uri:H(entity-body)
        ha2 = _hash(algorithm, f"{method}:{uri}:{_hash(algorithm, body)}")
    elif mode in (None, "auth"):
        ha2 = _hash(algorithm, f"{method}:{uri}")
    else:
        raise ValueError(f"unsupported qop {qop!r}")
    if qop is None:  # RFC 2617 3.2.2.1, RFC 2069 compatibility
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --- Server side -----------------------------------------------------------------------------


class AuthResult(Enum):
    """Outcome of :meth:`DigestAuthenticator.verify`."""

    OK = "ok"
    STALE = "stale"  # right password, expired nonce: re-challenge with stale=true
    FAILED = "failed"  # anything else: re-challenge (or 403 after too many tries)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An :class:`AuthResult` with a short reason for the log (never sent to the peer)."""

    result: AuthResult
    reason: str


_NONCE_TEXT = re.compile(r"[A-Za-z0-9_-]{64}")  # 48 bytes of base64url, no padding
_SALT_SIZE = 16
_MAC_SIZE = 24  # HMAC-SHA256 truncated to 192 bits (RFC 2104 section 5)
_MAX_FUTURE = 30.0  # seconds a nonce may appear to come from the future (clock skew)


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64(data: bytes) -> str:
    """base64url without padding (what ``base64.urlsafe_b64encode`` gives, stripped)."""
    encoded = binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE)
    return encoded.rstrip(b"=").decode("ascii")


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    """RFC 3261 22.4 / RFC 7616 3.4.6: the digest-uri names the Request-URI.

    Trivial normalisation only: surrounding whitespace is ignored and the scheme is
    compared case-insensitively; everything else must match character for character.
    """
    a_scheme, _, a_rest = digest_uri.strip(" \t").partition(":")
    b_scheme, _, b_rest = request_uri.strip(" \t").partition(":")
    return a_scheme.lower() == b_scheme.lower() and a_rest == b_rest


class DigestAuthenticator:
    """Issues challenges and checks credentials for a registrar or proxy (RFC 3261 22).

    Nonces are stateless (RFC 7616 3.3 leaves their construction to the server):
    ``base64url(issued_ms[8] | salt[16] | HMAC-SHA256(key, issued_ms | salt | realm)[:24])``,
    so any process holding ``secret`` can check a nonce without shared state. Pass a
    wall-clock ``now`` when several nodes share the secret or nonces must outlive a restart.

    Replay protection (RFC 7616 3.3, 5.11): with ``qop`` the ``nc`` of a nonce must strictly
    increase; the highest one seen is kept per nonce until the nonce expires, in a table of
    at most ``max_tracked_nonces`` entries (the oldest are evicted; a nonce whose count was
    evicted gets STALE, so the client simply fetches a fresh one). The table is per
    process: with several nodes, a captured request may be replayed once to each node.
    Without ``qop`` (RFC 2069 clients, ``allow_rfc2069``) there is no counter: a captured
    request can be replayed while its nonce lives, so keep ``nonce_lifetime`` short.

    ``algorithms`` gives the challenges and their order (RFC 8760 2.4: preferred first);
    ``use_opaque`` adds an ``opaque`` derived from the nonce and requires it back;
    ``allow_rfc2069`` accepts answers without ``qop``.
    """

    def __init__(
        self,
        secret: bytes,
        nonce_lifetime: float = 300.0,
        *,
        algorithms: Sequence[Algorithm] = (Algorithm.SHA_256, Algorithm.MD5),
        use_opaque: bool = False,
        allow_rfc2069: bool = True,
        max_tracked_nonces: int = 100_000,
        entropy: Entropy = secrets.token_bytes,
    ) -> None:
        """Build an authenticator; see the class docstring for the options."""
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if not nonce_lifetime > 0:
            raise ValueError("nonce_lifetime must be positive")
        if not algorithms or len(set(algorithms)) != len(algorithms):
            raise ValueError("algorithms must be a non-empty list without duplicates")
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be at least 1")
        self.nonce_lifetime = nonce_lifetime
        self.algorithms = tuple(algorithms)
        self.use_opaque = use_opaque
        self.allow_rfc2069 = allow_rfc2069
        self.max_tracked_nonces = max_tracked_nonces
        self._entropy = entropy
        self._nonce_key = hmac.digest(secret, b"minipbx digest nonce v1", "sha256")
        self._opaque_key = hmac.digest(secret, b"minipbx digest opaque v1", "sha256")
        # Keyed once: each MAC copies these instead of setting the key up again.
        self._nonce_hmac = hmac.new(self._nonce_key, digestmod=hashlib.sha256)
        self._opaque_hmac = hmac.new(self._opaque_key, digestmod=hashlib.sha256)
        self._dummy_ha1 = {a.hash_name: _hash(a, entropy(16)) for a in Algorithm}
        # nonce -> highest nc seen; heap of (issued_ms, nonce) to expire and evict them.
        self._highest_nc: dict[str, int] = {}
        self._by_age: list[tuple[int, str]] = []
        self._evicted_up_to_ms = -(2**63)  # nonces issued up to then may have been evicted
        self._checked_realms: set[str] = set()  # realms known to be valid quoted-string text

    def challenges(self, realm: str, now: float, stale: bool = False) -> list[Challenge]:
        """Return one challenge per configured algorithm, in order (RFC 8760 2.4).

        Put each in its own ``WWW-Authenticate`` (401) or ``Proxy-Authenticate`` (407)
        header. They share one fresh nonce. ``stale`` is set after :attr:`AuthResult.STALE`
        (RFC 7616 3.3). ``qop="auth"`` only: auth-int is never offered.
        """
        nonce = self._new_nonce(realm, now)
        opaque = self._opaque_for(nonce) if self.use_opaque else None
        return [
            Challenge(realm, nonce, opaque, stale, algorithm.value, ("auth",))
            for algorithm in self.algorithms
        ]

    def challenge_headers(self, realm: str, now: float, stale: bool = False) -> list[str]:
        """``str()`` of each of :meth:`challenges`, written without building the objects.

        The call path's form: one header value per configured algorithm, sharing a fresh
        nonce, exactly as ``[str(c) for c in self.challenges(realm, now, stale)]``.
        """
        if realm not in self._checked_realms:
            _check_text("realm", realm)
            if len(self._checked_realms) >= 1024:
                self._checked_realms.clear()
            self._checked_realms.add(realm)
        nonce = self._new_nonce(realm, now)  # base64url: nothing to escape
        head = f'Digest realm={_quote(realm)}, nonce="{nonce}"'
        if self.use_opaque:
            head += f', opaque="{self._opaque_for(nonce)}"'
        if stale:
            head += ", stale=true"
        return [f'{head}, algorithm={algorithm.value}, qop="auth"' for algorithm in self.algorithms]

    def verify(
        self,
        creds: Credentials,
        *,
        method: str,
        request_uri: str,
        ha1: str | None,
        now: float,
        realm: str | None = None,
    ) -> AuthResult:
        """Check ``creds`` against a request; see :meth:`verify_detailed`."""
        return self.verify_detailed(
            creds, method=method, request_uri=request_uri, ha1=ha1, now=now, realm=realm
        ).result

    def verify_detailed(
        self,
        creds: Credentials,
        *,
        method: str,
        request_uri: str,
        ha1: str | None,
        now: float,
        realm: str | None = None,
    ) -> Verdict:
        """Check ``creds`` for a request with ``method`` and ``request_uri`` at ``now``.

        ``ha1`` is the stored H(username:realm:password) for the hash of
        ``Algorithm.from_name(creds.algorithm)`` (see :func:`compute_ha1`), or None for an
        unknown user: the same work is then done and FAILED returned. ``realm``, when
        given, is the realm the caller expects; the nonce is bound to ``creds.realm``
        anyway. OK records the ``nc``, so call this once per request.
        """
        checked = self._check_request(creds, request_uri, realm)
        if isinstance(checked, str):
            return Verdict(AuthResult.FAILED, checked)
        algorithm, issued_ms = checked
        # Unknown user: hash with a random HA1 so that timing and result match a known one.
        expected = compute_response(
            self._dummy_ha1[algorithm.hash_name] if ha1 is None else ha1,
            algorithm=algorithm,
            nonce=creds.nonce,
            method=method,
            uri=creds.uri,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        matches = hmac.compare_digest(expected.encode("ascii"), creds.response.lower().encode())
        if ha1 is None:
            return Verdict(AuthResult.FAILED, "unknown user")
        if not matches:
            return Verdict(AuthResult.FAILED, "wrong response")
        # RFC 7616 3.3: stale only when the response was right for the old nonce.
        age = now - issued_ms / 1000.0
        if age > self.nonce_lifetime or age < -_MAX_FUTURE:
            return Verdict(AuthResult.STALE, "nonce expired")
        if creds.nc is None:
            return Verdict(AuthResult.OK, "ok without qop (RFC 2069)")
        return self._count(creds.nonce, issued_ms, int(creds.nc, 16), now)

    def _check_request(
        self, creds: Credentials, request_uri: str, realm: str | None
    ) -> tuple[Algorithm, int] | str:
        """Return the algorithm and nonce issue time (ms), or why ``creds`` is refused."""
        algorithm = Algorithm.from_name(creds.algorithm)
        if algorithm is None or algorithm not in self.algorithms:
            return "algorithm not offered"
        if realm is not None and creds.realm != realm:
            return "wrong realm"
        issued_ms = self._check_nonce(creds.nonce, creds.realm)
        if issued_ms is None:
            return "bad nonce"  # not ours, tampered, or issued for another realm
        if self.use_opaque and not hmac.compare_digest(
            (creds.opaque or "").encode("utf-8"), self._opaque_for(creds.nonce).encode("ascii")
        ):
            return "bad opaque"
        if not _same_uri(creds.uri, request_uri):
            return "digest-uri does not match the Request-URI"
        problem = self._check_qop(creds, algorithm)
        return (algorithm, issued_ms) if problem is None else problem

    def _check_qop(self, creds: Credentials, algorithm: Algorithm) -> str | None:
        """Return why the qop / nc / cnonce combination is refused, or None."""
        if creds.qop is None:
            if not self.allow_rfc2069:
                return "qop missing"
            if algorithm.is_session:
                return "-sess needs qop"
            if creds.nc is not None:
                return "nc without qop"
            return None
        if creds.qop.lower() != "auth":  # only qop=auth is offered
            return f"qop {creds.qop!r} not offered"
        if creds.nc is None or creds.cnonce is None:
            return "qop without nc or cnonce"  # RFC 7616 3.4: both MUST be present
        return None

    def _new_nonce(self, realm: str, now: float) -> str:
        issued = struct.pack(">q", math.floor(now * 1000.0))
        salt = self._entropy(_SALT_SIZE)
        if len(salt) != _SALT_SIZE:
            raise ValueError("entropy returned the wrong number of bytes")
        return _b64(issued + salt + self._nonce_mac(issued + salt, realm))

    def _nonce_mac(self, issued_and_salt: bytes, realm: str) -> bytes:
        message = issued_and_salt + realm.encode("utf-8")
        mac = self._nonce_hmac.copy()
        mac.update(message)
        return mac.digest()[:_MAC_SIZE]

    def _check_nonce(self, nonce: str, realm: str) -> int | None:
        """Return the issue time (ms) of a nonce this server made for ``realm``, or None."""
        if _NONCE_TEXT.fullmatch(nonce) is None:
            return None
        # 64 characters of the base64url alphabet (checked above): 48 bytes, no padding
        raw = binascii.a2b_base64(nonce.encode("ascii").translate(_FROM_URLSAFE))
        head, mac = raw[: 8 + _SALT_SIZE], raw[8 + _SALT_SIZE :]
        if not hmac.compare_digest(mac, self._nonce_mac(head, realm)):
            return None
        issued_ms: int = struct.unpack(">q", head[:8])[0]
        return issued_ms

    def _opaque_for(self, nonce: str) -> str:
        mac = self._opaque_hmac.copy()
        mac.update(nonce.encode("utf-8"))
        return _b64(mac.digest()[:12])

    def _count(self, nonce: str, issued_ms: int, nc: int, now: float) -> Verdict:
        """Accept ``nc`` only if it beats the highest seen for ``nonce`` (RFC 7616 3.3)."""
        self._prune(now)
        highest = self._highest_nc.get(nonce)
        if highest is None and issued_ms <= self._evicted_up_to_ms:
            return Verdict(AuthResult.STALE, "nonce count forgotten (table full)")
        if nc <= (highest or 0):
            return Verdict(AuthResult.FAILED, f"replayed nc {nc} <= {highest}")
        if highest is None:
            heapq.heappush(self._by_age, (issued_ms, nonce))
        self._highest_nc[nonce] = nc
        self._evict_overflow()
        return Verdict(AuthResult.OK, "ok")

    def _prune(self, now: float) -> None:
        """Forget nonces past their lifetime: they are STALE before the table is read."""
        horizon_ms = (now - self.nonce_lifetime) * 1000.0
        while self._by_age and self._by_age[0][0] < horizon_ms:
            _, nonce = heapq.heappop(self._by_age)
            self._highest_nc.pop(nonce, None)

    def _evict_overflow(self) -> None:
        while len(self._by_age) > self.max_tracked_nonces:
            issued_ms, nonce = heapq.heappop(self._by_age)
            self._highest_nc.pop(nonce, None)
            self._evicted_up_to_ms = max(self._evicted_up_to_ms, issued_ms)

    @property
    def tracked_nonces(self) -> int:
        """How many nonces currently have a remembered ``nc`` (for metrics and tests)."""
        return len(self._highest_nc)


# --- Client side (trunk registrations) -------------------------------------------------------


def make_cnonce(entropy: Entropy = secrets.token_bytes) -> str:
    """Return a fresh client nonce: 128 random bits, base64url (RFC 7616 3.4)."""
    return _b64(entropy(16))


def _plan(challenge: Challenge) -> tuple[Algorithm, str | None]:
    """Pick the algorithm and qop to answer ``challenge`` with; ValueError if we cannot."""
    algorithm = Algorithm.from_name(challenge.algorithm)
    if algorithm is None:
        raise ValueError(f"unsupported algorithm {challenge.algorithm!r}")
    offered = {q.lower() for q in challenge.qop}
    if not offered:
        if algorithm.is_session:
            raise ValueError(f"{algorithm.value} without qop is not supported")
        return algorithm, None  # RFC 2069 server
    for qop in ("auth", "auth-int"):  # RFC 7616 3.4: prefer auth
        if qop in offered:
            return algorithm, qop
    raise ValueError(f"no supported qop in {challenge.qop!r}")


def select_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """Return the challenge to answer: SHA-256 over MD5, first wins on a tie (RFC 8760 2.4).

    Challenges we cannot answer (unknown algorithm or qop) are skipped; None if none is
    left. When a proxy and a registrar both challenge (several realms), call this per realm.
    """
    best: tuple[int, Challenge] | None = None
    for challenge in challenges:
        try:
            algorithm, _ = _plan(challenge)
        except ValueError:
            continue
        rank = _CLIENT_PREFERENCE.index(algorithm)
        if best is None or rank < best[0]:
            best = (rank, challenge)
    return None if best is None else best[1]


def answer_challenge(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int,
    cnonce: str,
    body: bytes = b"",
) -> Credentials:
    """Build the credentials answering ``challenge`` (RFC 3261 22.2, RFC 7616 3.4).

    Uses the challenge's algorithm and ``qop=auth`` when offered (``auth-int`` hashing
    ``body`` otherwise; no qop for an RFC 2069 server, then ``nc`` and ``cnonce`` are not
    sent). ``nc`` counts the requests sent with this nonce, starting at 1; ``uri`` is the
    Request-URI of the request. Raises ValueError if the challenge cannot be answered.
    """
    algorithm, qop = _plan(challenge)
    if not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError(f"nc {nc} out of range")
    nc_text = None if qop is None else f"{nc:08x}"
    sent_cnonce = None if qop is None else cnonce
    ha1 = compute_ha1(username, challenge.realm, password, algorithm)
    response = compute_response(
        ha1,
        algorithm=algorithm,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=sent_cnonce,
        body=body,
    )
    if challenge.userhash:  # RFC 7616 3.4.4: username = H(username:realm)
        username = _hash(algorithm, f"{username}:{challenge.realm}")
    return Credentials(
        username,
        challenge.realm,
        challenge.nonce,
        uri,
        response,
        algorithm=challenge.algorithm,
        cnonce=sent_cnonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
        userhash=challenge.userhash,
    )
