"""Start-up, the config-file poller and graceful shutdown of the embedded model server.

Example:
    python -m serving --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --base_path_map=/models=models
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from serving import errors
from serving.config import files as config_lib
from serving.model_servers import flags
from serving.model_servers.metrics import Metrics
from serving.model_servers.server_core import Core

log = logging.getLogger("serving")

# tensorflow_model_server returns -1 from main() when start-up fails.
STARTUP_FAILURE = 255


class ConfigPoller(threading.Thread):
    """Re-reads `--model_config_file` every N seconds and applies it; errors are only logged.

    A file whose parsed config has not changed since the last time it was applied is skipped.
    TF Serving re-applies it anyway, which is a no-op for the file alone; skipping it here also
    keeps a poll that read the file just before a rollout tool rewrote it (and reloaded over
    gRPC) from re-applying the stale labels afterwards.

    A reload waits at most `timeout` seconds for its new models (TF Serving waits until they
    are available, for ever for a missing base path); loads still running then go on.
    """

    def __init__(
        self, core: Core, path: str, seconds: float, applied=None, timeout: float | None = None
    ):
        super().__init__(name="config-poller", daemon=True)
        self.core, self.path, self.seconds = core, path, seconds
        self.applied, self.timeout = applied, timeout
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.seconds):
            try:
                new_config = config_lib.read_model_server_config(self.path)
            except config_lib.ConfigError as error:
                log.error("Failed to read ModelServerConfig file: %s", error)
                continue
            if new_config == self.applied:
                continue
            try:
                self.core.apply_config(new_config, timeout=self.timeout)
                self.applied = new_config
            except errors.ServingError as error:
                log.error(
                    "PollFilesystemAndReloadConfig failed to ReloadConfig: %s", error.to_string()
                )


def _initial_config(options: flags.Options):
    if options.model_config_file:
        return config_lib.read_model_server_config(options.model_config_file)
    return config_lib.single_model_config(options.model_name, options.model_base_path)


def _http_limits(options: flags.Options):
    from serving.rest.connections import fit_connection_cap
    from serving.rest.http import HttpLimits

    return HttpLimits(
        max_body_bytes=options.rest_api_max_body_bytes,
        max_header_bytes=options.rest_api_max_header_bytes,
        max_url_bytes=options.rest_api_max_url_bytes,
        header_timeout_s=options.rest_api_header_timeout_seconds,
        body_timeout_s=options.rest_api_body_timeout_seconds,
        # Each connection is a file descriptor: RLIMIT_NOFILE is raised, or the cap lowered.
        max_connections=fit_connection_cap(options.rest_api_max_connections),
        idle_timeout_s=options.rest_api_idle_timeout_seconds,
        write_timeout_s=options.rest_api_write_timeout_seconds,
    )


def _batcher(options: flags.Options, metrics: Metrics):
    if not options.enable_batching:
        return None
    from serving.batching import scheduler as batching

    params = None
    if options.batching_parameters_file:
        params = config_lib.read_batching_parameters(options.batching_parameters_file)
        batching.validate(params)
    pool = (
        params.thread_pool_name.value
        if params is not None and params.HasField("thread_pool_name")
        else "model_server_batch_threads"
    )

    def on_batch(key, size, padded, queuing_s):
        metrics.queuing_latency.observe(queuing_s * 1e6, pool)
        metrics.batch_size.observe(padded, key[0], "predict")

    return batching.BatchScheduler(params, on_batch=on_batch)


def serve(options: flags.Options, stop: threading.Event | None = None) -> int:
    """Loads the initial models, opens the ports, and serves until `stop` is set.

    Args:
        options: the parsed flags.
        stop: set by SIGTERM/SIGINT (see `main`); setting it during start-up abandons the loads.

    Returns:
        The process exit status: 0 after a drain (or a stop during start-up), 255 when start-up
        fails.
    """
    stop = stop or threading.Event()
    from serving.core.log_collector import Limits
    from serving.core.manager import ModelManager
    from serving.core.server_request_logger import ServerRequestLogger
    from serving.model_servers import grpc_services
    from serving.model_servers.health import ModelHealth
    from serving.rest.handler import RestServer
    from serving.servables import memory
    from serving.servables.admission import Admission
    from serving.servables.predict import Predictor
    from serving.servables.saved_model import load_servable
    from serving.servables.warmup import Warmup

    # Before any tensor is allocated: TensorFlow reads this once, at its first allocation.
    memory.use_system_allocator()
    # The parts are built in dependency order: each is whole when the next one receives it.
    metrics = Metrics()
    monitoring = None
    if options.monitoring_config_file:
        monitoring = config_lib.read_monitoring_config(options.monitoring_config_file)
    # Read and checked before any model loads, so a bad file fails start-up at once.
    ssl_config = None
    if options.ssl_config_file:
        ssl_config = config_lib.read_ssl_config(options.ssl_config_file)
    initial = _initial_config(options)
    batcher = _batcher(options, metrics)
    predictor = Predictor(
        batcher=batcher,
        tensor_content=options.enable_serialization_as_tensor_content,
        method_check=options.enable_signature_method_name_check,
        runtime_latency=metrics.runtime_latency,
        admission=Admission(
            max_request_bytes=options.max_request_tensor_bytes,
            max_inflight_bytes=options.max_inflight_tensor_bytes,
            max_items=options.max_request_items,
        ),
    )
    warmup = None
    if options.enable_model_warmup:
        warmup = Warmup(
            predictor.predict_on,
            options.num_request_iterations_for_warmup,
            latency=metrics.model_warmup_latency,
        )
    tags = tuple(tag.strip() for tag in options.saved_model_tags.split(",") if tag.strip())
    session_config = config_lib.session_config(
        options.tensorflow_session_config_file,
        parallelism=options.tensorflow_session_parallelism,
        intra_op=options.tensorflow_intra_op_parallelism,
        inter_op=options.tensorflow_inter_op_parallelism,
    )
    manager = ModelManager(
        loader=metrics.measure_loads(
            lambda name, version, path: load_servable(
                name, version, path, tags=tags, session_config=session_config
            )
        ),
        warmup=warmup,
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        max_num_load_retries=options.max_num_load_retries,
        load_retry_interval_s=options.load_retry_interval_micros / 1e6,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        num_load_threads=options.num_load_threads,
        num_unload_threads=options.num_unload_threads,
    )
    metrics.version_state.watch(manager.version_states)
    request_logger = ServerRequestLogger(
        Limits(
            max_file_bytes=options.request_log_max_file_bytes,
            max_total_bytes=options.request_log_max_total_bytes,
            max_queued_bytes=options.request_log_max_queued_bytes,
        ),
        tags,
        on_outcome=metrics.request_log_count.inc,
    )
    core = Core(
        manager,
        predictor,
        metrics=metrics,
        base_path_map=options.base_path_map,
        reload_timeout_s=options.model_config_reload_timeout_seconds,
        request_logger=request_logger,
    )
    started = threading.Event()
    # A stop during start-up stops the manager, which ends the wait for the initial loads.
    threading.Thread(
        target=lambda: stop.wait() and not started.is_set() and manager.stop(),
        name="stop-during-start",
        daemon=True,
    ).start()
    try:
        core.apply_config(initial)
    except errors.ServingError as error:
        if stop.is_set():
            log.info("Stopped while loading the initial models")
            return 0
        print(f"Failed to start server. Error: {error.to_string()}", file=sys.stderr, flush=True)
        manager.stop()
        request_logger.close(0.0)
        return STARTUP_FAILURE
    started.set()

    # The loaded models and TensorFlow make a huge, long-lived object graph; freezing it keeps
    # the garbage collector's full passes (tens of ms) out of request latency. The heap trimmer
    # freezes again after later loads and unloads (see serving.servables.memory).
    memory.freeze_long_lived()
    trimmer = memory.HeapTrimmer()
    manager.subscribe(trimmer.refreeze)
    health_state = None
    if options.enable_grpc_healthcheck_service:
        health_state = ModelHealth(manager)
        manager.subscribe(health_state.on_state)
    try:
        grpc_server = grpc_services.make_server(
            core,
            health_state,
            host=options.host,
            port=options.port,
            max_threads=options.grpc_max_threads,
            ssl_config=ssl_config,
            socket_path=options.grpc_socket_path,
            channel_arguments=options.grpc_channel_arguments,
            max_receive_message_length=grpc_services.receive_limit(
                options.max_request_tensor_bytes
            ),
        )
        rest_server = None
        if options.rest_api_port:
            rest_server = RestServer(
                core,
                options.host,
                options.rest_api_port,
                timeout_ms=options.rest_api_timeout_in_ms,
                monitoring_path=config_lib.prometheus_path(monitoring),
                num_threads=options.rest_api_num_threads,
                limits=_http_limits(options),
                ssl_config=ssl_config,
                json_layout=options.rest_api_json_layout,
            )
    except OSError as error:
        print(f"Failed to start server. Error: {error}", file=sys.stderr, flush=True)
        manager.stop()
        return STARTUP_FAILURE

    grpc_server.start()
    # Freed memory goes back to the OS after large requests (see serving.servables.memory).
    trimmer.start()
    if health_state is not None:
        health_state.start()
    if options.port:
        log.info("Running gRPC ModelServer at %s:%d ...", options.host, options.port)
    if options.grpc_socket_path:
        log.info("Running gRPC ModelServer at UNIX socket %s ...", options.grpc_socket_path)
    if rest_server is not None:
        rest_server.start()
        log.info("Exporting HTTP/REST API at:%s:%d ...", options.host, rest_server.port)
    poller = None
    if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
        poller = ConfigPoller(
            core,
            options.model_config_file,
            options.model_config_file_poll_wait_seconds,
            applied=initial,
            timeout=options.model_config_reload_timeout_seconds,
        )
        poller.start()

    stop.wait()
    stopping = time.monotonic()
    _drain(options.drain_seconds, grpc_server, rest_server, poller, health_state)
    # The requests answered in the drain are queued by now; their records get the time left.
    request_logger.close(max(options.drain_seconds - (time.monotonic() - stopping), 1.0))
    trimmer.stop()
    if batcher is not None:
        batcher.close()
    # Unloading waits for handles in flight and for loads under way; neither may hold the
    # process past the drain deadline (the caller exits at once after this returns).
    unloader = threading.Thread(target=manager.stop, name="unload", daemon=True)
    unloader.start()
    unloader.join(max(options.drain_seconds - (time.monotonic() - stopping), 1.0))
    log.info("Server stopped")
    return 0


def _drain(seconds: float, grpc_server, rest_server, poller, health_state) -> None:
    """No new connections or RPCs; those in flight get `seconds` to finish on both ports."""
    log.info("Shutting down: requests in flight get up to %g s", seconds)
    started = time.monotonic()
    if poller is not None:
        poller.stopped.set()
    if health_state is not None:
        health_state.shutdown()
    # gRPC refuses new RPCs at once and cancels the ones still running at the deadline; REST
    # stops accepting at once, drains, then closes what is left. Both run at the same time.
    done = grpc_server.stop(seconds)
    if rest_server is not None:
        rest_server.shutdown(seconds)
    done.wait(max(seconds - (time.monotonic() - started), 0) + 1.0)
