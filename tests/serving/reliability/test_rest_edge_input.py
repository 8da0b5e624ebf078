"""Malformed numbers, versions, names and strings over REST: a 400 naming the problem, never a 500.

Each case is one request to the shared known-answer server (`half`: y = 0.5x + 2 with an
`echo_bytes` string signature; `triple` with labels). The answer must be a 400 whose JSON error
says what is wrong, written as valid UTF-8, with no Python exception text in it; then an ordinary
request must still be served. Numbers and strings are refused as rapidjson (TF Serving's parser)
refuses them: a number that does not fit a double, a UTF-16 surrogate escape without its pair.
"""

from __future__ import annotations

import http.client
import json

import pytest

pytestmark = pytest.mark.integration

BIG = "9" * 5000
TOO_BIG = "JSON Parse error: Number too big to be stored in double. at offset: {}"
SURROGATE = "JSON Parse error: The surrogate pair in string is invalid. at offset: {}"
# Words of Python exception texts that must never reach a client.
LEAKS = ("Error(", "Traceback", "sys.set_int_max_str_digits", "surrogates not allowed")


def _call(server, method: str, path: str, body: bytes | str | None = None) -> tuple[int, bytes]:
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _still_serves(server) -> None:
    status, body = _call(server, "POST", "/v1/models/half:predict", '{"instances": [2.0]}')
    assert (status, json.loads(body)) == (200, {"predictions": [3.0]})


def _refused(server, method, path, body=None) -> str:
    """The 400's error text, after checking it is clean UTF-8 JSON with no exception text."""
    status, raw = _call(server, method, path, body)
    error = json.loads(raw.decode("utf-8"))["error"]  # strict: no raw invalid bytes
    assert status == 400, (status, error[:300])
    assert not any(leak in error for leak in LEAKS), error[:300]
    _still_serves(server)
    return error


PREDICT = "/v1/models/half:predict"
NUMBER_CASES = [
    ("5000-digit-int", '{"instances": [@]}'.replace("@", BIG), 15),
    ("negative-5000-digit-int", '{"instances": [1.0, -@]}'.replace("@", BIG), 20),
    ("5000-digit-int-in-inputs", '{"inputs": [@]}'.replace("@", BIG), 12),
    (
        "5000-digit-int-as-string-input",
        '{"signature_name": "echo_bytes", "inputs": @}'.replace("@", BIG),
        43,
    ),
    ("5000-digit-int-in-object", '{"instances": [{"x": @}]}'.replace("@", BIG), 21),
    ("5000-digit-decimal", '{"instances": [@.5]}'.replace("@", BIG), 15),
    ("400-digit-int", '{"instances": [1@]}'.replace("@", ("0" * 400)), 15),
    ("exponent-999", '{"instances": [1e999]}', 15),
    ("negative-exponent-999", '{"instances": [2.0, -1.5E+999]}', 20),
    ("long-exponent", '{"instances": [1e99999999999999999999]}', 15),
    ("just-over-double-max", '{"instances": [1.8e308]}', 15),
    (
        "5000-digit-int-as-signature",
        '{"signature_name": @, "instances": [1]}'.replace("@", BIG),
        19,
    ),
]


@pytest.mark.parametrize(
    "body, offset", [c[1:] for c in NUMBER_CASES], ids=[c[0] for c in NUMBER_CASES]
)
def test_a_number_that_does_not_fit_a_double_is_400(known_server, body, offset):
    assert _refused(known_server, "POST", PREDICT, body) == TOO_BIG.format(offset)


def test_a_5000_digit_number_in_classify_and_regress_is_400(known_server):
    for verb, offset in (("classify", 20), ("regress", 20)):
        body = '{"examples": [{"x": @}]}'.replace("@", BIG)
        path = f"/v1/models/half:{verb}"
        assert _refused(known_server, "POST", path, body) == TOO_BIG.format(offset)
    body = '{"context": {"c": -@}, "examples": [{"x": 1}]}'.replace("@", BIG)
    error = _refused(known_server, "POST", "/v1/models/half:classify", body)
    assert error == TOO_BIG.format(18)


def test_numbers_that_fit_are_served(known_server):
    # The largest double, a 300-digit integer, underflow to zero and -0 are all numbers.
    body = '{"instances": [1.7976931348623157e308, 1%s, 1e-99999, -0, -0.0]}' % ("0" * 300)
    status, raw = _call(known_server, "POST", PREDICT, body)
    assert status == 200, raw
    assert json.loads(raw)["predictions"] == [float("inf"), float("inf"), 2.0, 2.0, 2.0]


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/models/half/versions/{BIG}",
        f"/v1/models/half/versions/{BIG}/metadata",
        "/v1/models/half/versions/9223372036854775808",
        "/v1/models/half/versions/99999999999999999999",
    ],
    ids=["5000-digits", "5000-digits-metadata", "int64-max-plus-1", "20-digits"],
)
def test_a_version_that_is_not_an_int64_is_400(known_server, path):
    version = path.split("/")[5]
    error = _refused(known_server, "GET", path)
    assert error == f"Failed to convert version: {version} to numeric."


def test_a_5000_digit_version_in_a_predict_path_is_400(known_server):
    path = f"/v1/models/half/versions/{BIG}:predict"
    error = _refused(known_server, "POST", path, '{"instances": [1.0]}')
    assert error == f"Failed to convert version: {BIG} to numeric."


