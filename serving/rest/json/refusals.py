"""What rapidjson refuses and Python's `json` takes: numbers beyond a double, lone surrogates.

rapidjson (TF Serving's parser) stops at a number whose value does not fit a double
("Number too big to be stored in double.") and at a `\\uD800`-`\\uDFFF` escape that is not a
high surrogate followed at once by a low one ("The surrogate pair in string is invalid.").
Python's `json` turns the first into a huge `int` (whose conversion fails past 4,300 digits) or
`inf`, and the second into a lone surrogate that no UTF-8 encoder takes. Both are found here,
each with its offset, so the parse error names the first one in the document as rapidjson would.
"""

from __future__ import annotations

import math
import re

TOO_BIG = "Number too big to be stored in double."
BAD_SURROGATE = "The surrogate pair in string is invalid."

# A number with 200 or more digits, or an exponent of three or more digits, may overflow a
# double; without either, |value| < 10**299 and the standard conversion is kept.
_MAYBE_BIG = re.compile(r"\d{200}|[eE]\+?\d{3}")
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
# Backslashes are only legal inside strings, so scanning escapes left to right over the whole
# text pairs each backslash with what it escapes.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
# Strings are skipped whole so that digits inside them are never taken for numbers.
_STRING_OR_NUMBER = re.compile(
    r'"(?:[^"\\]|\\.)*"|(-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)', re.DOTALL
)
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class NumberTooBigError(ValueError):
    """A JSON number whose value overflows a double."""


def number_hooks(text: str) -> dict:
    """`json.loads` keyword arguments that refuse numbers beyond a double, when any may be."""
    if not _MAYBE_BIG.search(text):
        return {}
    return {"parse_int": _parse_int, "parse_float": _parse_float}


def _parse_int(token: str) -> int | float:
    # rapidjson keeps integers in [-2**63, 2**64 - 1]; beyond, it reads a double.
    if len(token) <= 21:
        value = int(token)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    return _parse_float(token)


def _parse_float(token: str) -> float:
    value = float(token)  # no digit limit, unlike int()
    if math.isinf(value):
        raise NumberTooBigError(token)
    return value


def too_big_offset(text: str) -> int:
    """Where the first number that overflows a double starts (its sign included)."""
    for match in _STRING_OR_NUMBER.finditer(text):
        if match.group(1) and math.isinf(float(match.group(1))):
            return match.start()
    return 0


def lone_surrogate_offset(text: str) -> int | None:
    """Where the first surrogate escape without its pair starts (its backslash), or None."""
    if not _MAYBE_SURROGATE.search(text):
        return None
    high_at = high_end = None
    for match in _ESCAPE.finditer(text):
        code = int(match.group(1), 16) if match.group(1) else None
        if high_at is not None:
            if code is not None and 0xDC00 <= code <= 0xDFFF and match.start() == high_end:
                high_at = None
                continue
            return high_at
        if code is None or not 0xD800 <= code <= 0xDFFF:
            continue
        if code >= 0xDC00:
            return match.start()
        high_at, high_end = match.start(), match.end()
    return high_at
