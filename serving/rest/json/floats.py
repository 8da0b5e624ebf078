"""TF Serving's `WriteDecimal` for a whole float32 array at once, exactly and without a loop.

The rule, per element: `%.6g` when that text parses back (to a double, then to the tensor's
dtype) to the same value, else `%.9g` for float and `%.17g` for double; a token without `.` or
`e` gets `.0`; NaN and the infinities are `NaN`, `Infinity` and `-Infinity`.

For float32 every step is done on whole arrays:

1. The decimal exponent `k` of |x| comes from a table of the smallest float32 at or above each
   power of ten, so it is exact (no `log10` rounding).
2. The P-digit mantissa is `rint(|x| * 10**(P-1-k))` in float64. The product is exact when
   `0 <= P-1-k <= 12` (24 bits of float32 times at most 28 bits of 5**12), so `rint` rounds
   half to even exactly as printf does; otherwise it carries at most a few float64 roundings,
   and an element is only trusted when rounding the value nudged down and up by 2**-48 agree.
3. `%.6g` round-trips when the six-digit decimal, rounded to float64 then to float32, is the
   value: `n * 10**e` with an exact power `|e| <= 22` is correctly rounded by IEEE arithmetic
   (the same double the parser returns); beyond that the nudged bounds must agree again.
4. The tokens are assembled in a byte matrix: each element's digits, exponent digits and the
   constant characters sit in a row, and a table indexed by the element's layout (sign, fixed or
   exponent form, exponent, significant digits) gathers them in one `take`.

The few elements that step 2 or 3 cannot settle (near-ties after an inexact product, about one
in 10**5 for values below 1e-4 and none for the usual 1e-4..1e9) are formatted one by one with
`exact_token`, the rule itself. float64 keeps a per-element path (see `decimal_bytes`).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_NUDGE = 2.0**-48  # > 2**-53 times the roundings in an inexact product, with room to spare
_EXACT_SCALE = 12  # |x| * 10**s is exact in float64 for float32 x and 0 <= s <= this

# The smallest float32 >= 10**j for j in [_K_MIN, _K_MAX + 1] (inf above the float32 range).
_K_MIN, _K_MAX = -45, 38


def _float32_at_or_above(power: int) -> float:
    target = Fraction(10) ** power
    value = np.float32(float(target))
    while Fraction(float(value)) < target:
        value = np.nextafter(value, np.float32(np.inf))
    while Fraction(float(np.nextafter(value, np.float32(0)))) >= target:
        value = np.nextafter(value, np.float32(0))
    return float(value)


with np.errstate(over="ignore"):
    _THRESHOLDS = np.array(
        [_float32_at_or_above(j) for j in range(_K_MIN, _K_MAX + 1)] + [np.inf], np.float64
    )
# 10**s as float64 for |s| <= 22 (all exact); larger scales are split into such steps.
_POW10 = np.array([10.0**s for s in range(23)], np.float64)
_MAX_STEP = 22
_CHUNK = 1 << 16  # elements per pass: keeps the temporaries (~150 bytes an element) small


def _digit_table(strip: bool, zero: bytes) -> np.ndarray:
    """Four ASCII digits of 0..9999 as little-endian uint64s; `strip` turns trailing zeros into
    NUL (the token ends there), and `zero` is what 0 becomes then."""
    texts = [b"%04d" % i for i in range(10000)]
    if strip:
        texts = [text.rstrip(b"0") or zero for text in texts]
    return np.array([int.from_bytes(text.ljust(4, b"\0"), "little") for text in texts], "<u8")


_DIGITS4 = _digit_table(False, b"")
# Indexed by group + 10000 when the group is the last nonzero one (or after it): then trailing
# zeros become NUL, and the first fraction group keeps one `0` when all are zero.
_DIGITS4_TRAILING = np.concatenate([_DIGITS4, _digit_table(True, b"")])
_DIGITS4_FIRST = np.concatenate([_DIGITS4, _digit_table(True, b"0")])
_ZEROS8 = int.from_bytes(b"00000000", "little")
_TRAILING_ZEROS4 = np.array(
    [4] + [len(t) - len(t.rstrip("0")) for t in map("{:04d}".format, range(1, 10000))], np.intp
)

# Each element is written into a row of _ROW bytes, then the token is the _WINDOW bytes from
# where it starts (the NULs after it are dropped by the `S` dtype):
#   columns 0-11   the integer part, 12 digits with leading zeros (the sign overwrites one)
#   column  12     '.'
#   columns 13-24  12 fraction digits; trailing zeros are NUL (`0` alone when all are zero)
#   columns 25-31  NUL
# The exponent form is the same with one integer digit; `e+XX` then overwrites from the point
# (one digit) or from just after the last fraction digit.
_ROW, _POINT, _WINDOW = 32, 12, 16
_EXP_MIN = -4  # %g writes exponents -4 <= X < precision in the fixed form


def exact_token(value: float, single: bool) -> str:
    """`WriteDecimal` for one value, straight from the rule (float32 if `single`, else float64)."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = format(value, ".6g")
    parsed = float(text)
    same = np.float32(parsed) == np.float32(value) if single else parsed == value
    if not same:
        text = format(value, ".9g" if single else ".17g")
    return text if ("." in text or "e" in text) else text + ".0"


