"""The one status map: TF Serving's HTTP status per gRPC code, and the code read back from REST."""

import grpc
import pytest

from common.status import HTTP_STATUS, code_for_http_status, http_status


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_every_grpc_code_has_an_http_status(code):
    expected = HTTP_STATUS.get(code.name, 500)
    assert http_status(code.name) == expected
    # Reading the status back gives a code with the same HTTP status (the commonest of them).
    assert http_status(code_for_http_status(expected)) == expected


def test_shared_statuses_read_back_as_the_commonest_code():
    assert code_for_http_status(400) == "INVALID_ARGUMENT"
    assert code_for_http_status(409) == "ABORTED"
    assert code_for_http_status(500) == "INTERNAL"
    assert code_for_http_status(404) == "NOT_FOUND"
    assert code_for_http_status(418) == "UNKNOWN"
    assert http_status("DATA_LOSS") == http_status("UNKNOWN") == 500
