"""TF Serving's `WriteDecimal` for a whole float32 array at once, exactly and without a loop.

The rule, per element: `%.6g` when that text parses back (to a double, then to the tensor's
dtype) to the same value, else `%.9g` for float and `%.17g` for double; a token without `.` or
`e` gets `.0`; NaN and the infinities are `NaN`, `Infinity` and `-Infinity`.

For float32 every step works on whole arrays, in float64 (which holds every float32 exactly):

1. The decimal exponent `k` of |x|: `log10`, then corrected against a table of the smallest
   float32 at or above each power of ten, so it is exact.
2. The P-digit mantissa is `rint(|x| * 10**(P-1-k))`. The product is exact when
   `0 <= P-1-k <= 12` (24 bits of float32 times at most 28 bits of 5**12), so `rint` rounds
   half to even exactly as printf does. Otherwise the product carries one rounding (a few when
   |P-1-k| > 22), and an element is only trusted when rounding the product nudged down and up
   by 2**-48 gives the same integer, or, after one division by 10**m (m <= 9), when the
   quotient is exactly n + 1/2 and multiplying back (exact there) gives the value: a true tie.
3. `%.6g` round-trips when the six-digit decimal, rounded to float64 then to float32, is the
   value. `n * 10**e` with an exact power `|e| <= 22` is correctly rounded by IEEE arithmetic,
   the same double the parser returns; beyond that the nudged bounds must agree again.
4. Each token is written into a row of bytes (integer digits, point, fraction digits, NUL
   padding; see `_assemble`) and read back as the 16 bytes where it starts; the `S` dtype drops
   the NULs after it.

Elements that step 2 or 3 cannot settle (near-ties after an inexact product: none for
1e-4 <= |x| < 1e6, a few in a million elsewhere) and zeros, NaN and infinities are formatted
one by one with `exact_token`, the rule itself. float64 keeps a per-element path.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_NUDGE = 2.0**-48  # > 2**-53 times the roundings in an inexact product, with room to spare
_EXACT_SCALE = 12  # |x| * 10**s is exact in float64 for float32 x and 0 <= s <= this
_MAX_STEP = 22  # 10**s is exact in float64 for 0 <= s <= 22
_POW10 = np.array([10.0**s for s in range(_MAX_STEP + 1)])
# Elements per pass: every temporary stays under 128 KiB (the largest is 28 bytes an element),
# which glibc serves from reused heap rather than fresh pages, and chunks stay in cache.
_CHUNK = 4096

# Tables indexed by k + _BIAS, k being the decimal exponent (-45..38 for nonzero float32).
_BIAS, _TABLE = 64, 128


def _smallest_float32_at_or_above(k: int) -> float:
    if k < -46:
        return 0.0
    if k > 38:
        return math.inf
    target = Fraction(10) ** k
    value = np.float32(float(target))
    while Fraction(float(value)) < target:
        value = np.nextafter(value, np.float32(np.inf))
    while Fraction(float(np.nextafter(value, np.float32(0)))) >= target:
        value = np.nextafter(value, np.float32(0))
    return float(value)


def _by_exponent(fn) -> np.ndarray:
    return np.array([fn(kb - _BIAS) for kb in range(_TABLE)])


with np.errstate(over="ignore"):
    _AT_LEAST = _by_exponent(_smallest_float32_at_or_above).astype(np.float32)
    _AT_LEAST_NEXT = np.append(_AT_LEAST[1:], np.float32(np.inf))


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
_ZEROS = int.from_bytes(b"00000000", "little")
_ZEROS_POINT = int.from_bytes(b"0000.", "little")
_TRAILING_ZEROS4 = np.array(
    [4] + [len(t) - len(t.rstrip("0")) for t in map("{:04d}".format, range(1, 10000))]
)

# The row each token is written into, and the token is then the _WINDOW bytes from its start:
#   columns 0-11   the integer part: 12 digits with leading zeros (the sign overwrites one)
#   column  12     '.'
#   columns 13-24  12 fraction digits; trailing zeros are NUL (a single `0` when all are zero)
#   columns 25-27  NUL
# The exponent form has one integer digit, and `e+XX` overwrites from the point (when there is
# one digit) or from just after the last fraction digit. A row is a record of three uint64 and
# one uint32 (28 bytes, so that 4096 rows stay under 128 KiB).
_ROW, _POINT, _WINDOW = 28, 12, 16
_WORDS = np.dtype([("w0", "<u8"), ("w1", "<u8"), ("w2", "<u8"), ("w3", "<u4")])
_STARTS = np.arange(0, _CHUNK * _ROW, _ROW) + _POINT - 1  # the units digit of each row
_EXP_MIN = -4  # %g writes exponents -4 <= X < precision in the fixed form
# By X + 4 for fixed-form exponents X: the mantissa's fraction digits and their scale to 12.
_SPLIT = np.array([10.0 ** (8 - x) for x in range(_EXP_MIN, 9)])
_WIDEN = np.array([10.0 ** (4 + x) for x in range(_EXP_MIN, 9)])


for _table in (_POW10, _AT_LEAST, _AT_LEAST_NEXT, _DIGITS4, _DIGITS4_TRAILING, _DIGITS4_FIRST,
               _TRAILING_ZEROS4, _STARTS, _SPLIT, _WIDEN):  # fmt: skip
    _table.flags.writeable = False  # shared by every request thread


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

    float32 is vectorised (see the module docstring). float64 keeps the per-element path, which
    formats each element once: its `%.17g` needs the 17-digit rounding of a 53-bit value, more
    digits than a float64 product holds, so scaling in float64 cannot give the mantissa; an
    exact vectorised version would need error-free (double-double) products and int64 digits.
    """
    flat = np.ascontiguousarray(values).ravel()
    if flat.dtype.kind != "f" or flat.dtype.itemsize != 4:
        return np.array(_per_element_tokens(flat), dtype="S")
    flat = flat.astype(np.float32, copy=False)
    if flat.size <= _CHUNK:
        return _float32_bytes(flat)
    parts = [_float32_bytes(flat[i : i + _CHUNK]) for i in range(0, flat.size, _CHUNK)]
    return np.concatenate(parts)


