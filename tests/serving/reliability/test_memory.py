"""Memory that comes back: after a large request the server's RSS returns to where it was.

Before, a 300 MB Predict left the server 1.2 GB larger for good: TensorFlow's oneDNN allocator
kept its buffers in an arena that never shrinks, and glibc kept the rest of the freed memory.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.servables import memory
from serving.tensors import from_numpy
from tests.known_models import write_known_model
from tests.support import ServerProcess, wait_for

# Within this fraction of the RSS before the large request.
TOLERANCE = 0.10
# 100 MB of float32 in, 100 MB out: big enough that the old server kept 3 times that.
LARGE_ELEMENTS = 25_000_000


def server_rss(server) -> int:
    """VmRSS of the server process, in bytes."""
    with open(f"/proc/{server.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def predict(stub, x: np.ndarray):
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="half"))
    from_numpy(x, tensor_content=True, out=req.inputs["x"])
    return stub.Predict(req, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of its own, so that no other test's requests move its RSS."""
    root = tmp_path_factory.mktemp("memory")
    write_known_model(root / "half", 1)
    process = ServerProcess(
        "--model_name=half",
        f"--model_base_path={root / 'half'}",
        # The large request is 25 million items of x.
        "--max_request_items=100000000",
        log_path=root / "server.log",
    )
    with process:
        yield process


@pytest.mark.integration
def test_rss_returns_after_a_large_predict(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    # Prepare: the server warmed up and settled (the trimmer has had its first look).
    for _ in range(3):
        predict(stub, np.ones(16, np.float32))
    time.sleep(2 * memory.DEFAULT_INTERVAL_SECONDS)
    before = server_rss(server)
    # Send: 100 MB in, 100 MB out.
    response = predict(stub, np.full(LARGE_ELEMENTS, 2.0, np.float32))
    assert len(response.outputs["y"].float_val) == LARGE_ELEMENTS
    assert response.outputs["y"].float_val[-1] == 3.0
    del response
    # Verify: RSS comes back within 10% within a few trimmer rounds, and the server serves.
    limit = before * (1 + TOLERANCE)
    wait_for(
        lambda: server_rss(server) <= limit,
        timeout=15,
        message=f"server RSS back to {limit / 2**20:.0f} MiB (was {before / 2**20:.0f} MiB)",
    )
    assert predict(stub, np.zeros(2, np.float32)).outputs["y"].float_val == [2.0, 2.0]


def test_the_trimmer_gives_a_fragmented_heap_back():
    trimmer = memory.HeapTrimmer(threshold_bytes=64 * 2**20)
    assert trimmer.available  # glibc
    assert not trimmer.trim_if_grown()
    # 200 MB in 2 KB blocks (malloc's, not Python's small-object arenas), one in 64 kept:
    # every page stays mapped, mostly free, and free() alone gives none of it back.
    blocks = [bytes(2048) for _ in range(100_000)]
    kept = blocks[::64]
    del blocks
    grown = memory.rss_bytes()
    assert trimmer.trim_if_grown()
    assert grown - memory.rss_bytes() > 100 * 2**20
    # Nothing has grown since: the next round does nothing.
    assert not trimmer.trim_if_grown()
    assert len(kept) == 1563


class _Cycle:
    def __init__(self):
        self.me = self


def test_refreezing_collects_what_was_frozen_and_released():
    """An unloaded version's reference cycles, frozen while it served, are not kept for good."""
    import gc
    import weakref

    cycle = _Cycle()
    alive = weakref.ref(cycle)
    try:
        gc.freeze()
        del cycle
        gc.collect()
        assert alive() is not None  # frozen: out of the collector's reach
        trimmer = memory.HeapTrimmer(interval_seconds=0.05)
        trimmer.start()
        try:
            trimmer.refreeze("unet", 2, 0)
            wait_for(lambda: alive() is None, timeout=5, message="the cycle collected")
            # ... and the survivors frozen again.
            wait_for(lambda: gc.get_freeze_count() > 0, timeout=5, message="the heap frozen")
        finally:
            trimmer.stop()
    finally:
        gc.unfreeze()
