"""JSON text exactly as TF Serving's rapidjson produces it: parse errors, debug strings, numbers."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import operator
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import orjson

from serving.errors import invalid_argument
from serving.rest.json import refusals
from serving.rest.json.floats import decimal_bytes

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
        # than the standard library; what it refuses (NaN and Infinity tokens, numbers beyond a
        # double, lone surrogates, invalid UTF-8, very deep nesting, errors) goes the exact way
        # below.
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    text = body.decode("utf-8", "surrogateescape")
    # rapidjson reports the first failure in the document: Python's own, or one it lets pass.
    failure: tuple[int, str] | None = None
    try:
        doc = json.loads(text, **refusals.number_hooks(text))
    except json.JSONDecodeError as error:
        failure = error.pos, _parse_message(error, text)
    except refusals.NumberTooBigError:
        failure = refusals.too_big_offset(text), refusals.TOO_BIG
    except RecursionError:
        # Python's parser recurses once per level and stops near the interpreter's recursion
        # limit (rapidjson would recurse until the stack runs out): a clear 400 instead.
        raise invalid_argument(
            "JSON Parse error: arrays and objects nest too deeply: this server parses up to "
            f"about {sys.getrecursionlimit()} levels, and a tensor has at most 64 dimensions"
        ) from None
    surrogate = refusals.lone_surrogate_offset(text)
    if surrogate is not None and (failure is None or surrogate < failure[0]):
        failure = surrogate, refusals.BAD_SURROGATE
    if failure is None:
        return doc
    offset = len(text[: failure[0]].encode("utf-8", "surrogateescape"))
    raise invalid_argument(f"JSON Parse error: {failure[1]} at offset: {offset}")


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


def printable(text: str) -> str:
    """`text` as valid UTF-8: bytes that are not UTF-8 (surrogate escapes) become `\\xNN`."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


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
    """`WriteDecimal` for every element of a float32 or float64 array (see `floats`)."""
    return decimal_bytes(values).astype(str).tolist()


Tokens = Sequence[str] | Sequence[bytes] | np.ndarray  # an ndarray: ASCII tokens, `S` dtype


def render_array(tokens: Tokens, shape: tuple[int, ...], depth: int, single_line: bool) -> str:
    """Nested JSON arrays of pre-rendered tokens, laid out like rapidjson's PrettyWriter.

    Args:
        tokens: One rendered element per tensor element, in C order: str, ASCII bytes, or an
            `S` array of ASCII tokens (as `floats.decimal_bytes` returns).
        shape: The tensor shape; `()` writes the single token bare.
        depth: How many containers are open where the value starts (sets the indentation).
        single_line: `kFormatSingleLineArray` (`[1, 2]`) instead of one element per line.
    """
    if not shape:
        token = tokens[0]
        return token.decode("ascii") if isinstance(token, bytes) else token
    if 0 in shape:
        return _render_empty(shape, depth, single_line)
    layout = _Layout(shape, depth, single_line)
    if isinstance(tokens, np.ndarray):
        if single_line:
            return layout.start + _joined(tokens, shape, layout.between) + layout.end
        tokens = tokens.tolist()
    return layout.join(tokens)


def render_rows(tokens: Tokens, shape: tuple[int, ...], depth: int) -> list[str]:
    """`render_array(..., single_line=True)` of each `shape[1:]` slice of a `shape` tensor."""
    batch, row_shape = shape[0], shape[1:]
    if not batch:
        return []
    if isinstance(tokens, np.ndarray) and not row_shape:
        return tokens.astype(str).tolist()
    if not row_shape:
        return [t.decode("ascii") if isinstance(t, bytes) else t for t in tokens]
    if 0 in row_shape:
        return [_render_empty(row_shape, depth, True)] * batch
    layout = _Layout(row_shape, depth, True)
    if isinstance(tokens, np.ndarray):
        # All rows in one pass, a \x01 (which no token holds) between them.
        between = [*layout.between, layout.end + "\x01" + layout.start]
        text = layout.start + _joined(tokens, shape, between) + layout.end
        return text.split("\x01")
    step = math.prod(row_shape)
    return [layout.join(tokens[i * step : (i + 1) * step]) for i in range(batch)]


