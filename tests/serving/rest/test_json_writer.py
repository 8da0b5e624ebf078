"""The vectorised REST response writer against the per-element one it replaced, byte for byte.

`benchmarks.json_reference` holds the previous implementation unchanged; every comparison here
is exact string equality. The inputs come from fixed seeds, so a failure repeats.
"""

import itertools

import numpy as np
import pytest

from benchmarks import json_reference as reference
from serving.errors import ServingError
from serving.rest.json import floats
from serving.rest.json.response import predict_response_json
from serving.rest.json.tensor import COLUMNAR, ROW
from serving.rest.json.text import decimal_tokens, render_array, render_rows

SPECIAL32 = [
    0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 0.1, -0.1, 1 / 3, 2 / 3, 0.5, 1.0, 2.0, 10.0,
    100000.5, 999999.5, 9999995.0, 99999.95, 0.999999, 0.9999995, 1e-5, 1e-4, 1e-7, 1e-38,
    1e16, 1e20, 1e38, 123456789.0, 9000000.0, 16777216.0, 16777217.0, 1.001953125, 1.953125,
    0.005859375, 1234565.0, 3.4028235e38, -3.4028235e38, 1.17549435e-38, 1.4e-45, 2.8e-45,
    1.0000001, 0.99999994, 65504.0, 255.0, 127.5, 0.00390625,
]  # fmt: skip


def _neighbours(values: np.ndarray, reach: int) -> np.ndarray:
    """Each finite float32 and the `reach` float32s on each side of it, with its sign."""
    bits = values[np.isfinite(values)].astype(np.float32).view(np.uint32).astype(np.int64)
    magnitude, sign = bits & 0x7FFFFFFF, bits & 0x80000000
    around = magnitude[:, None] + np.arange(-reach, reach + 1)
    keep = (around >= 0) & (around < 0x7F800000)  # nonnegative and finite
    return (around | sign[:, None])[keep].astype(np.uint32).view(np.float32)


def _decimals(rng: np.random.Generator, digits: int, count: int) -> np.ndarray:
    """float32s nearest to decimals of `digits` significant digits ending in 5 (ties at one
    digit fewer), of either sign, over the whole float32 exponent range."""
    mantissas = rng.integers(10 ** (digits - 2), 10 ** (digits - 1), count) * 10 + 5
    mantissas *= rng.choice([-1, 1], count)
    exponents = rng.integers(-46 - digits, 39 - digits, count)
    texts = [f"{m}e{e}" for m, e in zip(mantissas.tolist(), exponents.tolist(), strict=True)]
    with np.errstate(over="ignore"):
        return np.array(texts, dtype=np.float64).astype(np.float32)


def _float32_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240601)
    powers = np.array([10.0**j for j in range(-45, 39)] + [2.0**j for j in range(-149, 128)])
    with np.errstate(over="ignore"):
        powers = powers.astype(np.float32)
    odd = rng.integers(0, 2**23, 60_000) * 2 + 1
    dyadic = np.ldexp(odd.astype(np.float64), rng.integers(-40, 8, odd.size)).astype(np.float32)
    return {
        "special": np.array(SPECIAL32, np.float32),
        "special neighbours": _neighbours(np.array(SPECIAL32, np.float32), 3),
        "bit patterns": rng.integers(0, 2**32, 300_000, dtype=np.uint64)
        .astype(np.uint32)
        .view(np.float32),
        "powers of ten and two, neighbours": _neighbours(powers, 4),
        "near 6-digit ties": _neighbours(_decimals(rng, 7, 30_000), 2),
        "near 9-digit ties": _neighbours(_decimals(rng, 10, 30_000), 2),
        "short decimals": _decimals(rng, 3, 20_000) / np.float32(5),
        "dyadic (exact ties)": dyadic,
        "mask": rng.random(40_000, dtype=np.float32),
        "logits": rng.normal(0, 8, 40_000).astype(np.float32),
        "pixels": rng.integers(0, 256, 20_000).astype(np.float32)
        / np.float32(2 ** rng.integers(0, 9)),
        "tiny": rng.random(20_000, dtype=np.float32) * np.float32(1e-4),
        "huge": (rng.random(20_000) * 1e38).astype(np.float32),
        "subnormal": rng.integers(1, 2**23, 20_000).astype(np.uint32).view(np.float32),
    }


