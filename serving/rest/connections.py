"""The REST port's connection slots: counted from the TCP accept, TLS handshakes included,
and sized to the file descriptors the process may open.

Example:
    cap = fit_connection_cap(2048)   # raises RLIMIT_NOFILE's soft limit if it must
    slots = Slots(cap)
"""

from __future__ import annotations

import logging
import resource
from asyncio.sslproto import SSLProtocol

log = logging.getLogger("serving")

# File descriptors kept for everything but REST connections: model files, gRPC, logs, TF.
RESERVED_FDS = 256


def fit_connection_cap(requested: int) -> int:
    """The REST connection cap this process can hold, raising RLIMIT_NOFILE's soft limit.

    Each connection is a file descriptor. When the soft limit is too low for `requested` plus
    `RESERVED_FDS`, it is raised to the hard limit; when even that is too low, the cap is
    lowered to fit, with one warning line naming the flag and the limit.
    """
    needed = requested + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning(
                "REST: could not raise RLIMIT_NOFILE from %d to %d: %s", soft, target, error
            )
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return requested
    reserve = min(RESERVED_FDS, soft // 2)
    cap = max(1, soft - reserve)
    log.warning(
        "REST: --rest_api_max_connections=%d needs about %d file descriptors, but "
        "RLIMIT_NOFILE allows %d (hard limit %s): serving at most %d REST connections. "
        "Raise the limit (ulimit -n) to allow more.",
        requested,
        needed,
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        cap,
    )
    return cap


class Slots:
    """The port's open connections, counted from the TCP accept, against the cap."""

    def __init__(self, cap: int):
        self.cap, self.open = cap, 0

    def take(self) -> bool:
        if self.open >= self.cap:
            return False
        self.open += 1
        return True

    def give(self) -> None:
        self.open -= 1


class CountedTLS(SSLProtocol):
    """asyncio's server-side TLS layer holding a slot from accept, so handshakes count too."""

    def __init__(self, slots: Slots, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots, self._holds_slot = slots, False

    def connection_made(self, transport) -> None:
        if not self._slots.take():
            # No plain-text 503 can be read by a TLS client, and a handshake costs CPU.
            transport.abort()
            return
        self._holds_slot = True
        super().connection_made(transport)

    def connection_lost(self, exc) -> None:
        if not self._holds_slot:
            return  # refused: the TLS layer never started
        self._holds_slot = False
        self._slots.give()
        super().connection_lost(exc)
