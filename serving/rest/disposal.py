"""Big parsed request documents, freed on a thread of their own instead of the request's.

A 1 MB JSON body parses into about 50,000 Python floats in nested lists, and freeing them takes
about 0.5 ms (more on a busy machine) of the request's time if done where the request drops its
last reference, before the model runs. Handed here, they are freed on the `rest-dispose` thread,
mostly while the request's model run has released the GIL.
"""

from __future__ import annotations

import queue
import threading

# Bodies smaller than this free their document in place: a handoff costs more than it saves.
MIN_BODY_BYTES = 64 * 2**10

_queue: queue.SimpleQueue = queue.SimpleQueue()
_started = threading.Lock()
_thread: threading.Thread | None = None


def dispose(holder: list) -> None:
    """Takes the one value out of `holder` and drops it on the disposal thread.

    The caller must hold no other reference to the value (a local name would keep it alive,
    and it would be freed where that goes away); here it is never bound to a name either, as
    the drain thread may drop its reference before `put` returns. The thread starts on first
    use, so it inherits the signal mask of the server's threads.
    """
    global _thread
    if _thread is None:
        with _started:
            if _thread is None:
                _thread = threading.Thread(target=_drain, name="rest-dispose", daemon=True)
                _thread.start()
    _queue.put(holder.pop())


def _drain() -> None:
    while True:
        # The value is never bound to a name: it is freed as soon as `get` returns it.
        _queue.get()