FLOAT32_CASES = _float32_cases()


@pytest.mark.parametrize("case", FLOAT32_CASES)
def test_float32_tokens_equal_the_per_element_writer(case):
    values = FLOAT32_CASES[case]
    got, want = decimal_tokens(values), reference.decimal_tokens(values)
    bad = [(values[i], g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{len(bad)} of {values.size} differ, e.g. {bad[:5]}"


def _count_fallbacks(monkeypatch) -> list[float]:
    """Records the values left to `exact_token` (unsure roundings, NaN, infinities)."""
    fallbacks: list[float] = []
    exact_token = floats.exact_token

    def counted(value: float, single: bool) -> str:
        fallbacks.append(value)
        return exact_token(value, single)

    monkeypatch.setattr(floats, "exact_token", counted)
    return fallbacks


def test_float32_cases_are_many_and_hit_every_path(monkeypatch):
    values = np.concatenate(list(FLOAT32_CASES.values()))
    assert values.size > 800_000
    fallbacks = _count_fallbacks(monkeypatch)
    tokens = decimal_tokens(values)
    finite = np.isfinite(fallbacks)
    # Near-ties after an inexact product are coincidences: a few in these cases.
    assert 1 <= finite.sum() < 100 and (~finite).sum() > 1000
    short = sum(1 for t in tokens if len(t.lstrip("-").split("e")[0].replace(".", "")) <= 7)
    assert short > 50_000  # plenty of %.6g answers as well as %.9g ones
    assert {"NaN", "Infinity", "-Infinity", "0.0", "-0.0"} <= set(tokens)


@pytest.mark.parametrize("case", ["bit patterns", "near 6-digit ties", "dyadic (exact ties)"])
def test_unsure_elements_fall_back_exactly(monkeypatch, case):
    """A wide margin makes many roundings unsure: the per-element answers patched in agree."""
    monkeypatch.setattr(floats, "_NUDGE", 1e-7)
    fallbacks = _count_fallbacks(monkeypatch)
    values = FLOAT32_CASES[case]
    assert decimal_tokens(values) == reference.decimal_tokens(values)
    assert np.isfinite(fallbacks).sum() > 500


def test_exact_token_is_the_rule():
    for value, text in [(0.1, "0.1"), (1 / 3, "0.333333343"), (100000.5, "100000.5"),
                        (16777217.0, "16777216.0"), (1e-45, "1.4013e-45")]:  # fmt: skip
        assert floats.exact_token(float(np.float32(value)), True) == text
    assert floats.exact_token(1 / 3, False) == "0.33333333333333331"


def test_float64_tokens_equal_the_per_element_writer():
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.integers(0, 2**64, 50_000, dtype=np.uint64).view(np.float64),
            rng.normal(0, 100, 20_000),
            np.round(rng.normal(0, 100, 20_000), 3),
            np.array(SPECIAL32, np.float64),
            np.array(SPECIAL32, np.float32).astype(np.float64),
        ]
    )
    assert decimal_tokens(values) == reference.decimal_tokens(values)


def test_empty_and_shaped_inputs():
    assert decimal_tokens(np.zeros(0, np.float32)) == []
    grid = np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2]  # not contiguous
    assert decimal_tokens(grid) == reference.decimal_tokens(grid)


# -- layouts ---------------------------------------------------------------------------------


SHAPES = [(), (1,), (3,), (0,), (2, 0), (0, 3), (1, 1), (4, 1), (1, 5), (2, 3), (3, 1, 1),
          (1, 4, 4, 1), (2, 3, 0, 2), (2, 1, 3, 1), (2, 2, 2, 2, 2), (1, 1, 1, 1)]  # fmt: skip


# The second group crosses the chunks (4000 elements) that byte-array tokens are joined in.
SHAPES += [(4001,), (2, 4001), (3, 50, 40, 1), (1, 90, 90, 1), (7, 1, 1000), (8000, 1)]


def _token_kinds(count: int):
    """The same tokens as str, as bytes, and as an `S` array (what `decimal_bytes` returns)."""
    tokens = [f"{i * 7 % 1000}.5" if i % 3 else f"-{i}e-05" for i in range(count)]
    binary = [t.encode() for t in tokens]
    return tokens, {"str": tokens, "bytes": binary, "S array": np.array(binary, dtype="S16")}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("single_line", [True, False])
