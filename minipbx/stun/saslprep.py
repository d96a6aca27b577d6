"""SASLprep (RFC 4013), the string preparation of STUN long-term passwords (RFC 5389 15.4).

Built on the stdlib :mod:`stringprep` tables (RFC 3454, Unicode 3.2).
"""

from __future__ import annotations

import stringprep
import unicodedata
from collections.abc import Callable

# RFC 4013 2.3: code points that must not appear after mapping and normalisation.
_PROHIBITED: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("non-ASCII space", stringprep.in_table_c12),
    ("ASCII control character", stringprep.in_table_c21),
    ("non-ASCII control character", stringprep.in_table_c22),
    ("private use character", stringprep.in_table_c3),
    ("non-character code point", stringprep.in_table_c4),
    ("surrogate code point", stringprep.in_table_c5),
    ("character inappropriate for plain text", stringprep.in_table_c6),
    ("character inappropriate for canonical representation", stringprep.in_table_c7),
    ("display property or deprecated character", stringprep.in_table_c8),
    ("tagging character", stringprep.in_table_c9),
    ("unassigned code point", stringprep.in_table_a1),
)


def saslprep(text: str) -> str:
    """The prepared form of ``text``; ``ValueError`` names the offending character."""
    # RFC 4013 2.1: non-ASCII spaces become SPACE, "commonly mapped to nothing" vanish.
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    prepared = unicodedata.normalize("NFKC", mapped)  # RFC 4013 2.2
    for char in prepared:
        for what, contains in _PROHIBITED:
            if contains(char):
                raise ValueError(f"SASLprep: {what} U+{ord(char):04X} is not allowed")
    _check_bidi(prepared)
    return prepared


def _check_bidi(text: str) -> None:
    """RFC 3454 6: right-to-left text must be wholly so, and start and end with RandALCat."""
    rtl = [stringprep.in_table_d1(c) for c in text]
    if not any(rtl):
        return
    if any(stringprep.in_table_d2(c) for c in text):
        raise ValueError("SASLprep: mixes right-to-left and left-to-right characters")
    if not (rtl[0] and rtl[-1]):
        raise ValueError("SASLprep: right-to-left text must start and end with such a character")
