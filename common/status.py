"""gRPC status codes and TF Serving's HTTP statuses for them: the one map, both directions.

Codes are named as gRPC and absl name them ("INVALID_ARGUMENT"), so this module needs neither
grpcio nor TensorFlow.
"""

from __future__ import annotations

# TF Serving's `ToHTTPStatusCode` (`model_servers/http_server.cc`). Where several codes share an
# HTTP status, the first one listed is the code a REST answer with that status is read back as
# (400 also stands for FAILED_PRECONDITION and OUT_OF_RANGE, 409 for ALREADY_EXISTS).
HTTP_STATUS: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}
# Every other code (UNKNOWN, INTERNAL, DATA_LOSS) is an HTTP 500.
DEFAULT_HTTP_STATUS = 500

_CODE_FOR_HTTP: dict[int, str] = {}
for _code, _http in HTTP_STATUS.items():
    _CODE_FOR_HTTP.setdefault(_http, _code)
_CODE_FOR_HTTP[DEFAULT_HTTP_STATUS] = "INTERNAL"


def http_status(code: str) -> int:
    """The HTTP status TF Serving answers for a gRPC status code name."""
    return HTTP_STATUS.get(code, DEFAULT_HTTP_STATUS)


def code_for_http_status(status: int) -> str:
    """The gRPC status name a REST answer's HTTP status stands for ("UNKNOWN" if none does)."""
    return _CODE_FOR_HTTP.get(status, "UNKNOWN")
