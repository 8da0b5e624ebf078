"""grpc.health.v1 kept in step with the models (TF Serving's health service, per model too)."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

# The service names TF Serving's own health service reports (`model_servers/server.cc`).
HEALTH_SERVICES = ("PredictionService", "ModelService")


class ModelHealth:
    """Keeps grpc.health.v1 in step with the models: a model is SERVING while a version is.

    The overall service ("") and TF Serving's two service names are SERVING once the port is open;
    each model name is SERVING exactly while at least one of its versions is AVAILABLE.
    """

    def __init__(self, manager):
        self.manager = manager
        self.servicer = health.HealthServicer(experimental_non_blocking=True)

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
