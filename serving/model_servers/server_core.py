"""The server's request handling, shared by the gRPC and REST front ends.

Every method takes and returns `tensorflow_serving.apis` messages and raises `ServingError` with TF
Serving's code and text, so both front ends only translate transport.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import time

from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import errors
from serving.config import files as config_lib
from serving.model_servers.metrics import UNKNOWN_MODEL, Metrics
from serving.servables import classifier, inference, multi_inference, predict, regressor

log = logging.getLogger("serving")

# A reload stops waiting this long (at most a tenth of its time) before the RPC's deadline, so
# its answer reaches the client in time. gRPC reports no deadline as about 9.2e18 s left.
RELOAD_ANSWER_MARGIN_S = 1.0
_NO_DEADLINE_S = 1e12
# Inside a measured request: the versions whose servables it held (for per-version latency).
_SERVED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("served", default=None)


def reload_wait(time_remaining: float | None, default: float | None) -> float | None:
    """How long a reload may wait for its models.

    Args:
        time_remaining: The RPC's time left (`context.time_remaining()`), or None.
        default: The wait when the caller set no deadline (`--model_config_reload_timeout_seconds`).
    """
    if (
        time_remaining is None
        or not math.isfinite(time_remaining)
        or time_remaining > _NO_DEADLINE_S
    ):
        return default
    return max(time_remaining - min(RELOAD_ANSWER_MARGIN_S, time_remaining / 10), 0.0)


class Core:
    """Resolves model specs through the version manager and runs the TF Serving APIs.

    Args:
        manager: the version manager (`serving.core.manager.ModelManager`).
        predictor: Predict on a servable in hand (`serving.servables.predict.Predictor`); its
            batch scheduler, runtime-latency histogram and method-name check
            (`--enable_signature_method_name_check`) serve Classify, Regress and
            MultiInference as well.
        metrics: where request counts and latencies are recorded.
        base_path_map: `--base_path_map`, applied to every config the core is given.
        reload_timeout_s: How long a reload RPC sent with no deadline waits for its models
            (`--model_config_reload_timeout_seconds`); None waits as long as they take.
        request_logger: The request loggers of the models' `logging_config`
            (`serving.core.server_request_logger`), or None to log nothing.
    """

    def __init__(
        self,
        manager,
        predictor: predict.Predictor,
        *,
        metrics: Metrics | None = None,
        base_path_map: str = "",
        reload_timeout_s: float | None = None,
        request_logger=None,
    ):
        self.manager = manager
        self.predictor = predictor
        self.metrics = metrics or Metrics()
        self.base_path_map = base_path_map
        self.reload_timeout_s = reload_timeout_s
        self.request_logger = request_logger

    # -- model spec resolution ---------------------------------------------------------------

    @staticmethod
    def _require_spec(request) -> None:
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")

    def servable(self, model_spec):
        """Holds the servable a ModelSpec names (TF Serving's `ServableRequestFromModelSpec`)."""
        if not model_spec.name:
            raise errors.invalid_argument("ModelSpec has no name specified.")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            handle = self.manager.handle(model_spec.name, version=model_spec.version.value)
        elif choice == "version_label":
            handle = self.manager.handle(model_spec.name, label=model_spec.version_label)
        else:
            handle = self.manager.handle(model_spec.name)
        return self._noting_version(handle)

    @staticmethod
    @contextlib.contextmanager
    def _noting_version(handle):
        """Holds a servable and tells the measured request around it which version it got."""
        with handle as servable:
            served = _SERVED.get()
            if served is not None:
                served.append(servable.version)
            yield servable

    @contextlib.contextmanager
    def _measure(self, request, api: str, entrypoint: str):
        """Counts the request and records its latency, as TF Serving does per model.

        Only a model in the current config is a label of its own; any other name is counted
        under `UNKNOWN_MODEL`, since each label value is a series kept for the server's life.
        """
        start = time.perf_counter()
        model = request.model_spec.name if request.HasField("model_spec") else ""
        if model not in self.manager.model_names():
            model = UNKNOWN_MODEL
        served: list[int] = []
        token = _SERVED.set(served)
        try:
            yield
        except errors.ServingError as error:
            self.metrics.request_count.inc(model, error.code.name)
            raise
        except Exception as error:  # a bug must still answer, as INTERNAL, and be logged
            self.metrics.request_count.inc(model, "INTERNAL")
            raise errors.logged_internal(api) from error
        finally:
            _SERVED.reset(token)
        self.metrics.request_count.inc(model, "OK")
        latency_us = (time.perf_counter() - start) * 1e6
        self.metrics.request_latency.observe(latency_us, model, api, entrypoint)
        if served and model != UNKNOWN_MODEL:
            # Embedded-only: the version that answered (the first held, for a request that held
            # more than one), so canary and stable latencies can be told apart.
            self.metrics.version_request_latency.observe(latency_us, model, str(served[0]), api)

    # -- PredictionService -------------------------------------------------------------------

    def predict(
        self, request: predict_pb2.PredictRequest, entrypoint: str = "GRPC"
    ) -> predict_pb2.PredictResponse:
        with self._measure(request, "Predict", entrypoint):
            self._require_spec(request)
            with self.servable(request.model_spec) as servable:
                response = self.predictor.predict_on(servable, request)
            return self._logged(request, response)

    def signature_inputs(self, model_spec, signature_name: str):
        """The input TensorInfo map REST needs before it can parse JSON."""
        key = signature_name or predict.DEFAULT_SIGNATURE
        with self.servable(model_spec) as servable:
            if key not in servable.signature_defs:
                raise errors.invalid_argument(
                    f'Serving signature name: "{key}" not found in signature def'
                )
            return servable.signature_defs[key].inputs

    def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, entrypoint: str = "GRPC"
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        with self._measure(request, "GetModelMetadata", entrypoint):
            self._require_spec(request)
            if not request.metadata_field:
                raise errors.invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != "signature_def":
                    raise errors.invalid_argument(f"Metadata field {field} is not supported")
            with self.servable(request.model_spec) as servable:
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = request.model_spec.name
                response.model_spec.version.value = servable.version
                signatures = get_model_metadata_pb2.SignatureDefMap()
                for key, value in servable.signature_defs.items():
                    signatures.signature_def[key].CopyFrom(value)
                response.metadata["signature_def"].Pack(signatures)
                return response

    def _runner(self, servable, api: str):
        return inference.runner(
            servable,
            api,
            batcher=self.predictor.batcher,
            runtime_latency=self.predictor.runtime_latency,
        )

    def classify(
        self, request: classification_pb2.ClassificationRequest, entrypoint: str = "GRPC"
    ) -> classification_pb2.ClassificationResponse:
        with self._measure(request, "Classify", entrypoint):
            self._require_spec(request)
            admit = self.predictor.admission.examples(request.input)
            with self.servable(request.model_spec) as servable, admit:
                response = classifier.classify(
                    servable,
                    request,
                    run=self._runner(servable, "Classify"),
                    method_check=self.predictor.method_check,
                )
            return self._logged(request, response)

    def regress(
        self, request: regression_pb2.RegressionRequest, entrypoint: str = "GRPC"
    ) -> regression_pb2.RegressionResponse:
        with self._measure(request, "Regress", entrypoint):
            self._require_spec(request)
            admit = self.predictor.admission.examples(request.input)
            with self.servable(request.model_spec) as servable, admit:
                response = regressor.regress(
                    servable,
                    request,
                    run=self._runner(servable, "Regress"),
                    method_check=self.predictor.method_check,
                )
            return self._logged(request, response)

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, entrypoint: str = "GRPC"
    ) -> inference_pb2.MultiInferenceResponse:
        """The servable is the first task's; TF Serving counts no request metrics here."""
        first = request.tasks[0] if request.tasks else None
        spec = first.model_spec if first is not None else model_pb2.ModelSpec()
        admit = self.predictor.admission.examples(request.input)
        with self.servable(spec) as servable, admit:
            response = multi_inference.multi_inference(
                servable,
                request,
                run=self._runner(servable, "MultiInference"),
                method_check=self.predictor.method_check,
            )
        return self._logged(request, response)

    def _logged(self, request, response):
        """Hands an answered request to its model's request logger (`ServerCore::Log`).

        Logging never fails or delays a request: the record is queued for a writer thread,
        and any error here is logged and the answer returned.
        """
        if self.request_logger is not None:
            try:
                self.request_logger.log(request, response)
            except Exception:
                log.exception("Request logging failed; the request was answered")
        return response

    # -- ModelService ------------------------------------------------------------------------

    def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest, entrypoint: str = "GRPC"
    ) -> get_model_status_pb2.GetModelStatusResponse:
        self._require_spec(request)
        version = (
            request.model_spec.version.value if request.model_spec.HasField("version") else None
        )
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.extend(self.manager.status(request.model_spec.name, version))
        return response

    def reload_config(
        self,
        request: model_management_pb2.ReloadConfigRequest,
        time_remaining: float | None = None,
    ) -> model_management_pb2.ReloadConfigResponse:
        """Replaces the model list and waits for newly added models, until the RPC's deadline.

        TF Serving waits until they are available however long that takes (for ever for a base
        path that does not exist), and holds its config lock meanwhile, so every later reload
        waits too. Here the wait ends shortly before the deadline (or after `reload_timeout_s`
        with none) with TF Serving's UNKNOWN "<n> model(s) did not become available" text,
        which also names models still loading (`{name: m version: 2}`) and models with no
        version, as `{Latest(m) due to error: ...}` with the storage path source's error.

        Args:
            request: The ReloadConfigRequest.
            time_remaining: Seconds left before the RPC's deadline, or None.
        """
        if request.config.WhichOneof("config") != "model_config_list":
            raise errors.invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        self.apply_config(
            request.config, timeout=reload_wait(time_remaining, self.reload_timeout_s)
        )
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response

    def apply_config(self, model_server_config, timeout: float | None = None) -> None:
        """Hands a ModelServerConfig (after `--base_path_map`) to the version manager.

        Args:
            model_server_config: The new config.
            timeout: Seconds to wait for newly added models; None waits until they settle.
        """
        config = config_lib.map_base_paths(model_server_config, self.base_path_map)
        on_applied = None
        if self.request_logger is not None:
            # Checked before anything changes, so a bad logging_config leaves the running
            # config (models and logging) as it was; applied with the model list.
            checked = self.request_logger.check(config)
            on_applied = functools.partial(self.request_logger.update, checked)
        self.manager.reload_config(config, timeout=timeout, on_applied=on_applied)

    def metrics_text(self) -> str:
        return self.metrics.render()
