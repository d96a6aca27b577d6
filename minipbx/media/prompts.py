"""The prompts the PBX speaks: loading, per-tenant overrides, saying values, WAV uploads.

- A language's prompts ship in the package: ``minipbx/prompts/<lang>/prompts.txt`` (one
  ``name|text`` line per prompt, optionally ``|respelled for the synthesizer``; a text
  starting with ``!`` is generated, e.g. ``!tone 1000 500``) and one ``<name>.wav`` each
  (8 kHz 16-bit mono), made by ``scripts/make-prompts``.
- :class:`PromptSet` gives a prompt's samples, preferring a tenant's override
  (``<data_dir>/prompts/<tenant_id>/<lang>/<name>.wav``, see :func:`override_dir`) over the
  package's file. Each prompt is decoded once; an override replaced on disk (an upload) is
  noticed by its file signature and read again. Besides the listed names, a tenant may add
  its own ``custom_*`` prompts (an IVR menu of its own).
- ``say_*`` turn values into prompt names: numbers in English grammar ("one hundred and
  twenty three"), digits, amounts of money, durations, counts, dates and times.
- :func:`convert_upload` turns an uploaded WAV of any common form into the prompt format;
  every refusal is a :class:`PromptError` whose message tells the admin what to upload.

Reads files but never sockets, clocks or randomness (DESIGN.md): the caller passes ``today``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from minipbx.media.g711 import ALAW_DECODE, ULAW_DECODE, Pcm
from minipbx.media.player import read_wav, tone, wav_bytes
from minipbx.media.rtp import CLOCK_RATE

log = logging.getLogger("minipbx.media")

Signal = npt.NDArray[np.float64]
"""Samples as floats, full scale +-1.0."""

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "prompts"
"""Where the shipped languages live (``<lang>/prompts.txt`` and ``<lang>/<name>.wav``)."""
LIST_FILE = "prompts.txt"
DEFAULT_LANG = "en"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
LANG_PATTERN = r"^[a-z]{2,3}(-[a-z0-9]{2,8}){0,2}$"
CUSTOM_PREFIX = "custom_"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SECONDS = 300
UPLOAD_HINT = "upload a WAV file, e.g. 8 kHz 16-bit mono PCM"
_NAME = re.compile(NAME_PATTERN)
_LANG = re.compile(LANG_PATTERN)


class PromptError(Exception):
    """A prompt that cannot be had, or an upload that cannot be used. ``str()`` is the
    message for the admin; ``status`` the HTTP answer it suggests (400, 404, 413, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class UnknownPromptError(PromptError, KeyError):
    """No prompt of that name (a ``KeyError`` too, so ``except KeyError`` catches it)."""

    def __init__(self, name: str, lang: str) -> None:
        super().__init__(f"no prompt named {name!r} in language {lang!r}", 404)
        self.name = name


def is_prompt_name(name: str) -> bool:
    """True for a well-formed name (lower-case snake_case, at most 64 characters)."""
    return _NAME.fullmatch(name) is not None


def is_custom_name(name: str) -> bool:
    """True for a tenant's own prompt name (``custom_...``), which has no default."""
    return is_prompt_name(name) and name.startswith(CUSTOM_PREFIX) and name != CUSTOM_PREFIX


def parse_prompt_list(text: str, source: str = LIST_FILE, spoken: bool = False) -> dict[str, str]:
    """The ``name -> text`` entries of a prompt list; ``ValueError`` names the bad line.

    A line is ``name|text`` or ``name|text|spoken``: the third field respells the text for
    the speech synthesizer (``spoken=True`` returns it instead of the text where given).
    """
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, bar, rest = (part.strip() for part in line.partition("|"))
        shown, _, respelled = (part.strip() for part in rest.partition("|"))
        if not bar:
            raise ValueError(f"{source}:{number}: expected name|text")
        if not is_prompt_name(name) or is_custom_name(name):
            raise ValueError(f"{source}:{number}: invalid prompt name {name!r}")
        if not shown:
            raise ValueError(f"{source}:{number}: {name} has no text")
        if name in entries:
            raise ValueError(f"{source}:{number}: {name} is listed twice")
        entries[name] = respelled if spoken and respelled else shown
    return entries


def languages(base: Path = PACKAGE_DIR) -> list[str]:
    """The languages with a prompt list under ``base``."""
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / LIST_FILE).is_file())


