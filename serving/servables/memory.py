"""Memory that comes back: after a large request the server's RSS returns to where it was.

Two things keep freed memory from the operating system in a Python TensorFlow server:

1. TensorFlow's oneDNN build (the PyPI wheel on x86) allocates tensors through
   `MklCPUAllocator`, which serves every buffer of 4 KiB or more from a BFC arena that grows to
   the largest request ever seen and never shrinks (measurements:
   docs/benchmarks.md#measurements-behind-code-choices).
   `TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1` sends those buffers to malloc instead; the oneDNN
   kernels, and so the numbers, stay the same. TF Serving's own builds use plain malloc too.
2. glibc's malloc keeps freed memory in its heaps (the adaptive mmap threshold moves buffers up
   to 32 MiB onto the heap once one of that size was freed), and gRPC, protobuf and Python
   leave free holes there. `malloc_trim(0)` hands every free page back; TF Serving links
   tcmalloc, whose background thread releases free pages the same way.

`HeapTrimmer` is that background thread: once a second it reads the process's RSS and trims
when RSS has grown by more than a threshold since the last trim, so requests never wait for it.

The same thread keeps Python's garbage collector off the request path. A loaded TensorFlow
model is hundreds of thousands of long-lived objects; without care every full collection walks
them all, and a REST body of nested JSON lists allocates enough containers to start several
(measurements: docs/benchmarks.md#serving-and-the-fast-paths-make-bench). The server freezes
the heap once the initial models are loaded (`gc.freeze`); after a version loads or unloads
later, `refreeze` asks this thread to collect and freeze again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading

log = logging.getLogger("serving")

SYSTEM_ALLOCATOR_ENV = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"
# RSS growth since the last trim that makes the trimmer act: larger than a normal request's
# scratch memory, far smaller than what a large request leaves behind.
DEFAULT_THRESHOLD_BYTES = 64 * 2**20
DEFAULT_INTERVAL_SECONDS = 1.0
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def use_system_allocator() -> None:
    """Makes TensorFlow's oneDNN allocator use malloc for large buffers too.

    TensorFlow reads the variable once, at its first tensor allocation, so this must run
    before any model is loaded; an operator's own setting is kept.
    """
    os.environ.setdefault(SYSTEM_ALLOCATOR_ENV, "1")


def rss_bytes() -> int:
    """The resident set size of this process (`/proc/self/statm`, cheaper than `status`)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def freeze_long_lived() -> None:
    """Collects garbage once, then moves every surviving object out of the collector's reach.

    Objects frozen earlier and since released (an unloaded version's) are unfrozen first, so
    their reference cycles are collected rather than kept for good.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class HeapTrimmer(threading.Thread):
    """Gives malloc's free memory back to the OS after RSS has grown by `threshold_bytes`.

    Args:
        threshold_bytes: RSS growth since the last trim that triggers one.
        interval_seconds: how often RSS is read.
    """

    def __init__(
        self,
        threshold_bytes: int = DEFAULT_THRESHOLD_BYTES,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ):
        super().__init__(name="heap-trimmer", daemon=True)
        self.threshold_bytes = threshold_bytes
        self.interval_seconds = interval_seconds
        self.stopped = threading.Event()
        self._trim = _malloc_trim()
        self._baseline = rss_bytes()
        self._refreeze = threading.Event()

    @property
    def available(self) -> bool:
        """Whether this C library can trim (glibc can)."""
        return self._trim is not None

    def trim_if_grown(self) -> bool:
        """Trims if RSS grew by more than the threshold since the last trim; True if it did."""
        if self._trim is None:
            return False
        before = rss_bytes()
        # Growth counts from the lowest RSS seen since the last trim: memory that went back by
        # itself (large buffers are mmapped and unmapped) must not hide the next growth.
        self._baseline = min(self._baseline, before)
        if before - self._baseline <= self.threshold_bytes:
            return False
        self._trim(0)
        # Whatever stays resident (a model loaded since) is the new normal.
        self._baseline = rss_bytes()
        log.debug("malloc_trim: RSS %d -> %d MiB", before >> 20, self._baseline >> 20)
        return True

    def refreeze(self, *_state_change) -> None:
        """Asks for the heap to be collected and frozen again (a manager state listener)."""
        self._refreeze.set()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_seconds):
            if self._refreeze.is_set():
                self._refreeze.clear()
                freeze_long_lived()
            self.trim_if_grown()

    def stop(self) -> None:
        self.stopped.set()