def decimal_bytes(values: np.ndarray) -> np.ndarray:
    """`WriteDecimal` tokens of a float32 or float64 array as a flat `S` array (C order).

    float32 is vectorised (see the module docstring). float64 needs 17 significant digits,
    more than a float64 product carries, so an exact vectorised mantissa would need
    double-double arithmetic; it keeps the per-element path, which formats each element once.
    """
    flat = np.ascontiguousarray(values).ravel()
    if flat.dtype.kind != "f" or flat.dtype.itemsize != 4:
        return np.array(_per_element_tokens(flat), dtype="S")
    flat = flat.astype(np.float32, copy=False)
    if flat.size <= _CHUNK:
        return _float32_bytes(flat)
    # Chunks keep the temporaries (a few dozen bytes per element) in cache.
    parts = [_float32_bytes(flat[i : i + _CHUNK]) for i in range(0, flat.size, _CHUNK)]
    return np.concatenate(parts)


def _scale(a: np.ndarray, s: np.ndarray, low: int, high: int) -> np.ndarray:
    """a * 10**s in float64 (`low`, `high`: the range of s): one IEEE rounding for |s| <= 22."""
    if low >= 0 and high <= _MAX_STEP:
        return a * _POW10.take(s)
    if low >= -_MAX_STEP and high <= 0:
        return a / _POW10.take(-s)
    result = a
    while low or high:
        step = np.clip(s, -_MAX_STEP, _MAX_STEP)
        power = _POW10.take(np.abs(step))
        result = np.where(step >= 0, result * power, result / power)
        s = s - step
        low, high = int(s.min()), int(s.max())
    return result


def _round_to_digits(a: np.ndarray, k: np.ndarray, k_range: tuple[int, int], precision: int):
    """The `precision`-digit mantissa (float64) and exponent of `a`, and where they are unsure.

    `k` is the decimal exponent of `a` and `k_range` its least and greatest value.
    """
    s = (precision - 1) - k
    low, high = precision - 1 - k_range[1], precision - 1 - k_range[0]
    y = _scale(a, s, low, high)
    n = np.rint(y)
    unsure = None
    if low < 0 or high > _EXACT_SCALE:
        unsure = np.rint(y * (1 - _NUDGE)) != np.rint(y * (1 + _NUDGE))
        unsure &= (s < 0) | (s > _EXACT_SCALE)
    carry = n >= 10.0**precision
    if carry.any():
        n[carry] = 10.0 ** (precision - 1)
        k = k + carry
    return n, k, unsure


def _float32_bytes(flat: np.ndarray) -> np.ndarray:
    size = flat.size
    if not size:
        return np.zeros(0, "S1")
    magnitude = np.abs(flat)
    ordinary = np.isfinite(magnitude)
    ordinary &= magnitude != 0
    every = bool(ordinary.all())
    a32 = magnitude if every else np.where(ordinary, magnitude, np.float32(1))
    a = a32.astype(np.float64)

    # The decimal exponent: log10, then made exact against the powers-of-ten table.
    k = np.floor(np.log10(a)).astype(np.intp)
    at = k - _K_MIN
    k += a >= _THRESHOLDS.take(at + 1)
    k -= a < _THRESHOLDS.take(at)
    k_range = int(k.min()), int(k.max())

    with np.errstate(over="ignore"):
        n6, k6, unsure = _round_to_digits(a, k, k_range, 6)
        e6 = k6 - 5
        low, high = int(e6.min()), int(e6.max())
        short = _scale(n6, e6, low, high)
        round_trips = short.astype(np.float32) == a32
        if low < -_MAX_STEP or high > _MAX_STEP:
            far = (e6 < -_MAX_STEP) | (e6 > _MAX_STEP)
            far &= (short * (1 - _NUDGE)).astype(np.float32) != (short * (1 + _NUDGE)).astype(
                np.float32
            )
            unsure = far if unsure is None else unsure | far
    n9, k9, unsure9 = _round_to_digits(a, k, k_range, 9)
    if unsure9 is not None:
        unsure9 &= ~round_trips
        unsure = unsure9 if unsure is None else unsure | unsure9

    mantissa = np.where(round_trips, n6 * 1000, n9)  # nine digits, float64 (exact)
    exponent = np.where(round_trips, k6, k9)
    fixed = exponent < np.where(round_trips, 6, 9)
    fixed &= exponent >= _EXP_MIN
    tokens = _assemble(mantissa, exponent, fixed, np.signbit(flat))
    if not every or unsure is not None:
        patches = _patches(flat, ordinary, unsure)
        if patches:
            tokens[np.fromiter(patches, np.intp, len(patches))] = list(patches.values())
    return tokens