def override_dir(data_dir: Path, tenant_id: int, lang: str) -> Path:
    """Where a tenant's own recordings of a language live."""
    if not _LANG.fullmatch(lang):
        raise PromptError(f"invalid language code {lang!r}", 404)
    return data_dir / "prompts" / str(int(tenant_id)) / lang


# -- the prompt set --------------------------------------------------------------------------

_Signature = tuple[int, int, int] | None


def _signature(path: Path) -> _Signature:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PromptSet:
    """The prompts of one language, with a tenant's overrides from ``overrides`` (a
    directory as :func:`override_dir` names it; None: the package's prompts only).

    Names missing from the language's list come from ``fallback`` (English), so a new
    language can be added a few prompts at a time.
    """

    def __init__(
        self,
        lang: str = DEFAULT_LANG,
        overrides: Path | None = None,
        *,
        base: Path = PACKAGE_DIR,
        fallback: str | None = DEFAULT_LANG,
    ) -> None:
        if not _LANG.fullmatch(lang) or not (base / lang / LIST_FILE).is_file():
            raise PromptError(f"no prompts for language {lang!r}", 404)
        self.lang = lang
        self.overrides = overrides
        self._texts: dict[str, str] = {}
        self._dirs: dict[str, Path] = {}
        for code in dict.fromkeys([lang] + ([fallback] if fallback else [])):
            listing = base / code / LIST_FILE
            if not listing.is_file():
                continue
            for name, text in parse_prompt_list(listing.read_text("utf-8"), str(listing)).items():
                self._texts.setdefault(name, text)
                self._dirs.setdefault(name, base / code)
        self._cache: dict[str, tuple[_Signature, Pcm]] = {}

    def names(self) -> list[str]:
        """Every prompt name: the listed ones and the tenant's ``custom_*`` ones."""
        return sorted({*self._texts, *self.custom_names()})

    def custom_names(self) -> list[str]:
        """The tenant's own ``custom_*`` prompts (recordings with no default)."""
        if self.overrides is None or not self.overrides.is_dir():
            return []
        return sorted(p.stem for p in self.overrides.glob("*.wav") if is_custom_name(p.stem))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._texts or self.is_custom(name))

    def is_listed(self, name: str) -> bool:
        """True for a name of the language's list (one with a default recording)."""
        return name in self._texts

    def may_record(self, name: str) -> bool:
        """True when a tenant may upload a recording named ``name``."""
        return name in self._texts or is_custom_name(name)

    def text(self, name: str) -> str:
        """What the default prompt says ("" for a custom prompt)."""
        if name not in self:
            raise UnknownPromptError(name, self.lang)
        return self._texts.get(name, "")

    def is_custom(self, name: str) -> bool:
        """True when the tenant has its own recording of ``name``."""
        override = self._override(name)
        return override is not None and override.is_file()

    def path(self, name: str) -> Path:
        """The file that :meth:`get` reads for ``name`` (the override, else the default)."""
        override = self._override(name)
        if override is not None and override.is_file():
            return override
        if name not in self._dirs:
            raise UnknownPromptError(name, self.lang)
        return self._dirs[name] / f"{name}.wav"

    def get(self, name: str) -> Pcm:
        """The samples of ``name`` (8 kHz int16, read-only; decoded once per file)."""
        override = self._override(name)
        signature = None if override is None else _signature(override)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == signature:
            return cached[1]
        samples = self._load(name, signature)
        samples.flags.writeable = False
        self._cache[name] = (signature, samples)
        return samples

    def concat(self, names: Iterable[str], gap: float = 0.06) -> Pcm:
        """The prompts one after another, ``gap`` seconds of silence between them."""
        pause = np.zeros(round(gap * CLOCK_RATE), dtype=np.int16)
        parts: list[Pcm] = []
        for name in names:
            if parts:
                parts.append(pause)
            parts.append(self.get(name))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def reload(self, name: str | None = None) -> None:
        """Forget the decoded samples of ``name`` (None: of every prompt)."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    def _override(self, name: str) -> Path | None:
        """Where the tenant's recording of ``name`` would be (None: no overrides, or a
        name that cannot be a prompt: unknown names never reach the file system)."""
        if self.overrides is None or not self.may_record(name) or not is_prompt_name(name):
            return None
        return self.overrides / f"{name}.wav"

    def _load(self, name: str, signature: _Signature) -> Pcm:
        override = self._override(name)
        if signature is not None and override is not None:
            try:
                return read_wav(override.read_bytes(), str(override))
            except (OSError, ValueError) as exc:  # vanished or damaged: use the default
                log.warning("event=prompt_override_unusable path=%s error=%s", override, exc)
        if name not in self._dirs:
            raise UnknownPromptError(name, self.lang)
        path = self._dirs[name] / f"{name}.wav"
        try:
            return read_wav(path.read_bytes(), str(path))
        except (OSError, ValueError) as exc:
            raise PromptError(f"prompt {name!r} is unusable: {exc}", 500) from None


def save_override(directory: Path, name: str, wav: bytes) -> Path:
    """Write a tenant's recording of ``name`` atomically (temporary file, then rename)."""
    if not is_prompt_name(name):
        raise UnknownPromptError(name, directory.name)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.wav"
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(wav)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def remove_override(directory: Path, name: str) -> bool:
    """Delete a tenant's recording of ``name``; False if there was none."""
    if not is_prompt_name(name):
        return False
    try:
        (directory / f"{name}.wav").unlink()
    except FileNotFoundError:
        return False
    return True


