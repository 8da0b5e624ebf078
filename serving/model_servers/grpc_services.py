"""gRPC front end: TF Serving's PredictionService and ModelService, plus grpc.health.v1."""

from __future__ import annotations

import functools
import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving import errors

log = logging.getLogger("serving")

# TF Serving accepts messages up to 2 GiB both ways; grpcio's server default is 4 MiB.
MAX_MESSAGE_BYTES = 2**31 - 1


def _rpc(method):
    """Turns a ServingError into the gRPC status, with TF Serving's truncation of long texts."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except errors.ServingError as error:
            context.abort(error.code, errors.truncate(error.message))

    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` backed by the shared core."""

    def __init__(self, core):
        self.core = core

    @_rpc
    def Predict(self, request, context):  # noqa: N802 (gRPC method names)
        return self.core.predict(request)

    @_rpc
    def GetModelMetadata(self, request, context):  # noqa: N802
        return self.core.get_model_metadata(request)

    @_rpc
    def Classify(self, request, context):  # noqa: N802
        return self.core.classify(request)

    @_rpc
    def Regress(self, request, context):  # noqa: N802
        return self.core.regress(request)

    @_rpc
    def MultiInference(self, request, context):  # noqa: N802
        return self.core.multi_inference(request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: version status and config reload."""

    def __init__(self, core):
        self.core = core

    @_rpc
    def GetModelStatus(self, request, context):  # noqa: N802
        return self.core.get_model_status(request)

    @_rpc
    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        return self.core.reload_config(request)


def make_server(core, health_state, *, host: str, port: int, max_threads: int, ssl_config=None):
    """Builds the gRPC server with both TF Serving services (and health) on one port.

    Args:
        core: The server core the services call.
        health_state: The `grpc.health.v1` state, or None for no health service.
        host: Address to bind.
        port: Port to bind.
        max_threads: Threads serving RPCs (`--grpc_max_threads`).
        ssl_config: A checked `SSLConfig` (`config.files.read_ssl_config`) for TLS, or None
            for plaintext.

    Raises:
        OSError: the port cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    if health_state is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    address = f"{host}:{port}"
    try:
        if ssl_config is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, server_credentials(ssl_config))
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"cannot bind the gRPC port {address} (in use?)")
    return server


def server_credentials(ssl_config) -> grpc.ServerCredentials:
    """TLS credentials as TF Serving builds them (`BuildServerCredentialsFromSSLConfigFile`).

    client_verify true is REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY against custom_ca;
    false requests no client certificate at all, even when custom_ca is set.
    """
    key_and_cert = (ssl_config.server_key.encode(), ssl_config.server_cert.encode())
    log.info(
        "gRPC uses TLS%s",
        " and requires client certificates signed by custom_ca" if ssl_config.client_verify else "",
    )
    return grpc.ssl_server_credentials(
        [key_and_cert],
        root_certificates=ssl_config.custom_ca.encode() or None,
        require_client_auth=ssl_config.client_verify,
    )
