"""TF Serving's REST API (`model_servers/http_rest_api_handler.cc`): routes, JSON, errors."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import re
from urllib.parse import unquote_to_bytes

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving.config import files as config_files
from serving.errors import ServingError, invalid_argument
from serving.rest.http import JSON_TYPE, HttpLimits, HttpServer
from serving.rest.json.examples import parse_examples_request
from serving.rest.json.response import (
    COMPACT,
    LAYOUTS,
    classification_json,
    error_json,
    predict_response,
    regression_json,
)
from serving.rest.json.tensor import parse_predict_request
from serving.rest.json.text import printable
from serving.tensors import from_numpy, to_numpy

log = logging.getLogger(__name__)

# `http_rest_api_util.h`/`.cc`, verbatim; RE2 is case-insensitive here and `\d` is ASCII only.
_FLAGS = re.IGNORECASE | re.ASCII
_API_PATH = re.compile(r"/v1/.*", _FLAGS | re.DOTALL)
_POST_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    _FLAGS,
)
_GET_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:\/(metadata))?",
    _FLAGS,
)
_ORIGIN = re.compile(r"https?://")
_INT64_MAX = 2**63 - 1
METRICS_TYPE = "text/plain; version=0.0.4"
# libevent's `evhttp_send_error(req, HTTP_NOTFOUND, nullptr)` page for paths outside /v1/.
NOT_FOUND_PAGE = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)


class RestServer:
    """The REST front end: TF Serving's routes and JSON over the HTTP layer (`serving.rest.http`).

    Args:
        core: The server core (`predict`, `classify`, `regress`, `get_model_metadata`,
            `get_model_status`, `signature_inputs`, `metrics_text`).
        host: Address to bind; `""` or `0.0.0.0` for all IPv4 interfaces, IPv6 if it has `:`.
        port: Port to bind now (0 picks a free one, see `port`); it accepts only after `start()`.
        timeout_ms: `--rest_api_timeout_in_ms`; a request still running after this answers 504.
            Zero or less waits for ever.
        monitoring_path: Where Prometheus text is served, or None for no metrics endpoint.
        num_threads: Worker threads for requests (`--rest_api_num_threads`).
        limits: The HTTP limits (body, head, URL, timeouts, connections); the timeout is set
            from `timeout_ms`.
        ssl_config: TF Serving's SSLConfig to serve HTTPS with (and require client certificates
            when it says `client_verify`), or None for plain HTTP.
        json_layout: `--rest_api_json_layout`, how :predict answers are written: `compact`
            or `tf_serving` (TF Serving's bytes); the JSON values are the same.
    """

    def __init__(
        self,
        core,
        host: str,
        port: int,
        *,
        timeout_ms: int = 30000,
        monitoring_path: str | None = None,
        num_threads: int = 4 * (os.cpu_count() or 1),
        limits: HttpLimits | None = None,
        ssl_config=None,
        json_layout: str = COMPACT,
    ):
        if json_layout not in LAYOUTS:
            raise ValueError(
                f"unknown JSON layout {json_layout!r}; expected one of {', '.join(LAYOUTS)}"
            )
        self._core = core
        self._json_layout = json_layout
        self._monitoring_path = monitoring_path
        limits = dataclasses.replace(
            limits or HttpLimits(),
            request_timeout_s=timeout_ms / 1000 if timeout_ms > 0 else None,
        )
        # --rest_api_num_threads: how many REST requests parse JSON and run the model at once.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, num_threads), thread_name_prefix="rest-core"
        )
        context = None if ssl_config is None else config_files.server_ssl_context(ssl_config)
        self._http = HttpServer(host, port, self.respond, limits, self._pool, ssl_context=context)

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0)."""
        return self._http.port

    def start(self) -> None:
        """Starts listening and serves on a background thread."""
        self._http.start()

    def shutdown(self, drain_s: float = 30.0) -> None:
        """Stops accepting; requests in flight get up to `drain_s`, then connections close."""
        self._http.shutdown(drain_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str | None]:
        """Answers one request: (HTTP status, body, content type or None for no header).

        Args:
            method: The HTTP method.
            path: The request path, without the query, as sent.
            headers: The request headers by lower-case name.
            body: The whole request body.
        """
        if self._monitoring_path is not None and path == self._monitoring_path:
            return 200, self._core.metrics_text().encode(), METRICS_TYPE
        if not _API_PATH.fullmatch(path):
            return 404, NOT_FOUND_PAGE, "text/html"
        if method == "OPTIONS":
            # A CORS preflight: no body and no JSON content type, as in `http_server.cc`.
            return (200 if _ORIGIN.search(headers.get("origin", "")) else 400), b"", None
        status, text = self.handle(method, path, body)
        if isinstance(text, str):
            text = text.encode("utf-8", "surrogateescape")
        return status, text, JSON_TYPE

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str | bytes]:
        """One /v1/ request (`HttpRestApiHandler::ProcessRequest`): (HTTP status, JSON text).

        The text is `bytes` for a :predict answer (already encoded), else `str`.
        """
        try:
            return 200, self._process(method, path, body)
        except ServingError as error:
            # Names echoed from the request may hold bytes that are not UTF-8: shown escaped.
            return error.http_status, error_json(printable(error.message))

    def _process(self, method: str, path: str, body: bytes) -> str | bytes:
        groups, parsed = ("", "", "", ""), None
        if method == "POST":
            parsed = _POST_PATH.fullmatch(path)
        elif method == "GET":
            parsed = _GET_PATH.fullmatch(path)
        if parsed:
            groups = tuple(group or "" for group in parsed.groups())
        spec = _model_spec(*groups[:3])
        action = groups[3]
        # Like TF Serving, the action must be lower case although the path regex is not.
        if method == "POST" and parsed and action in ("predict", "classify", "regress"):
            return getattr(self, "_" + action)(spec, body)
        if method == "GET" and parsed:
            if not spec.name:
                raise invalid_argument("Missing model name in request.")
            if action == "metadata":
                return self._metadata(spec)
            return self._status(spec)
        raise invalid_argument(f"Malformed request: {method} {path}")

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> bytes:
        def inputs_of(signature: str):
            return self._core.signature_inputs(spec, signature)

        signature, request_format, arrays = parse_predict_request(body, inputs_of)
        request = predict_pb2.PredictRequest(model_spec=spec)
        request.model_spec.signature_name = signature
        for alias, array in arrays.items():
            request.inputs[alias].CopyFrom(from_numpy(array, tensor_content=True))
        response = self._core.predict(request, entrypoint="REST")
        outputs = {alias: to_numpy(tensor, alias) for alias, tensor in response.outputs.items()}
        return predict_response(outputs, request_format, self._json_layout)

    def _classify(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        signature, request_input = parse_examples_request(body)
        request = classification_pb2.ClassificationRequest(model_spec=spec, input=request_input)
        request.model_spec.signature_name = _text(signature, "Signature name")
        response = self._core.classify(request, entrypoint="REST")
        return classification_json(response.result)

    def _regress(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        signature, request_input = parse_examples_request(body)
        request = regression_pb2.RegressionRequest(model_spec=spec, input=request_input)
        request.model_spec.signature_name = _text(signature, "Signature name")
        response = self._core.regress(request, entrypoint="REST")
        return regression_json(response.result)

    def _status(self, spec: model_pb2.ModelSpec) -> str:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        response = self._core.get_model_status(request, entrypoint="REST")
        return _proto_json(response, preserve_names=False)

    def _metadata(self, spec: model_pb2.ModelSpec) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=["signature_def"]
        )
        response = self._core.get_model_metadata(request, entrypoint="REST")
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(signatures):
            raise ServingError(
                grpc.StatusCode.INTERNAL, "Failed to unpack 'Any' object to 'SignatureDefMap'."
            )
        # TF Serving assembles this by hand (`ToJsonString`), hence the doubled key.
        return (
            '{\n"model_spec":'
            + _proto_json(response.model_spec)
            + ',\n"metadata": {"signature_def": '
            + _proto_json(signatures)
            + "}\n}\n"
        )


def _model_spec(name: str, version: str, label: str) -> model_pb2.ModelSpec:
    """`ParseModelInfo` + `FillModelSpecWithNameVersionAndLabel`, URL-decoding name and label."""
    spec = model_pb2.ModelSpec(name=_decode(name, "model name"))
    if version:
        # absl::SimpleAtoi: any number of leading zeros, then a value that fits int64.
        digits = version.lstrip("0") or "0"
        if len(digits) > len(str(_INT64_MAX)) or int(digits) > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        spec.version.value = int(digits)
    if label:
        spec.version_label = _decode(label, "model version label")
    return spec


def _decode(segment: str, what: str) -> str:
    """A %-encoded path segment as text; protobuf names are UTF-8, so other bytes are a 400."""
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_argument(
            f"Failed to decode {what}:{segment}: the %-decoded bytes are not UTF-8"
        ) from None


def _text(value: str, what: str) -> str:
    """A name from the JSON body, refused unless it is UTF-8 (protobuf strings must be)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_argument(f"{what} is not valid UTF-8: '{printable(value)}'") from None
    return value


def _proto_json(message, *, preserve_names: bool = True) -> str:
    """Protobuf's C++ JSON printer with `add_whitespace` and every field printed."""
    data = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=preserve_names,
    )
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"