# -- saying values ---------------------------------------------------------------------------

MAX_NUMBER = 10**12 - 1
_SCALES = ((10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
COUNT_NOUNS = {
    "message": "messages",
    "minute": "minutes",
    "second": "seconds",
    "hour": "hours",
    "call": "calls",
}
"""Nouns :func:`say_count` can count (singular -> plural prompt names)."""
COUNT_ADJECTIVES = frozenset({"new", "old"})
CURRENCIES: dict[str, tuple[str, str, str, str]] = {
    **{
        code: ("dollar", "dollars", "cent", "cents")
        for code in ("USD", "CAD", "AUD", "NZD", "SGD", "HKD")
    },
    "EUR": ("euro", "euros", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
}
"""Unit prompt names by ISO 4217 code: (unit, units, subunit, subunits)."""
_DIGIT_KEYS = {"*": "key_star", "#": "key_pound", "+": "plus"}
_SEPARATORS = frozenset(" -.()/")
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip


def _below_hundred(n: int) -> list[str]:
    if n < 20:
        return [f"num_{n}"]
    tens, ones = divmod(n, 10)
    return [f"num_{tens * 10}"] + ([f"num_{ones}"] if ones else [])


def _below_thousand(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [f"num_{hundreds}", "hundred"] if hundreds else []
    if rest:
        words += (["and"] if hundreds else []) + _below_hundred(rest)
    return words


def say_number(n: int) -> list[str]:
    """A whole number in English: 123 -> one hundred and twenty three, 1005 -> one
    thousand and five, -7 -> minus seven (British "and"; up to 999 999 999 999)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"say_number needs an int, not {type(n).__name__}")
    if n < 0:
        return ["minus", *say_number(-n)]
    if n == 0:
        return ["num_0"]
    if n > MAX_NUMBER:
        raise ValueError(f"{n} is too large to say (at most {MAX_NUMBER})")
    words: list[str] = []
    for scale, word in _SCALES:
        count, n = divmod(n, scale)
        if count:
            words += [*_below_thousand(count), word]
    if n:
        words += (["and"] if words and n < 100 else []) + _below_thousand(n)
    return words


def say_digits(text: str) -> list[str]:
    """One word per digit (and ``*``, ``#``, ``+``); spaces, dashes, dots, brackets and
    slashes are skipped: "+1 555-0100" -> plus one five five five zero one zero zero."""
    words: list[str] = []
    for ch in text:
        if ch in "0123456789":
            words.append(f"num_{ch}")
        elif ch in _DIGIT_KEYS:
            words.append(_DIGIT_KEYS[ch])
        elif ch not in _SEPARATORS:
            raise ValueError(f"cannot say {ch!r} of {text!r} as digits")
    return words


def say_ordinal(n: int) -> list[str]:
    """An ordinal of a day of the month, 1 -> first ... 31 -> thirty first."""
    if not 1 <= n <= 31:
        raise ValueError(f"ordinals go from 1 to 31, not {n}")
    return [f"ord_{n}"]


def say_amount(amount: Decimal | int | str, currency: str = "USD") -> list[str]:
    """An amount of money, truncated to the cent (a balance is never overstated).

    "3.25" -> three dollars and twenty five cents; "3" -> three dollars (no cents when
    there are none); "0.25" -> twenty five cents; "0" -> zero dollars; "1.01" -> one
    dollar and one cent; negative amounts start with minus. A currency without words
    (not in :data:`CURRENCIES`) is said as a decimal number: three point two five.
    """
    try:
        value = Decimal(amount)
        cents = int(value.quantize(Decimal("0.01"), rounding=ROUND_DOWN) * 100)
    except (InvalidOperation, ValueError, TypeError):
        raise ValueError(f"not an amount of money: {amount!r}") from None
    if cents < 0:
        return ["minus", *say_amount(Decimal(-cents) / 100, currency)]
    major, minor = divmod(cents, 100)
    units = CURRENCIES.get(currency.upper())
    if units is None:
        return say_number(major) + (["point", *say_digits(f"{minor:02d}")] if minor else [])
    unit, units_plural, subunit, subunits_plural = units
    words: list[str] = []
    if major or not minor:
        words += [*say_number(major), unit if major == 1 else units_plural]
    if minor:
        words += (["and"] if words else []) + say_number(minor)
        words.append(subunit if minor == 1 else subunits_plural)
    return words


def say_count(n: int, noun: str, adjective: str | None = None) -> list[str]:
    """A count of things: (0, "message", "new") -> no new messages, 1 -> one new
    message, 3 -> three new messages. ``noun`` from :data:`COUNT_NOUNS`."""
    if noun not in COUNT_NOUNS:
        raise ValueError(f"cannot count {noun!r}; one of {', '.join(COUNT_NOUNS)}")
    if adjective is not None and adjective not in COUNT_ADJECTIVES:
        raise ValueError(f"unknown adjective {adjective!r}; one of new, old")
    if n < 0:
        raise ValueError(f"a count cannot be negative: {n}")
    amount = ["no"] if n == 0 else say_number(n)
    return amount + ([adjective] if adjective else []) + [noun if n == 1 else COUNT_NOUNS[noun]]


def say_duration_minutes(n: int) -> list[str]:
    """Whole minutes: one minute, five minutes, zero minutes."""
    if n < 0:
        raise ValueError(f"a duration cannot be negative: {n}")
    return [*say_number(n), "minute" if n == 1 else "minutes"]


def say_duration(seconds: int) -> list[str]:
    """Hours, minutes and seconds: 3725 -> one hour two minutes and five seconds; parts
    that are zero are left out (0 -> zero seconds)."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    hours, rest = divmod(seconds, 3600)
    parts = [(hours, "hour"), *zip(divmod(rest, 60), ("minute", "second"), strict=True)]
    said = [[*say_number(n), unit if n == 1 else COUNT_NOUNS[unit]] for n, unit in parts if n]
    if not said:
        return ["num_0", "seconds"]
    words = [word for part in said[:-1] for word in part]
    return words + (["and"] if words else []) + said[-1]


def say_time(when: time | datetime) -> list[str]:
    """A time of day on the 12-hour clock: 14:45 -> two forty five pm, 9:05 -> nine oh
    five am, 12:00 -> twelve pm, 0:30 -> twelve thirty am."""
    hour = when.hour % 12 or 12
    minute = when.minute
    words = say_number(hour)
    if minute:
        words += ["oh", f"num_{minute}"] if minute < 10 else say_number(minute)
    return [*words, "am" if when.hour < 12 else "pm"]


def say_year(year: int) -> list[str]:
    """A year as people say it: 1999 -> nineteen ninety nine, 2005 -> two thousand and
    five, 2025 -> twenty twenty five, 1900 -> nineteen hundred."""
    if not 1 <= year <= 9999:
        raise ValueError(f"cannot say year {year}")
    high, low = divmod(year, 100)
    if year < 1000 or year % 1000 < 10:
        return say_number(year)
    if low == 0:
        return [*say_number(high), "hundred"]
    return say_number(high) + (["oh", f"num_{low}"] if low < 10 else say_number(low))


def say_date(day: date, today: date | None = None) -> list[str]:
    """A date: "on Tuesday March third"; "today" / "yesterday" when ``today`` is given and
    the date is one of those; the year only when it differs from ``today``'s."""
    if today is not None and day == today:
        return ["today"]
    if today is not None and day == today - timedelta(days=1):
        return ["yesterday"]
    words = ["on", f"day_{_DAYS[day.weekday()]}", f"month_{_MONTHS[day.month - 1]}"]
    words += say_ordinal(day.day)
    if today is not None and day.year != today.year:
        words += say_year(day.year)
    return words


def say_datetime(when: datetime, today: date | None = None) -> list[str]:
    """A moment, as given (convert it to the listener's time zone first): "on Tuesday
    March third at two forty five pm", "today at nine oh five am"."""
    return [*say_date(when.date(), today), "at", *say_time(when)]


# -- uploads: any common WAV to 8 kHz 16-bit mono --------------------------------------------

_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_ENCODINGS = {_PCM: "PCM", _FLOAT: "float", _ALAW: "A-law", _ULAW: "mu-law"}
_BITS = {_PCM: (8, 16, 24, 32), _FLOAT: (32, 64), _ALAW: (8,), _ULAW: (8,)}
_OTHER_CODECS = {
    2: "MS ADPCM", 0x11: "IMA ADPCM", 0x31: "GSM 6.10", 0x40: "G.721 ADPCM",
    0x50: "MPEG audio", 0x55: "MP3", 0x64: "G.726 ADPCM", 0x65: "G.722", 0x161: "WMA",
}  # fmt: skip
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_NOT_WAV = (
    (lambda d: d[:3] == b"ID3" or (d[0] == 0xFF and d[1] & 0xE0 == 0xE0), "an MP3 file"),
    (lambda d: d[:4] == b"OggS", "an Ogg (Vorbis/Opus) file"),
    (lambda d: d[:4] == b"fLaC", "a FLAC file"),
    (lambda d: d[4:8] == b"ftyp", "an MP4/M4A file"),
    (lambda d: d[:4] == b"FORM", "an AIFF file"),
    (lambda d: d[:4] == b"RIFX", "a big-endian WAV file (RIFX)"),
    (lambda d: d[:4] in (b"RF64", b"BW64"), "an RF64 WAV file"),
)


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What an uploaded file was."""

    encoding: str
    channels: int
    rate: int
    bits: int
    frames: int

    @property
    def seconds(self) -> float:
        """Its length."""
        return self.frames / self.rate

    def __str__(self) -> str:
        return f"{self.rate} Hz {self.bits}-bit {self.encoding} {self.channels} ch"


def _refuse(message: str, status: int = 400) -> PromptError:
    return PromptError(f"{message}; {UPLOAD_HINT}", status)


def _check_container(data: bytes) -> None:
    if not data:
        raise _refuse("the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        size = len(data) / 2**20
        raise _refuse(f"the file is too large ({size:.1f} MB, at most 20 MB)", 413)
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return
    if data[:4] == b"RIFF" and len(data) < 12:
        raise _refuse("truncated WAV file (it ends inside the RIFF header)")
    for test, what in _NOT_WAV:
        if len(data) >= 8 and test(data):
            raise _refuse(f"not a WAV file: this looks like {what}, which is not supported", 415)
    if data[:4] == b"RIFF":
        raise _refuse("not a WAV file (a RIFF file, but not of type WAVE)", 415)
    raise _refuse("not a WAV file (RIFF header missing)", 415)


def _chunks(data: bytes) -> tuple[bytes, bytes]:
    """The ``fmt `` and ``data`` chunks (RIFF: 4-byte id, 32-bit size, even padding)."""
    fmt: bytes | None = None
    body: bytes | None = None
    pos = 12
    while pos + 8 <= len(data) and (fmt is None or body is None):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        start = pos + 8
        if cid == b"data" and size == 0xFFFFFFFF:  # written by a stream: to the end
            size = len(data) - start
        if cid in (b"fmt ", b"data") and start + size > len(data):
            what = "audio data" if cid == b"data" else "format"
            raise _refuse(
                f"truncated WAV file: the {what} chunk declares {size} bytes,"
                f" only {len(data) - start} are present"
            )
        if cid == b"fmt ":
            fmt = data[start : start + size]
        elif cid == b"data":
            body = data[start : start + size]
        pos = start + size + (size & 1)
    if fmt is None:
        raise _refuse("truncated or damaged WAV file: no format (fmt) chunk")
    if body is None:
        raise _refuse("truncated or damaged WAV file: no audio data chunk")
    return fmt, body


def _format(fmt: bytes, body: bytes) -> WavInfo:
    if len(fmt) < 16:
        raise _refuse("damaged WAV file: the format chunk is too short")
    code, channels, rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if code == _EXTENSIBLE and len(fmt) >= 40 and fmt[26:40] == _GUID_TAIL:
        code = int.from_bytes(fmt[24:26], "little")
    if code not in _ENCODINGS:
        codec = _OTHER_CODECS.get(code, f"format code 0x{code:04x}")
        raise _refuse(f"unsupported WAV encoding: {codec}", 415)
    if bits not in _BITS[code]:
        raise _refuse(f"unsupported sample size: {bits}-bit {_ENCODINGS[code]}", 415)
    if not 1 <= channels <= 16 or not 1000 <= rate <= 384_000:
        raise _refuse(f"damaged WAV header: {channels} channels at {rate} Hz")
    if align != channels * bits // 8:
        raise _refuse(f"damaged WAV header: block size {align} for {channels} x {bits} bits")
    info = WavInfo(_ENCODINGS[code], channels, rate, bits, len(body) // align)
    if info.frames == 0:
        raise _refuse("the WAV file contains no audio")
    if info.seconds > MAX_SECONDS:
        minutes, secs = divmod(round(info.seconds), 60)
        raise _refuse(f"the recording is too long ({minutes} min {secs} s, at most 5 minutes)", 413)
    return info


def _samples(info: WavInfo, body: bytes) -> Signal:
    """Every channel's samples, interleaved, as floats."""
    raw = body[: info.frames * info.channels * info.bits // 8]
    if info.encoding in ("mu-law", "A-law"):
        table = ULAW_DECODE if info.encoding == "mu-law" else ALAW_DECODE
        return table[np.frombuffer(raw, dtype=np.uint8)] / 32768.0
    if info.encoding == "float":
        floats = np.frombuffer(raw, dtype="<f4" if info.bits == 32 else "<f8")
        return np.nan_to_num(floats.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    if info.bits == 8:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if info.bits == 24:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)) << 8
        return (ints >> 8) / 8388608.0
    dtype = "<i2" if info.bits == 16 else "<i4"
    return np.frombuffer(raw, dtype=dtype) / float(2 ** (info.bits - 1))


def decode_wav(data: bytes) -> tuple[Pcm, WavInfo]:
    """An uploaded WAV file as prompt samples (8 kHz mono int16) and what it was.

    Accepts PCM (8, 16, 24, 32-bit), float (32, 64-bit), mu-law and A-law, in plain or
    extensible WAV, any number of channels (mixed down) at any rate (resampled); refuses
    everything else with a :class:`PromptError` saying what to upload.
    """
    _check_container(data)
    fmt, body = _chunks(data)
    info = _format(fmt, body)
    mono = _samples(info, body).reshape(-1, info.channels).mean(axis=1)
    return to_pcm(resample(mono, info.rate, CLOCK_RATE)), info


def convert_upload(data: bytes) -> bytes:
    """An uploaded WAV file converted to the prompt format (8 kHz 16-bit mono WAV)."""
    return wav_bytes(decode_wav(data)[0])


def to_pcm(signal: Signal) -> Pcm:
    """Floats (+-1.0 full scale) as int16 samples, rounded and clipped."""
    return np.clip(np.round(signal * 32768.0), -32768, 32767).astype(np.int16)


KAISER_BETA = 8.0
"""Window of the resampling filter (stop band about 80 dB down)."""


def resample(signal: Signal, rate_in: int, rate_out: int, zeros: int = 16) -> Signal:
    """``signal`` at ``rate_out``: Kaiser-windowed sinc interpolation, low-pass at 90 % of
    the lower rate's Nyquist frequency, ``zeros`` zero crossings each side.

    Polyphase: with ``rate_out / rate_in = up / down`` in lowest terms, output ``k`` sits
    at input position ``k * down / up``, so there are only ``up`` distinct filters and the
    outputs of one phase read evenly spaced windows of the input (one matrix product).
    """
    if rate_in == rate_out or not len(signal):
        return signal.astype(np.float64)
    common = math.gcd(rate_in, rate_out)
    up, down = rate_out // common, rate_in // common
    ratio = min(1.0, rate_out / rate_in)
    half = math.ceil(zeros / ratio)  # filter half-length, in input samples
    taps = np.arange(-half + 1, half + 1, dtype=np.float64)
    count = len(signal) * up // down
    padded = np.concatenate([np.zeros(half), signal, np.zeros(2 * half + down)])
    windows = sliding_window_view(padded, 2 * half)
    out = np.empty(count, dtype=np.float64)
    for phase in range(min(up, count)):
        whole, frac = divmod(phase * down, up)  # output phase + j * up is at input
        distance = frac / up - taps  # whole + j * down + frac / up; minus each tap's place
        window = np.i0(KAISER_BETA * np.sqrt(np.clip(1 - (distance / half) ** 2, 0, None)))
        kernel = np.sinc(0.9 * ratio * distance) * window
        kernel /= kernel.sum()
        first = whole + 1  # the window of output `phase` starts there in `padded`
        rows = windows[first : first + down * len(range(phase, count, up)) : down]
        out[phase::up] = rows @ kernel
    return out


# -- levels (scripts/make-prompts; also usable on uploads) -----------------------------------

PROMPT_RMS_DB = -19.0
"""Level of speech prompts: RMS of the active part (about -16 dBm0 on a G.711 line)."""
PROMPT_PEAK_DB = -1.0


def trim_silence(pcm: Pcm, below_peak_db: float = 40.0, margin: float = 0.01) -> Pcm:
    """``pcm`` without the leading and trailing samples quieter than ``below_peak_db``
    under its peak (a ``margin`` of seconds is kept each side)."""
    magnitude = np.abs(pcm.astype(np.int32))
    if not len(pcm) or not magnitude.max():
        return pcm[:0]
    loud = np.flatnonzero(magnitude >= magnitude.max() * 10 ** (-below_peak_db / 20))
    keep = round(margin * CLOCK_RATE)
    return pcm[max(0, int(loud[0]) - keep) : int(loud[-1]) + 1 + keep]


def normalize(pcm: Pcm, rms_db: float = PROMPT_RMS_DB, peak_db: float = PROMPT_PEAK_DB) -> Pcm:
    """``pcm`` scaled so its active part (20 ms frames within 30 dB of the loudest) has
    ``rms_db`` RMS, but no sample exceeds ``peak_db``."""
    data = pcm.astype(np.float64) / 32768.0
    frames = data[: len(data) // 160 * 160].reshape(-1, 160) if len(data) >= 160 else data[None]
    power = (frames**2).mean(axis=1)
    if not power.max():
        return pcm
    active = power[power >= power.max() / 1000.0]
    gain = 10 ** (rms_db / 20) / math.sqrt(float(active.mean()))
    gain = min(gain, 10 ** (peak_db / 20) / float(np.abs(data).max()))
    return to_pcm(data * gain)


def fade(pcm: Pcm, seconds: float = 0.005) -> Pcm:
    """``pcm`` with linear fades in and out (no click where a prompt starts or stops)."""
    n = min(round(seconds * CLOCK_RATE), len(pcm) // 2)
    if n == 0:
        return pcm
    ramp = np.linspace(0.0, 1.0, n, endpoint=False)
    gains = np.ones(len(pcm))
    gains[:n], gains[len(pcm) - n :] = ramp, ramp[::-1]
    return np.round(pcm * gains).astype(np.int16)


def beep(frequency: float, seconds: float) -> Pcm:
    """A tone at the prompt level (a sine's RMS is 3 dB under its peak), faded."""
    return fade(tone(frequency, seconds, level=PROMPT_RMS_DB + 3.0))
