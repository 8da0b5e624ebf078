"""Errors with TF Serving's status codes and texts, shared by the gRPC and REST front ends."""

from __future__ import annotations

import logging
import secrets

import grpc

from common.status import http_status

log = logging.getLogger("serving")

# TF Serving cuts long status messages (`model_servers/grpc_status_util.cc`).
MAX_MESSAGE_CHARS = 1024
TRUNCATED_SUFFIX = "...TRUNCATED"

# absl status names as TF Serving prints them in `Status::ToString()` ("INVALID_ARGUMENT: ...").
CODE_NAMES = {code: code.name for code in grpc.StatusCode}


class ServingError(Exception):
    """A request or load failure carrying a gRPC status code and TF Serving's message text."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.code.name)

    def to_string(self) -> str:
        """`Status::ToString()`: the code name, a colon and the message."""
        return f"{CODE_NAMES[self.code]}: {self.message}"

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def truncate(message: str) -> str:
    """Shortens a status message the way TF Serving does before it goes on the wire."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[:MAX_MESSAGE_CHARS] + TRUNCATED_SUFFIX


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


def unknown(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNKNOWN, message)


def internal(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INTERNAL, message)


def logged_internal(what: str) -> ServingError:
    """INTERNAL for a bug: logs the exception being handled under a new request id and answers
    with that id alone, since an exception's text may hold internals (paths, values, code).

    Args:
        what: the request that failed, for the log line ("Predict", "REST POST /v1/...").
    """
    request_id = secrets.token_hex(8)
    log.error("request id %s: %s failed", request_id, what, exc_info=True)
    return internal(f"Internal error: the server log has the details under request id {request_id}")


def servable_not_found(name: str, version: int | None = None) -> ServingError:
    """`Servable not found for request: Latest(name)` or `Specific(name, v)`."""
    request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return not_found(f"Servable not found for request: {request}")