def test_render_array_layouts(shape, single_line):
    tokens, kinds = _token_kinds(int(np.prod(shape)))
    for depth in (0, 1, 3):
        want = reference.render_array(tokens, shape, depth, single_line)
        for kind, given in kinds.items():
            assert render_array(given, shape, depth, single_line) == want, kind


@pytest.mark.parametrize("shape", [s for s in SHAPES if s], ids=str)
def test_render_rows_layouts(shape):
    tokens, kinds = _token_kinds(int(np.prod(shape)))
    step = int(np.prod(shape[1:]))
    want = [
        reference.render_array(tokens[i * step : (i + 1) * step], shape[1:], 3, True)
        for i in range(shape[0])
    ]
    for kind, given in kinds.items():
        assert render_rows(given, shape, 3) == want, kind


def _array(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    if kind == "float32":
        pool = np.concatenate([FLOAT32_CASES["special"], FLOAT32_CASES["mask"][:50]])
        return rng.choice(pool, size).astype(np.float32).reshape(shape)
    if kind == "float64":
        return rng.normal(0, 10, size).round(rng.integers(0, 9)).reshape(shape)
    if kind == "int32":
        return rng.integers(-(2**31), 2**31, size).astype(np.int32).reshape(shape)
    if kind == "uint8":
        return rng.integers(0, 256, size).astype(np.uint8).reshape(shape)
    if kind == "bool":
        return (rng.random(size) < 0.5).reshape(shape)
    words = [b"", b"hi", b'q"uote\\', b"caf\xc3\xa9", b"\xff\x00\n", b", ]["]
    return np.array([words[i] for i in rng.integers(0, len(words), size)], object).reshape(shape)


KINDS = ["float32", "float64", "int32", "uint8", "bool", "bytes"]


def _outputs(rng: np.random.Generator, count: int, batch: int | None) -> dict[str, np.ndarray]:
    outputs = {}
    for j in range(count):
        rank = int(rng.integers(0 if batch is None else 1, 5))
        shape = tuple(int(d) for d in rng.choice([0, 1, 1, 2, 3], rank))
        if batch is not None:
            shape = (batch, *shape[1:])
        kind = KINDS[rng.integers(len(KINDS))]
        name = f"out{j}" + ("_bytes" if kind == "bytes" and rng.random() < 0.5 else "")
        outputs[name] = _array(rng, kind, shape)
    return outputs


def _both(outputs, request_format):
    """(new, reference) text, or the error message each raised."""
    results = []
    for writer in (predict_response_json, reference.predict_response_json):
        try:
            results.append(writer(outputs, request_format))
        except ServingError as error:
            results.append(("error", error.code, error.message))
    return results


def test_responses_equal_the_per_element_writer():
    rng = np.random.default_rng(11)
    compared = 0
    for count, request_format, _ in itertools.product((1, 2, 3), (ROW, COLUMNAR), range(60)):
        batch = None if request_format == COLUMNAR else int(rng.choice([0, 1, 2, 3]))
        outputs = _outputs(rng, count, batch)
        new, old = _both(outputs, request_format)
        assert new == old, (outputs, request_format)
        compared += 1
    # Mismatched batches, scalars in row format and half floats fail the same way.
    failing = [
        {"a": np.ones(2, np.float32), "b": np.ones(3)},
        {"s": np.float32(1), "y": np.ones(2, np.float32)},
        {"h": np.ones((2, 2), np.float16)},
        {"h": np.ones((0, 2), np.float16)},
    ]
    for outputs in failing:
        for request_format in (ROW, COLUMNAR):
            new, old = _both(outputs, request_format)
            assert new == old
    assert compared == 360


@pytest.mark.parametrize("shape", [(1, 128, 128, 1), (1, 32, 32, 3), (3, 8, 1), (5,), (2, 1)])
def test_model_sized_responses(shape):
    rng = np.random.default_rng(3)
    mask = rng.random(shape, dtype=np.float32)
    logits = (rng.normal(0, 4, shape)).astype(np.float32)
    for outputs in ({"mask": mask}, {"mask": mask, "mask_logits": logits}):
        for request_format in (ROW, COLUMNAR):
            new, old = _both(outputs, request_format)
            assert new == old
