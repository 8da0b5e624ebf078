"""The one status map: TF Serving's HTTP status per gRPC code, and the code read back from REST.

The expected values are written out from TF Serving's `ToHTTPStatusCode`
(`model_servers/http_server.cc`, as quoted in the project's TF Serving reference), keyed by the
gRPC wire number of each code, so a wrong entry in `common.status` cannot also be the answer.
"""

import grpc
import pytest

from common.status import code_for_http_status, http_status

# gRPC wire number -> HTTP status TF Serving answers with (the numbers are gRPC's, not ours).
TF_SERVING_HTTP = {
    0: 200,  # OK
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_each_grpc_code_maps_as_tf_serving_does(code):
    number = code.value[0]
    assert http_status(code.name) == TF_SERVING_HTTP[number]


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_a_status_reads_back_as_a_code_with_that_status(code):
    status = TF_SERVING_HTTP[code.value[0]]
    back = code_for_http_status(status)
    assert back in grpc.StatusCode.__members__
    assert TF_SERVING_HTTP[grpc.StatusCode[back].value[0]] == status


def test_shared_statuses_read_back_as_the_commonest_code():
    assert code_for_http_status(400) == "INVALID_ARGUMENT"
    assert code_for_http_status(409) == "ABORTED"
    assert code_for_http_status(500) == "INTERNAL"
    assert code_for_http_status(404) == "NOT_FOUND"
    # An HTTP status TF Serving never sends is no known failure.
    assert code_for_http_status(418) == "UNKNOWN"
