"""gRPC front end: TF Serving's PredictionService and ModelService, plus grpc.health.v1."""

from __future__ import annotations

import functools
import logging
import os
import stat
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving import errors
from serving.model_servers import flags

log = logging.getLogger("serving")

# TF Serving accepts messages up to 2 GiB both ways; grpcio's server default is 4 MiB.
MAX_MESSAGE_BYTES = 2**31 - 1
# Room in a request for what surrounds its tensors' values (model spec, names, shapes, tags).
ENVELOPE_BYTES = 2**20
# The server's own channel arguments. A key given in --grpc_channel_arguments replaces ours: gRPC
# keeps the first value of a repeated key, so appending the user's after ours would not do.
DEFAULT_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
)


def receive_limit(max_request_tensor_bytes: int) -> int:
    """The largest request gRPC reads: `--max_request_tensor_bytes` and an envelope.

    A request's values never take fewer bytes decoded than on the wire, except varints of
    negative or large integers (up to 10 bytes for a 4-byte int32), so a message over this
    could only be refused after gRPC had read all of it. TF Serving reads up to 2 GiB.
    """
    return min(max_request_tensor_bytes + ENVELOPE_BYTES, MAX_MESSAGE_BYTES)


# sun_path holds 108 bytes, the last of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


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
        # Waits for the new models only until just before the deadline (see Core.reload_config).
        return self.core.reload_config(request, time_remaining=context.time_remaining())


def server_options(
    channel_arguments: str = "", max_receive_message_length: int = MAX_MESSAGE_BYTES
) -> list[tuple[str, int | str]]:
    """The channel arguments the gRPC server is built with: ours, then `--grpc_channel_arguments`.

    Args:
        channel_arguments: The flag's text (checked already by `flags.check_options`).
        max_receive_message_length: Our receive limit (`receive_limit`); the flag's own
            `grpc.max_receive_message_length` replaces it.
    """
    arguments = flags.parse_grpc_channel_arguments(channel_arguments)
    for argument in arguments:
        if argument.dropped:
            log.warning(
                "--grpc_channel_arguments: %s has a second '='; its value is %r and %r is "
                "dropped, as tensorflow_model_server does",
                argument.key,
                argument.value,
                argument.dropped,
            )
        if argument.key != argument.key.strip():
            log.warning(
                "--grpc_channel_arguments: the key %r has spaces around it; gRPC matches keys "
                "exactly and will ignore it",
                argument.key,
            )
    if arguments:
        log.info(
            "gRPC channel arguments: %s",
            ", ".join(f"{key}={value!r}" for key, value, _ in arguments),
        )
    given = {argument.key for argument in arguments}
    defaults = [
        (key, max_receive_message_length if key == "grpc.max_receive_message_length" else value)
        for key, value in DEFAULT_OPTIONS
    ]
    ours = [option for option in defaults if option[0] not in given]
    return ours + [(argument.key, argument.value) for argument in arguments]


def make_server(
    core,
    health_state,
    *,
    host: str,
    port: int,
    max_threads: int,
    ssl_config=None,
    socket_path: str = "",
    channel_arguments: str = "",
    max_receive_message_length: int = MAX_MESSAGE_BYTES,
):
    """Builds the gRPC server with both TF Serving services (and health) on a port and/or socket.

    Args:
        core: The server core the services call.
        health_state: The `grpc.health.v1` state, or None for no health service.
        host: Address to bind.
        port: Port to bind; 0 for none (then `socket_path` is the only listener).
        max_threads: Threads serving RPCs (`--grpc_max_threads`).
        ssl_config: A checked `SSLConfig` (`config.files.read_ssl_config`) for TLS, or None
            for plaintext. As in TF Serving, it secures the UNIX socket too.
        socket_path: A UNIX socket to listen on as well (`--grpc_socket_path`), or "". A stale
            socket file there is replaced; any other file is an error.
        channel_arguments: `--grpc_channel_arguments`, applied to every listener.
        max_receive_message_length: The largest request read (`receive_limit`), unless
            `channel_arguments` sets its own.

    Raises:
        OSError: the port or the socket cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
        options=server_options(channel_arguments, max_receive_message_length),
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    if health_state is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    credentials = None if ssl_config is None else server_credentials(ssl_config)
    if port:
        address = f"{host}:{port}"
        if not _bind(server, address, credentials):
            raise OSError(f"cannot bind the gRPC port {address} (in use?)")
    if socket_path and not _bind(server, f"unix:{socket_path}", credentials):
        raise OSError(
            f"cannot listen on the UNIX socket {socket_path}: {socket_problem(socket_path)}"
        )
    return server


def _bind(server, address: str, credentials) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:
        return 0


def socket_problem(path: str) -> str:
    """Why gRPC could not listen on the UNIX socket `path`, as far as the file system tells."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        return f"the path has {size} bytes, a UNIX socket path at most {MAX_SOCKET_PATH_BYTES}"
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"its folder {folder} does not exist"
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        return "a file that is not a socket is in the way (only a stale socket is replaced)"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable"
    return "gRPC could not bind it (its log line above says why)"


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
