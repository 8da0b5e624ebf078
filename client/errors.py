"""The one exception the client raises: a status code name, a message and the HTTP status."""

from __future__ import annotations

# Client-side input problems (an unreadable image, a wrong shape) that never reached a server.
BAD_INPUT = "BAD_INPUT"


class ClientError(Exception):
    """A failed call, from the server (gRPC/REST status) or from the client's own checks.

    Attributes:
        code: A gRPC status name ("UNAVAILABLE", "NOT_FOUND", "DEADLINE_EXCEEDED",
            "INVALID_ARGUMENT", ...) or "BAD_INPUT" for input the client rejected itself.
        message: The server's error text, or the client's.
        http_status: The HTTP status of a REST answer; None for gRPC and client-side errors.
    """

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(code, message, http_status)
        self.code = code
        self.message = message
        self.http_status = http_status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"ClientError({self.code!r}, {self.message!r}, http_status={self.http_status!r})"