def _times_power(x: np.ndarray, e: np.ndarray, low: int, high: int):
    """x * 10**e in float64 (`low`, `high`: the range of e): one IEEE rounding for |e| <= 22.

    Returns the product and a function that multiplies other values by 10**-e the same way.
    """
    if low >= 0 and high <= _MAX_STEP:
        power = _POW10.take(e)
        return x * power, lambda values: values / power
    if low >= -_MAX_STEP and high <= 0:
        power = _POW10.take(-e)
        return x / power, lambda values: values * power
    inverse = -e, -high, -low

    def back(values: np.ndarray) -> np.ndarray:
        return _times_power(values, *inverse)[0]

    while low or high:
        step = np.clip(e, -_MAX_STEP, _MAX_STEP)
        power = _POW10.take(np.abs(step))
        x = np.where(step >= 0, x * power, x / power)
        e = e - step
        low, high = int(e.min()), int(e.max())
    return x, back


def _mantissa(a: np.ndarray, kb: np.ndarray, precision: int, k_range: tuple[int, int]):
    """rint(a * 10**(precision-1-k)) with k = kb - _BIAS, the exponents of that scale, where
    the rounding is unsure (None if nowhere), and the inverse scaling (see `_times_power`)."""
    scale = (precision - 1 + _BIAS) - kb
    low, high = precision - 1 - k_range[1], precision - 1 - k_range[0]
    scaled, back = _times_power(a, scale, low, high)
    mantissa = np.rint(scaled)
    unsure = None
    if low < 0 or high > _EXACT_SCALE:
        unsure = np.rint(scaled * (1 - _NUDGE)) != np.rint(scaled * (1 + _NUDGE))
        unsure &= (scale < 0) | (scale > _EXACT_SCALE)
        if low < 0 and unsure.any():
            # After a division by 10**m, a quotient of exactly n + 1/2 is a true tie (which rint
            # rounds right) when (n + 1/2) * 10**m, exact for m <= 9, gives the value back.
            tie = scaled - np.floor(scaled) == 0.5
            tie &= (scale < 0) & (scale >= -9)
            tie &= scaled * _POW10.take(np.clip(-scale, 0, 9)) == a
            unsure &= ~tie
    return mantissa, scale, unsure, back


def _either(*masks: np.ndarray | None) -> np.ndarray | None:
    present = [m for m in masks if m is not None]
    return np.logical_or.reduce(present) if present else None