def test_leading_zeros_in_a_version_are_still_its_number(known_server):
    # absl::SimpleAtoi reads "000…01" as 1, however many zeros come first.
    for zeros in (5, 5000):
        status, raw = _call(known_server, "GET", "/v1/models/half/versions/" + "0" * zeros + "1")
        assert status == 200, raw[:300]
        assert json.loads(raw)["model_version_status"][0]["version"] == "1"


SURROGATE_CASES = [
    ("high-in-string-input", '{"signature_name": "echo_bytes", "instances": ["\\ud800"]}', 48),
    ("low-in-string-input", '{"signature_name": "echo_bytes", "instances": ["ab\\udc00"]}', 50),
    ("high-then-letter", '{"signature_name": "echo_bytes", "instances": ["\\uD83D\\u0041"]}', 48),
    ("two-highs", '{"signature_name": "echo_bytes", "instances": ["\\ud800\\ud800"]}', 48),
    ("as-signature-name", '{"signature_name": "\\ud800", "instances": [1.0]}', 20),
    ("as-input-name", '{"instances": [{"\\udfff": 1.0}]}', 17),
    ("in-columnar-input-name", '{"signature_name": "two_inputs", "inputs": {"\\ud800": 1}}', 45),
    (
        "after-a-valid-pair",
        '{"signature_name": "echo_bytes", "instances": ["\\ud83d\\ude00\\udc00"]}',
        60,
    ),
]


@pytest.mark.parametrize(
    "body, offset", [c[1:] for c in SURROGATE_CASES], ids=[c[0] for c in SURROGATE_CASES]
)
def test_a_lone_surrogate_escape_is_400(known_server, body, offset):
    assert _refused(known_server, "POST", PREDICT, body) == SURROGATE.format(offset)


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_a_lone_surrogate_in_examples_is_400(known_server, verb):
    path = f"/v1/models/half:{verb}"
    for body, offset in (
        ('{"examples": [{"x": "\\ud800"}]}', 21),
        ('{"examples": [{"\\udc01": 1.0}]}', 16),
        ('{"signature_name": "\\udbff", "examples": [{"x": 1.0}]}', 20),
    ):
        assert _refused(known_server, "POST", path, body) == SURROGATE.format(offset)


def test_a_surrogate_pair_is_one_character(known_server):
    body = '{"signature_name": "echo_bytes", "instances": ["\\ud83d\\ude00"]}'
    status, raw = _call(known_server, "POST", PREDICT, body)
    assert status == 200, raw
    answer = json.loads(raw)["predictions"][0]
    assert answer["length"] == 4  # bytes: F0 9F 98 80
    assert answer["text_bytes"] == {"b64": "8J+YgA=="}


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_names_that_are_not_utf8_are_400_naming_the_bytes(known_server, verb):
    # Raw bytes in a string value are data (rapidjson passes them on), but a feature or a
    # signature name is text: it is refused, and the answer shows the bytes escaped.
    path = f"/v1/models/half:{verb}"
    error = _refused(known_server, "POST", path, b'{"examples": [{"x\xff": 1.0}]}')
    assert error == "Feature name is not valid UTF-8: 'x\\xff'"
    body = b'{"signature_name": "s\xc3", "examples": [{"x": 1.0}]}'
    error = _refused(known_server, "POST", path, body)
    assert error == "Signature name is not valid UTF-8: 's\\xc3'"


def test_a_predict_signature_name_that_is_not_utf8_is_named_escaped(known_server):
    body = b'{"signature_name": "\xff\xfe", "instances": [1.0]}'
    error = _refused(known_server, "POST", PREDICT, body)
    assert error == 'Serving signature name: "\\xff\\xfe" not found in signature def'


def test_string_data_with_invalid_utf8_and_nul_is_passed_on_as_bytes(known_server):
    body = b'{"signature_name": "echo_bytes", "instances": ["a\xff\\u0000b"]}'
    status, raw = _call(known_server, "POST", PREDICT, body)
    assert status == 200, raw
    assert json.loads(raw)["predictions"][0]["text_bytes"] == {"b64": "Yf8AYg=="}


@pytest.mark.parametrize(
    "path, what",
    [
        ("/v1/models/%ff%fe", "model name:%ff%fe"),
        ("/v1/models/a%ED%A0%80b/metadata", "model name:a%ED%A0%80b"),
        ("/v1/models/a%c3:predict", "model name:a%c3"),
        ("/v1/models/triple/labels/%80", "model version label:%80"),
    ],
    ids=["name", "encoded-surrogate", "truncated-sequence-predict", "label"],
)
def test_a_path_name_that_is_not_utf8_once_decoded_is_400(known_server, path, what):
    method, body = ("POST", '{"instances": [1.0]}') if path.endswith("predict") else ("GET", None)
    error = _refused(known_server, method, path, body)
    assert error == f"Failed to decode {what}: the %-decoded bytes are not UTF-8"


def test_names_that_are_text_but_unknown_stay_404(known_server):
    # NUL, a 5,000-character name and percent-encoded UTF-8 are text: no such model (404).
    for name, shown in (("a%00b", "a\x00b"), ("m" * 5000, "m" * 5000), ("caf%C3%A9", "café")):
        status, raw = _call(known_server, "GET", f"/v1/models/{name}")
        assert status == 404, raw[:200]
        assert json.loads(raw.decode("utf-8"))["error"].endswith(shown)
    _still_serves(known_server)