def _assemble(mantissa, exponent, fixed, negative) -> np.ndarray:
    """The tokens of nine-digit mantissas and decimal exponents (see the row layout above)."""
    size = mantissa.size
    # Digits before the point: exponent + 1 in the fixed form (one `0` if negative), else one.
    point = np.where(fixed, exponent, 0)
    shift = 8 - point  # fraction digits of the mantissa, 0..12
    scale = _POW10.take(shift)
    integer = np.floor(mantissa / scale)  # exact: the quotient is far from the next integer
    fraction = mantissa - integer * scale
    fraction *= _POW10.take(12 - shift)  # now 12 digits, point at the left

    # Four-digit groups (float64 arithmetic is exact here and much faster than int64 division).
    f_high = np.floor(fraction / 1e4)
    f0 = np.floor(f_high / 1e4)
    f2 = fraction - f_high * 1e4
    f1 = f_high - f0 * 1e4
    # The last nonzero group and those after it lose their trailing zeros (table half 2).
    p0 = _DIGITS4_FIRST.take(((fraction == f0 * 1e8) * 1e4 + f0).astype(np.intp))
    p1 = _DIGITS4_TRAILING.take(((f2 == 0) * 1e4 + f1).astype(np.intp))
    p2 = _DIGITS4_TRAILING.take(f2.astype(np.intp) + 10000)

    words = np.empty((size, _ROW // 8), "<u8")
    if integer.any():
        i_high = np.floor(integer / 1e4)
        i0 = np.floor(i_high / 1e4)
        words[:, 0] = _DIGITS4.take(i0.astype(np.intp))
        words[:, 0] |= _DIGITS4.take((i_high - i0 * 1e4).astype(np.intp)) << 32
        words[:, 1] = _DIGITS4.take((integer - i_high * 1e4).astype(np.intp))
    else:
        words[:, 0] = _ZEROS8
        words[:, 1] = _ZEROS8 & 0xFFFFFFFF
    words[:, 1] |= p0 << 40 | ord(".") << 32
    words[:, 2] = p0 >> 24 | p1 << 8 | p2 << 40
    words[:, 3] = p2 >> 24
    rows = words.view(np.uint8).ravel()

    starts = np.arange(0, size * _ROW, _ROW) + _POINT - 1
    starts -= np.maximum(point, 0)  # the first integer digit
    if negative.any():
        signed = starts[negative] - 1
        rows[signed] = ord("-")
        starts[negative] = signed

    if not fixed.all():
        at = np.flatnonzero(~fixed)
        # Fraction digits kept: 12 minus the trailing zeros of the last nonzero group.
        g0, g1, g2 = (group[at].astype(np.intp) for group in (f0, f1, f2))
        kept = np.where(
            g2 != 0,
            12 - _TRAILING_ZEROS4.take(g2),
            np.where(g1 != 0, 8 - _TRAILING_ZEROS4.take(g1), 4 - _TRAILING_ZEROS4.take(g0)),
        )
        column = at * _ROW + _POINT + kept + (kept > 0)
        power = exponent[at]
        rows[column] = ord("e")
        rows[column + 1] = np.where(power < 0, ord("-"), ord("+"))
        power = np.abs(power)
        wide = power >= 100
        rows[column + 2] = np.where(wide, power // 100, power // 10) + ord("0")
        rows[column + 3] = np.where(wide, power // 10 % 10, power % 10) + ord("0")
        if wide.any():
            rows[column[wide] + 4] = power[wide] % 10 + ord("0")

    windows = np.ndarray((rows.size - _WINDOW + 1,), f"S{_WINDOW}", rows, strides=(1,))
    return windows[starts]


def _patches(flat: np.ndarray, ordinary: np.ndarray, unsure: np.ndarray | None) -> dict[int, bytes]:
    """Tokens of zeros, NaN, the infinities and the unsure elements, by flat index."""
    patches: dict[int, bytes] = {}
    special = ~ordinary if unsure is None else ~ordinary | unsure
    if special.any():
        at = np.flatnonzero(special)
        for i, value in zip(at.tolist(), flat[at].tolist(), strict=True):
            if value == 0:
                patches[i] = b"-0.0" if math.copysign(1.0, value) < 0 else b"0.0"
            else:
                patches[i] = exact_token(value, True).encode()
    return patches


def _per_element_tokens(flat: np.ndarray) -> list[str]:
    """The rule for each element, formatting each once (the few short candidates twice)."""
    floats = flat.tolist()
    finite = np.isfinite(flat)
    long_format = "%.9g" if flat.dtype.itemsize == 4 else "%.17g"
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
