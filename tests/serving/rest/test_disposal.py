"""Parsed documents handed to `serving.rest.disposal` are freed on its thread, not the caller's."""

import json
import threading

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.rest import disposal
from serving.rest.json.tensor import parse_predict_request


class _Tracked:
    """Records the thread it is freed on."""

    def __init__(self, freed: list, done: threading.Event):
        self.freed, self.done = freed, done

    def __del__(self):
        self.freed.append(threading.current_thread().name)
        self.done.set()


def test_values_are_freed_on_the_disposal_thread():
    """A `dispose` that freed the value in place would free it on the caller's thread."""
    freed: list[str] = []
    for _ in range(200):
        done = threading.Event()
        disposal.dispose([_Tracked(freed, done)])
        assert done.wait(10)
    assert set(freed) == {"rest-dispose"}


def _inputs(name):
    return {"x": meta_graph_pb2.TensorInfo(dtype=types_pb2.DT_FLOAT)}


def test_big_documents_are_handed_over_small_ones_are_not(monkeypatch):
    handed = []

    def record(holder):
        handed.append(type(holder[0]).__name__)
        disposal_dispose(holder)

    disposal_dispose = disposal.dispose
    monkeypatch.setattr(disposal, "dispose", record)
    small = json.dumps({"instances": [1.0, 2.0]}).encode()
    big = json.dumps({"instances": [0.5] * 20_000}).encode()
    assert len(small) < disposal.MIN_BODY_BYTES <= len(big)
    _, _, arrays = parse_predict_request(small, _inputs)
    assert handed == [] and arrays["x"].tolist() == [1.0, 2.0]
    _, _, arrays = parse_predict_request(big, _inputs)
    assert handed == ["dict"] and arrays["x"].shape == (20_000,)
