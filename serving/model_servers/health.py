"""grpc.health.v1 kept in step with the models (TF Serving's health service, per model too)."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

# The service names TF Serving's own health service reports (`model_servers/server.cc`).
HEALTH_SERVICES = ("PredictionService", "ModelService")


class _Servicer(health.HealthServicer):
    """grpcio's health servicer, except that a Watch which ends leaves nothing behind.

    grpcio keeps an empty set of watchers under every service name ever watched, so a client
    watching names of its choosing (any length) would grow the server's memory for its life.
    """

    def Watch(self, request, context, send_response_callback=None):  # noqa: N802 (gRPC's name)
        answer = super().Watch(request, context, send_response_callback)
        # Runs after grpcio's own close callback, which removes this watcher from the set.
        context.add_callback(lambda: self._forget(request.service))
        return answer

    def _forget(self, service: str) -> None:
        with self._lock:
            if not self._send_response_callbacks.get(service, True):
                del self._send_response_callbacks[service]

    def watched(self) -> set[str]:
        """The service names with a Watch open."""
        with self._lock:
            return set(self._send_response_callbacks)


class ModelHealth:
    """Keeps grpc.health.v1 in step with the models: a model is SERVING while a version is.

    The overall service ("") and TF Serving's two service names are SERVING once the port is open;
    each model name is SERVING exactly while at least one of its versions is AVAILABLE.
    """

    def __init__(self, manager):
        self.manager = manager
        self.servicer = _Servicer(experimental_non_blocking=True)

    def start(self) -> None:
        for service in ("", *HEALTH_SERVICES):
            self.servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        for name in self.manager.model_names():
            self.on_state(name, 0, 0)

    def on_state(self, name: str, version: int, state: int) -> None:
        """Manager listener: recompute the model's health after any version changes state."""
        serving = bool(self.manager.available_versions(name))
        status = health_pb2.HealthCheckResponse
        self.servicer.set(name, status.SERVING if serving else status.NOT_SERVING)

    def shutdown(self) -> None:
        self.servicer.enter_graceful_shutdown()
