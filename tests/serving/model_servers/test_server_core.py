"""serving/model_servers/server_core.py: a bug in a request answers INTERNAL without its text."""

import logging
import re

import grpc
import pytest
from tensorflow_serving.apis import predict_pb2

from serving.errors import ServingError
from serving.model_servers.server_core import Core


class BrokenManager:
    """A version manager with a bug: resolving a servable raises a plain Python exception whose
    text holds something a client must never see."""

    def model_names(self):
        return ["half"]

    def handle(self, name, **_):
        raise KeyError("/secret/path/on/the/server")


def test_a_bug_answers_internal_with_a_request_id_and_logs_the_traceback(caplog):
    core = Core(BrokenManager(), predictor=None)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    with caplog.at_level(logging.ERROR, logger="serving"), pytest.raises(ServingError) as caught:
        core.predict(request)
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert "/secret/path" not in caught.value.message
    match = re.fullmatch(
        r"Internal error: the server log has the details under request id ([0-9a-f]{16})",
        caught.value.message,
    )
    assert match, caught.value.message
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert len(logged) == 1 and "Predict" in logged[0].getMessage()
    assert logged[0].exc_info[0] is KeyError
    assert core.metrics.request_count.value("half", "INTERNAL") == 1
