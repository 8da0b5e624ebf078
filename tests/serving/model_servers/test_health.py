"""serving/model_servers/health.py over real gRPC: watches update, and ended ones leave nothing."""

import secrets
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.model_servers.health import ModelHealth

STATUS = health_pb2.HealthCheckResponse


class Models:
    """The two calls ModelHealth makes of the version manager, over a settable model list."""

    def __init__(self):
        self.available = {"half": [1], "late": []}

    def model_names(self):
        return list(self.available)

    def available_versions(self, name):
        return self.available.get(name, [])


@pytest.fixture()
def served():
    models = Models()
    health = ModelHealth(models)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    health.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield models, health, health_pb2_grpc.HealthStub(channel)
    channel.close()
    server.stop(None)


def _until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_watch_sees_its_model_become_serving(served):
    models, health, stub = served
    stream = stub.Watch(health_pb2.HealthCheckRequest(service="late"), timeout=30)
    assert next(stream).status == STATUS.NOT_SERVING
    models.available["late"] = [1]
    health.on_state("late", 1, 0)
    assert next(stream).status == STATUS.SERVING
    stream.cancel()


def test_ended_watches_of_client_chosen_names_leave_nothing_behind(served):
    _, health, stub = served
    before = health.servicer.watched()
    streams = []
    for _ in range(200):
        name = secrets.token_hex(5_000)  # 10 KB names a client chose
        stream = stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=30)
        assert next(stream).status == STATUS.SERVICE_UNKNOWN
        streams.append(stream)
    assert len(health.servicer.watched() - before) == 200
    for stream in streams:
        stream.cancel()
    # Without the servicer's cleanup each of the 200 names stays as a key for the server's life.
    _until(lambda: health.servicer.watched() == before)
    # Two watches of one name: the name stays while either is open.
    first = stub.Watch(health_pb2.HealthCheckRequest(service="half"), timeout=30)
    second = stub.Watch(health_pb2.HealthCheckRequest(service="half"), timeout=30)
    assert next(first).status == next(second).status == STATUS.SERVING
    first.cancel()
    time.sleep(0.2)
    assert "half" in health.servicer.watched()
    second.cancel()
    _until(lambda: "half" not in health.servicer.watched())