class _Layout:
    """The text around and between the tokens of one shape.

    Between two consecutive elements whose trailing `c` axes wrap, the writer closes those `c`
    arrays, writes the separator of the axis above them and opens `c` arrays again; so the text
    is `start, token, between[c1], token, ..., token, end`.
    """

    def __init__(self, shape: tuple[int, ...], depth: int, single_line: bool) -> None:
        rank = len(shape)
        if single_line:
            heads, seps, tails = ["["] * rank, [", "] * rank, ["]"] * rank
        else:
            inner = ["\n" + INDENT * (depth + axis + 1) for axis in range(rank)]
            heads = ["[" + text for text in inner]
            seps = ["," + text for text in inner]
            tails = ["\n" + INDENT * (depth + axis) + "]" for axis in range(rank)]
        self.shape = shape
        self.between = [
            "".join(reversed(tails[rank - wraps :]))
            + seps[rank - 1 - wraps]
            + "".join(heads[rank - wraps :])
            for wraps in range(rank)
        ]
        self.start, self.end = "".join(heads), "".join(reversed(tails))

    def join(self, tokens: Sequence[str] | Sequence[bytes]) -> str:
        """The text, put together by `str.join` from a list filled by slice assignments."""
        shape, between, start, end = self.shape, self.between, self.start, self.end
        binary = bool(tokens) and isinstance(tokens[0], bytes)
        if binary:
            between = [text.encode("ascii") for text in between]
            start, end = start.encode("ascii"), end.encode("ascii")
        count = len(tokens)
        parts = [between[0]] * (2 * count + 1)
        parts[0], parts[-1] = start, end
        parts[1::2] = tokens
        stride = 1
        for wraps in range(1, len(shape)):
            stride *= shape[-wraps]
            parts[2 * stride : 2 * count : 2 * stride] = [between[wraps]] * (count // stride - 1)
        return b"".join(parts).decode("ascii") if binary else "".join(parts)


_JOIN_CHUNK = 4096  # elements per pass of `_joined`: its records stay under 128 KiB


def _joined(tokens: np.ndarray, shape: tuple[int, ...], between: list[str]) -> str:
    """The tokens (an `S` array) with `between[c]` after each whose next element wraps `c` axes.

    Each token and its separator go into one record of NUL-padded bytes, and the NULs are
    dropped (no token or separator holds one).
    """
    count, width = tokens.size, tokens.itemsize
    seps = [text.encode("ascii") for text in between] + [b""]  # the last: after the last token
    table = np.array(seps, dtype="S")
    table = table.view(f"V{table.itemsize}")  # raw bytes: copied, not cast
    tokens = np.ascontiguousarray(tokens).view(f"V{width}")
    cell = np.dtype([("token", tokens.dtype), ("separator", table.dtype)])
    strides = list(itertools.accumulate(reversed(shape), operator.mul))[: len(between) - 1]
    pieces = []
    for begin in range(0, count, _JOIN_CHUNK):
        stop = min(begin + _JOIN_CHUNK, count)
        # which[i]: how many axes wrap after element begin + i.
        which = np.zeros(stop - begin, np.intp)
        for wraps, stride in enumerate(strides, 1):
            which[(-begin - 1) % stride :: stride] = wraps
        if stop == count:
            which[-1] = len(seps) - 1
        cells = np.empty(stop - begin, cell)
        cells["token"] = tokens[begin:stop]
        cells["separator"] = table.take(which)
        pieces.append(cells.tobytes().translate(None, b"\0"))
    return b"".join(pieces).decode("ascii")


def _render_empty(shape: tuple[int, ...], depth: int, single_line: bool) -> str:
    """Arrays with a zero-length axis: nested `[]`s, no tokens."""
    items: list[str] = []
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