def _float32_bytes(flat: np.ndarray) -> np.ndarray:
    if not flat.size:
        return np.zeros(0, "S1")
    magnitude = np.abs(flat)
    # Zeros, NaN and infinities are patched in at the end; a stand-in 1 keeps the arithmetic calm.
    ordinary = None
    if not (magnitude.min() > 0 and magnitude.max() < np.inf):
        ordinary = np.isfinite(magnitude)
        ordinary &= magnitude != 0
        magnitude = np.where(ordinary, magnitude, np.float32(1))
    a = magnitude.astype(np.float64)

    # kb = k + _BIAS, k the decimal exponent: log10 is within one of it, the table makes it exact.
    kb = np.log10(magnitude)
    kb += _BIAS
    kb = kb.astype(np.intp)
    kb += magnitude >= _AT_LEAST_NEXT.take(kb)
    kb -= magnitude < _AT_LEAST.take(kb)
    k_range = int(kb.min()) - _BIAS, int(kb.max()) - _BIAS

    with np.errstate(over="ignore"):
        n6, scale6, unsure6, back = _mantissa(a, kb, 6, k_range)
        short = back(n6)  # the %.6g decimal, as the parser reads it
        round_trips = short.astype(np.float32) == magnitude
        far = None
        if k_range[0] < 5 - _MAX_STEP or k_range[1] > 5 + _MAX_STEP:  # several roundings
            far = (scale6 < -_MAX_STEP) | (scale6 > _MAX_STEP)
            below = (short * (1 - _NUDGE)).astype(np.float32)
            far &= below != (short * (1 + _NUDGE)).astype(np.float32)
    n9, _, unsure9, _ = _mantissa(a, kb, 9, k_range)
    if unsure9 is not None:
        unsure9 &= ~round_trips
    unsure = _either(unsure6, far, unsure9)

    short_count = int(np.count_nonzero(round_trips))
    if short_count == 0:
        mantissa = n9
    elif short_count == flat.size:
        mantissa = n6 * 1000
    else:
        mantissa = np.where(round_trips, n6 * 1000, n9)
    exponent = kb - _BIAS
    e_low, e_high = k_range
    carry = mantissa >= 1e9  # rounded up to the next power of ten
    if carry.any():
        mantissa = np.where(carry, 1e8, mantissa)
        exponent += carry
        e_high += 1
    fixed = None  # None: every element in the fixed form
    if e_low < _EXP_MIN or e_high >= 6:
        fixed = exponent >= _EXP_MIN
        fixed &= exponent < np.where(round_trips, 6, 9)
        if fixed.all():
            fixed = None
    tokens = _assemble(mantissa, exponent, fixed, np.signbit(flat))
    if ordinary is not None or unsure is not None:
        special = _either(None if ordinary is None else ~ordinary, unsure)
        at = np.flatnonzero(special)
        if at.size:
            tokens[at] = [_special_token(v) for v in flat[at].tolist()]
    return tokens


def _special_token(value: float) -> bytes:
    if value == 0:
        return b"-0.0" if math.copysign(1.0, value) < 0 else b"0.0"
    return exact_token(value, True).encode()


def _assemble(mantissa, exponent, fixed, negative) -> np.ndarray:
    """The tokens of nine-digit mantissas (float64) and decimal exponents, laid out in rows."""
    size = mantissa.size
    # Integer digits: exponent + 1 in the fixed form (a single `0` below 1), else one.
    point = exponent if fixed is None else np.where(fixed, exponent, 0)
    at = point - _EXP_MIN
    starts = _STARTS[:size] if size <= _STARTS.size else np.arange(size) * _ROW + _POINT - 1
    words = np.empty(size, _WORDS)  # its fields are unaligned: only ever assigned whole
    if point.max() < 0:  # all below 1: no integer digits to compute
        fraction = mantissa * _WIDEN.take(at)
        words["w0"] = _ZEROS
        w1 = _ZEROS_POINT
    else:
        split = _SPLIT.take(at)
        integer = np.floor(mantissa / split)  # exact: the quotient is far from the next integer
        fraction = mantissa - integer * split
        fraction *= _WIDEN.take(at)
        i_high = np.floor(integer / 1e4)
        i0 = np.floor(i_high / 1e4)
        w0 = _DIGITS4.take((i_high - i0 * 1e4).astype(np.intp))
        w0 <<= 32
        w0 |= _DIGITS4.take(i0.astype(np.intp))
        words["w0"] = w0
        w1 = _DIGITS4.take((integer - i_high * 1e4).astype(np.intp))
        w1 |= ord(".") << 32
        starts = starts - np.maximum(point, 0)

    # The 12 fraction digits in groups of four (float64 is exact here, and faster than int64).
    f0 = np.floor(fraction / 1e8)
    rest = fraction - f0 * 1e8
    f1 = np.floor(rest / 1e4)
    f2 = rest - f1 * 1e4
    # The last nonzero group and those after it lose their trailing zeros (table half 2).
    p0 = _DIGITS4_FIRST.take(((rest == 0) * 1e4 + f0).astype(np.intp))
    p1 = _DIGITS4_TRAILING.take(((f2 == 0) * 1e4 + f1).astype(np.intp))
    p2 = _DIGITS4_TRAILING.take(f2.astype(np.intp) + 10000)
    words["w1"] = w1 | p0 << 40
    p0 >>= 24
    p0 |= p1 << 8
    p0 |= p2 << 40
    words["w2"] = p0
    p2 >>= 24
    words["w3"] = p2
    rows = words.view(np.uint8).ravel()

    if negative.any():
        starts = starts - negative
        rows[starts[negative]] = ord("-")

    if fixed is not None:  # the exponent form: `e+XX` after the last fraction digit
        at = np.flatnonzero(~fixed)
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
