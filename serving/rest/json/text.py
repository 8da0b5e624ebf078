"""JSON text exactly as TF Serving's rapidjson produces it: parse errors, debug strings, numbers."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from decimal import Decimal
from typing import Any

import numpy as np
import orjson

from serving.errors import invalid_argument

# JsonValueToDebugString stops writing once its buffer holds this many bytes.
DEBUG_LIMIT = 256
INDENT = "    "  # rapidjson PrettyWriter's default indent: four spaces per level.

# rapidjson's messages (GetParseError_En) for the failures Python's json reports.
_PARSE_MESSAGES = {
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"})
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


class _LimitReachedError(Exception):
    """Raised when the debug string reaches its limit (rapidjson's handler returns false)."""


def loads(body: bytes) -> Any:
    """Parses a request body like rapidjson with `kParseNanAndInfFlag`.

    Args:
        body: The raw HTTP body. Bytes that are not UTF-8 survive as surrogate escapes (rapidjson
            does not validate encoding), so `str.encode("utf-8", "surrogateescape")` restores them.

    Returns:
        The parsed document.

    Raises:
        ServingError: INVALID_ARGUMENT `JSON Parse error: <rapidjson message> at offset: <n>`.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    body = body.removeprefix(b"\xef\xbb\xbf")
    try:
        # orjson takes every document that is strict JSON in valid UTF-8, several times faster
        # than the standard library; what it refuses (NaN and Infinity tokens, integers beyond
        # 64 bits, invalid UTF-8, very deep nesting, errors) goes the exact way below.
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    text = body.decode("utf-8", "surrogateescape")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        message = _parse_message(error, text)
        offset = len(text[: error.pos].encode("utf-8", "surrogateescape"))
        raise invalid_argument(f"JSON Parse error: {message} at offset: {offset}") from None
    except RecursionError:
        # Python's parser recurses once per level and stops near the interpreter's recursion
        # limit (rapidjson would recurse until the stack runs out): a clear 400 instead.
        raise invalid_argument(
            "JSON Parse error: arrays and objects nest too deeply: this server parses up to "
            f"about {sys.getrecursionlimit()} levels, and a tensor has at most 64 dimensions"
        ) from None


def _parse_message(error: json.JSONDecodeError, text: str) -> str:
    reason = error.msg
    if reason == "Expecting value" and not text.strip():
        return "The document is empty."
    if reason == "Expecting ',' delimiter":
        if _innermost_container(text, error.pos) == "{":
            return "Missing a comma or '}' after an object member."
        return "Missing a comma or ']' after an array element."
    for prefix, message in _PARSE_MESSAGES.items():
        if reason.startswith(prefix):
            return message
    return "Invalid value."


def _innermost_container(text: str, pos: int) -> str:
    """The bracket open at `pos`, to tell rapidjson's object and array comma errors apart."""
    stack, in_string, escaped = [], False, False
    for char in text[:pos]:
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def quote(text: str) -> str:
    """A JSON string literal escaped like rapidjson's Writer (non-ASCII stays as is)."""
    return '"' + text.translate(_ESCAPES) + '"'


def json_type(value: Any) -> str:
    """rapidjson's type name as TF Serving prints it (`JsonTypeString`)."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def rapidjson_double(value: float) -> str:
    """rapidjson `Writer::Double`: shortest round-trip digits laid out by `Prettify`."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    length, k = len(digits), int(digits_tuple.exponent)
    kk = length + k
    if k >= 0 and kk <= 21:
        body = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        body = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        body = "0." + "0" * -kk + digits
    elif length == 1:
        body = f"{digits}e{kk - 1}"
    else:
        body = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + body


def debug_string(value: Any) -> str:
    """TF Serving's `JsonValueToDebugString`: pretty objects, one-line arrays, cut at 256 bytes."""
    out: list[str] = []
    size = [0]
    stack: list[list] = []  # [is_array, values_written] per open container, as in PrettyWriter

    def emit(text: str) -> None:
        out.append(text)
        size[0] += len(text.encode("utf-8", "surrogateescape"))

    def check() -> None:
        if size[0] >= DEBUG_LIMIT:
            raise _LimitReachedError

    def prefix() -> None:
        if not stack:
            return
        top = stack[-1]
        if top[0]:
            if top[1]:
                emit(", ")
        else:
            emit((",\n" if top[1] % 2 == 0 else ": ") if top[1] else "\n")
            if top[1] % 2 == 0:
                emit(INDENT * len(stack))
        top[1] += 1

    def write(item: Any) -> None:
        check()
        if isinstance(item, dict):
            prefix()
            emit("{")
            stack.append([False, 0])
            for key, member in item.items():
                check()
                prefix()
                emit(quote(key))
                write(member)
            check()
            if stack.pop()[1]:
                emit("\n" + INDENT * len(stack))
            emit("}")
        elif isinstance(item, list):
            prefix()
            emit("[")
            stack.append([True, 0])
            for member in item:
                write(member)
            check()
            stack.pop()
            emit("]")
        elif isinstance(item, float) and not math.isfinite(item):
            # Writer::Double refuses NaN and infinities without kWriteNanAndInfFlag.
            raise _LimitReachedError
        else:
            prefix()
            emit(scalar_token(item))

    with contextlib.suppress(_LimitReachedError):
        write(value)
    return "".join(out)


def scalar_token(value: Any) -> str:
    """The JSON text of a parsed scalar as rapidjson's Writer prints it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return str(value)
    # Integers beyond 64 bits are doubles to rapidjson.
    return rapidjson_double(float(value))


def decimal_tokens(values: np.ndarray) -> list[str]:
    """`WriteDecimal` for every element of a float32 or float64 array.

    TF Serving prints `%.6g` (absl::StrCat) when that parses back to the same value, else
    `%.9g` for float and `%.17g` for double; whole numbers get `.0`; non-finite values are
    `NaN`, `Infinity` and `-Infinity`. Formatting dominates the cost, so each element is
    formatted once, except the few that a cheap numeric test says might be short.
    """
    flat = np.asarray(values).ravel()
    floats = flat.tolist()
    finite = np.isfinite(flat)
    long_format = "%.9g" if flat.dtype == np.float32 else "%.17g"
    candidates = np.flatnonzero(finite & _maybe_six_digits(flat)).tolist()
    short_at: dict[int, str] = {}
    if candidates:
        short = [format(floats[i], ".6g") for i in candidates]
        same = np.array(short, dtype=np.float64).astype(flat.dtype) == flat[candidates]
        short_at = {i: t for i, t, ok in zip(candidates, short, same.tolist(), strict=True) if ok}
    if short_at:
        tokens = [short_at.get(i) or long_format % v for i, v in enumerate(floats)]
    else:
        tokens = list(map(long_format.__mod__, floats))
    tokens = [t if ("." in t or "e" in t) else t + ".0" for t in tokens]
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            v = floats[i]
            tokens[i] = "NaN" if v != v else ("-Infinity" if v < 0 else "Infinity")
    return tokens


def _maybe_six_digits(flat: np.ndarray) -> np.ndarray:
    """False only where `%.6g` certainly does not round-trip (a conservative pre-filter).

    The value rounded to six significant digits is rebuilt in float64; if it lies further from
    the value than half a unit in the last place (plus generous slack for float64 error), it
    cannot parse back to the value. Ties and exponent edge cases are left to the exact check.
    """
    with np.errstate(all="ignore"):
        x = np.abs(flat.astype(np.float64))
        scale = 10.0 ** (5 - np.floor(np.log10(x)))
        scaled = x * scale
        mantissa = np.rint(scaled)
        near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
        odd_range = ~((scaled >= 99999.5) & (scaled < 999999.5))
        tolerance = 0.5 * np.abs(np.spacing(flat)).astype(np.float64) * (1 + 1e-6)
        tolerance += 16 * np.spacing(x)
        close = np.abs(mantissa / scale - x) <= tolerance
    return close | near_tie | odd_range


def render_array(tokens: list[str], shape: tuple[int, ...], depth: int, single_line: bool) -> str:
    """Nested JSON arrays of pre-rendered tokens, laid out like rapidjson's PrettyWriter.

    Args:
        tokens: One rendered element per tensor element, in C order.
        shape: The tensor shape; `()` writes the single token bare.
        depth: How many containers are open where the value starts (sets the indentation).
        single_line: `kFormatSingleLineArray` (`[1, 2]`) instead of one element per line.
    """
    items = tokens
    for axis in reversed(range(len(shape))):
        size = shape[axis]
        count = math.prod(shape[:axis])
        if size == 0:
            items = ["[]"] * count
            continue
        if single_line:
            head, sep, tail = "[", ", ", "]"
        else:
            inner = "\n" + INDENT * (depth + axis + 1)
            head, sep, tail = "[" + inner, "," + inner, "\n" + INDENT * (depth + axis) + "]"
        items = [head + sep.join(items[i * size : (i + 1) * size]) + tail for i in range(count)]
    return items[0]
