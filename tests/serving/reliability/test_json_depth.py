"""JSON nested deeper than a tensor can be: a clear HTTP 400 at every depth, never a 500.

NumPy holds 64 dimensions (TensorFlow 254), and Python's JSON parser stops near its recursion
limit (about 1000 levels). Before, 65 to ~990 levels were an HTTP 500 from NumPy's ValueError.
"""

from __future__ import annotations

import http.client
import json

import pytest

pytestmark = pytest.mark.integration

TENSOR_TEXT = (
    "JSON Value nests lists {depth} levels deep; a tensor has at most 64 dimensions here "
    "(NumPy's limit)"
)
INSTANCES_TEXT = (
    "'instances' nests lists {depth} levels deep (the batch and {inner} in each instance); "
    "a tensor has at most 64 dimensions here (NumPy's limit)"
)
PARSER_TEXT = (
    "JSON Parse error: arrays and objects nest too deeply: this server parses up to about "
    "1000 levels, and a tensor has at most 64 dimensions"
)


def nested(depth: int) -> str:
    return "[" * depth + "1.0" + "]" * depth


def inputs(value: str) -> str:
    """A columnar predict body around JSON text (built as text: json.dumps would recurse)."""
    return '{"inputs": ' + value + "}"


@pytest.fixture(scope="module")
def post(known_server):
    def call(body: str, model: str = "half"):
        conn = http.client.HTTPConnection("127.0.0.1", known_server.rest_port, timeout=60)
        conn.request("POST", f"/v1/models/{model}:predict", body=body)
        response = conn.getresponse()
        status, payload = response.status, json.loads(response.read())
        conn.close()
        return status, payload

    return call


def test_sixty_four_levels_are_a_tensor(post):
    # 64 levels decode into a 64-dimensional tensor, which the session runs as it comes:
    # y = 0.5 * x + 2 keeps every level.
    status, body = post(inputs(nested(64)))
    assert status == 200
    value = body["outputs"]
    for _ in range(64):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == 2.5


# Up to 1,023 levels the parser (orjson) succeeds and the depth is named.
@pytest.mark.parametrize("depth", [65, 100, 254, 255, 500, 900, 1000])
def test_deeper_than_a_tensor_is_400_naming_the_depth(post, depth):
    assert post(inputs(nested(depth))) == (
        400,
        {"error": TENSOR_TEXT.format(depth=depth)},
    )


@pytest.mark.parametrize("depth", [65, 500])
def test_instances_count_the_batch_dimension(post, depth):
    assert post('{"instances": ' + nested(depth) + "}") == (
        400,
        {"error": INSTANCES_TEXT.format(depth=depth, inner=depth - 1)},
    )
    # Named instances: each row may hold 63 levels, since stacking adds the batch.
    status, body = post(
        '{"signature_name": "two_inputs", "instances": [{"a": ' + nested(64) + ', "b": 1.0}]}'
    )
    assert status == 400
    assert body["error"] == (
        "Failed to process element: 0 key: a of 'instances' list. Error: INVALID_ARGUMENT: "
        + INSTANCES_TEXT.format(depth=65, inner=64)
    )


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_deeper_than_the_parser_is_400_too(post, depth):
    assert post(inputs(nested(depth))) == (400, {"error": PARSER_TEXT})
    objects = '{"a": ' * depth + "1" + "}" * depth
    assert post(inputs(objects)) == (400, {"error": PARSER_TEXT})


def test_deep_objects_are_a_type_error_not_a_crash(post):
    objects = '{"a": ' * 500 + "1" + "}" * 500
    status, body = post(inputs('{"x": ' + objects + "}"))
    assert status == 400
    assert body["error"].startswith('JSON Value: {\n    "a": {\n        "a": {')


def test_the_server_still_serves_afterwards(post):
    post(inputs(nested(10_000)))
    assert post('{"instances": [1.0, 2.0]}') == (200, {"predictions": [2.5, 3.0]})
