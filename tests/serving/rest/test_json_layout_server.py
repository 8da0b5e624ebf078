"""--rest_api_json_layout over real HTTP: compact answers against the TF Serving layout."""

from __future__ import annotations

import base64
import http.client
import json

import numpy as np
import pytest

from tests.known_models import write_known_model
from tests.support import ServerProcess

pytestmark = pytest.mark.integration

_CONSTANTS = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}


@pytest.fixture(scope="module")
def tf_serving_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    write_known_model(root / "half", 1, a=0.5, b=2.0)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={root / 'half'}",
        "--rest_api_json_layout=tf_serving",
        log_path=root / "server.log",
    )
    server.start()
    yield server
    assert server.stop() == 0, server.log()


def _post(server: ServerProcess, body: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        conn.request("POST", "/v1/models/half:predict", body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


REQUESTS = [
    {"instances": [1.0, 2.0, 5.0]},
    {"inputs": [0.1, 1e30, -3e-39, 7.0]},
    '{"instances": [NaN, Infinity, -Infinity, 0.3]}',
    {"signature_name": "two_inputs", "instances": [{"a": 0.1, "b": 2}, {"a": 3, "b": 1e-7}]},
    {"signature_name": "two_inputs", "inputs": {"a": [0.2, 1], "b": [1, 2]}},
    {"signature_name": "echo_bytes", "instances": [{"b64": base64.b64encode(b"\xff ok").decode()}]},
    {"signature_name": "matrix", "inputs": [[1, 2, 3], [0.1, 0.2, 0.3]]},
]


@pytest.mark.parametrize("request_body", REQUESTS, ids=range(len(REQUESTS)))
def test_both_layouts_answer_the_same_values(known_server, tf_serving_server, request_body):
    body = request_body if isinstance(request_body, str) else json.dumps(request_body)
    compact_status, compact = _post(known_server, body)
    pretty_status, pretty = _post(tf_serving_server, body)
    assert compact_status == pretty_status == 200, (compact, pretty)
    # Compact has no whitespace outside strings; TF Serving's PrettyWriter indents by four.
    assert b"\n" not in compact and b"\n    " in pretty
    parsed = [json.loads(text, parse_constant=_CONSTANTS.get) for text in (compact, pretty)]
    # float32 outputs: the two texts may differ in digits, never in the float32 they parse to.
    as_float32 = [_float32_leaves(doc) for doc in parsed]
    assert as_float32[0] == as_float32[1]


def _float32_leaves(value):
    """The document with every float replaced by its float32 bit pattern (NaN as "NaN")."""
    if isinstance(value, dict):
        return {key: _float32_leaves(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_float32_leaves(item) for item in value]
    if isinstance(value, float):
        return "NaN" if value != value else int(np.float32(value).view(np.uint32))
    return value


def test_tf_serving_layout_is_byte_for_byte(tf_serving_server):
    status, text = _post(tf_serving_server, json.dumps({"instances": [0.0, 1e30, 1 / 3]}))
    assert status == 200
    assert text == b'{\n    "predictions": [2.0, 5e+29, 2.16666675\n    ]\n}'


def test_compact_layout_is_the_default(known_server):
    status, text = _post(known_server, json.dumps({"instances": [0.0, 1e30, 1 / 3]}))
    assert (status, text) == (200, b'{"predictions":[2.0,5e+29,2.1666667]}')
