"""TLS and mutual TLS (`--ssl_config_file`) on the gRPC and REST ports, over real processes.

Certificates are made at test time with trustme (`tests.support.TLSCertificates`). Every refusal
is checked with the same server answering a good client, so it is the credentials that fail.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.config import files as config_lib
from serving.tensors import from_numpy, to_numpy
from tests.known_models import write_known_model
from tests.support import ROOT, ServerProcess, TLSCertificates, free_port

REFUSED = grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TLSCertificates:
    return TLSCertificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def half(tmp_path_factory):
    """The known-answer model `half` (y = 0.5x + 2), version 1."""
    base = tmp_path_factory.mktemp("models") / "half"
    write_known_model(base, 1, a=0.5, b=2.0)
    return base


def _server(certs, half, tmp_path_factory, client_verify: bool) -> ServerProcess:
    name = "mtls" if client_verify else "tls"
    config = certs.ssl_config(client_verify=client_verify, name=f"{name}.config")
    return ServerProcess(
        "--model_name=half",
        f"--model_base_path={half}",
        f"--ssl_config_file={config}",
        log_path=tmp_path_factory.mktemp(name) / "server.log",
        credentials=certs.credentials(client="client" if client_verify else None),
    )


@pytest.fixture(scope="module")
def tls_server(certs, half, tmp_path_factory):
    """TLS without client verification; custom_ca is set, which alone asks for no certificate."""
    with _server(certs, half, tmp_path_factory, client_verify=False) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(certs, half, tmp_path_factory):
    """Mutual TLS: client_verify true, client certificates must chain to custom_ca."""
    with _server(certs, half, tmp_path_factory, client_verify=True) as server:
        yield server


def channel(server: ServerProcess, credentials=None, target: str = "127.0.0.1", options=()):
    address = f"{target}:{server.port}"
    if credentials is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, credentials, options=list(options))


def predict_half(chan, x=(1.0, 2.0)) -> list[float]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="half"))
    request.inputs["x"].CopyFrom(from_numpy(np.array(x, np.float32)))
    return to_numpy(stub.Predict(request, timeout=10).outputs["y"], "y").tolist()


def status_code(chan) -> grpc.StatusCode:
    """The code of a GetModelStatus call over `chan` (OK when it is served)."""
    stub = model_service_pb2_grpc.ModelServiceStub(chan)
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name="half")
    )
    try:
        stub.GetModelStatus(request, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# -- one-way TLS -----------------------------------------------------------------------------


@pytest.mark.integration
def test_tls_client_with_the_right_ca_gets_answers(tls_server, certs):
    with channel(tls_server, certs.credentials()) as chan:
        assert predict_half(chan) == [2.5, 3.0]
        stub = model_service_pb2_grpc.ModelServiceStub(chan)
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name="half")
        )
        [version] = stub.GetModelStatus(request, timeout=10).model_version_status
        assert version.version == 1
        assert version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        health = health_pb2_grpc.HealthStub(chan)
        answer = health.Check(health_pb2.HealthCheckRequest(service="half"), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.integration
def test_plaintext_client_to_the_tls_port_is_refused(tls_server, certs):
    with channel(tls_server) as chan:
        assert status_code(chan) == REFUSED
    with channel(tls_server, certs.credentials()) as chan:
        assert status_code(chan) == grpc.StatusCode.OK


@pytest.mark.integration
def test_client_trusting_another_ca_is_refused(tls_server, certs):
    with (
        channel(tls_server, certs.credentials(ca="rogue")) as chan,
        pytest.raises(grpc.RpcError) as caught,
    ):
        predict_half(chan)
    assert caught.value.code() == REFUSED
    # The client names why: the server's certificate is not one its CA vouches for.
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.details()


@pytest.mark.integration
def test_the_certificate_name_is_checked(tls_server, certs):
    # The certificate names localhost, 127.0.0.1 and serving.internal, and nothing else.
    with channel(tls_server, certs.credentials(), target="localhost") as chan:
        assert status_code(chan) == grpc.StatusCode.OK
    override = [("grpc.ssl_target_name_override", "serving.internal")]
    with channel(tls_server, certs.credentials(), options=override) as chan:
        assert status_code(chan) == grpc.StatusCode.OK
    wrong = [("grpc.ssl_target_name_override", "elsewhere.example")]
    with channel(tls_server, certs.credentials(), options=wrong) as chan:
        assert status_code(chan) == REFUSED


@pytest.mark.integration
def test_without_client_verify_no_client_certificate_is_asked_for(tls_server, certs):
    # TF Serving: client_verify false is DONT_REQUEST_CLIENT_CERTIFICATE, custom_ca or not, so
    # even a certificate from an unknown CA is never looked at.
    with channel(tls_server, certs.credentials(client="rogue-client")) as chan:
        assert status_code(chan) == grpc.StatusCode.OK


# -- mutual TLS ------------------------------------------------------------------------------


@pytest.mark.integration
def test_mtls_client_with_a_certificate_from_custom_ca_is_served(mtls_server, certs):
    with channel(mtls_server, certs.credentials(client="client")) as chan:
        assert predict_half(chan, x=(4.0,)) == [4.0]
        assert status_code(chan) == grpc.StatusCode.OK


@pytest.mark.integration
def test_mtls_client_without_a_certificate_is_refused(mtls_server, certs):
    with channel(mtls_server, certs.credentials()) as chan:
        assert status_code(chan) == REFUSED
    with channel(mtls_server) as chan:
        assert status_code(chan) == REFUSED


@pytest.mark.integration
def test_mtls_client_certificate_from_another_ca_is_refused(mtls_server, certs):
    with channel(mtls_server, certs.credentials(client="rogue-client")) as chan:
        assert status_code(chan) == REFUSED
    with channel(mtls_server, certs.credentials(client="client")) as chan:
        assert status_code(chan) == grpc.StatusCode.OK


# -- the REST port speaks HTTPS from the same file (the embedded server's addition) ----------


def _https_status(server: ServerProcess, context: ssl.SSLContext) -> tuple[int, dict]:
    conn = http.client.HTTPSConnection("127.0.0.1", server.rest_port, timeout=10, context=context)
    try:
        conn.request("GET", "/v1/models/half")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _client_context(certs, ca: str = "server", client: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.path(f"{ca}-ca.pem")))
    context.check_hostname = False  # dialled by IP; the name is the gRPC tests' concern
    if client is not None:
        context.load_cert_chain(certs.path(f"{client}.pem"), certs.path(f"{client}.key"))
    return context


def test_rest_answers_https_and_refuses_plain_http(tls_server, certs):
    status, body = _https_status(tls_server, _client_context(certs))
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    plain = http.client.HTTPConnection("127.0.0.1", tls_server.rest_port, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        plain.request("GET", "/v1/models/half")
        plain.getresponse().read()
    plain.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        _https_status(tls_server, _client_context(certs, ca="rogue"))
    assert _https_status(tls_server, _client_context(certs))[0] == 200


@pytest.mark.parametrize("client", [None, "rogue-client"], ids=["no-certificate", "rogue"])
def test_rest_under_mutual_tls_needs_a_certificate_from_custom_ca(mtls_server, certs, client):
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        _https_status(mtls_server, _client_context(certs, client=client))
    assert _https_status(mtls_server, _client_context(certs, client="client"))[0] == 200


# -- the config file -------------------------------------------------------------------------


def _ssl_text(certs, **fields) -> str:
    key = certs.server.private_key_pem.bytes().decode()
    cert = certs.server.cert_chain_pems[0].bytes().decode()
    values = {"server_key": key, "server_cert": cert, **fields}
    lines = []
    for name, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{name}: {str(value).lower()}")
        else:
            lines.append(f'{name}: "{value}"'.replace("\n", "\\n"))
    return "\n".join(lines) + "\n"


def test_read_ssl_config_parses_tf_servings_text_format(certs, tmp_path):
    path = tmp_path / "ssl.config"
    path.write_text(_ssl_text(certs, custom_ca=certs.client_ca.cert_pem.bytes().decode()))
    config = config_lib.read_ssl_config(path)
    assert config.server_cert.startswith("-----BEGIN CERTIFICATE-----")
    assert config.custom_ca and not config.client_verify
    assert config_lib.server_ssl_context(config).verify_mode.name == "CERT_NONE"
    path.write_text(_ssl_text(certs, custom_ca=config.custom_ca, client_verify=True))
    assert config_lib.server_ssl_context(config_lib.read_ssl_config(path)).verify_mode.name == (
        "CERT_REQUIRED"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("server_key: 1 2 3", "Error parsing text-format tensorflow.serving.SSLConfig"),
        ('server_cert: "-----BEGIN CERTIFICATE-----"', "SSLConfig.server_key is empty"),
        ("{key}", "SSLConfig.server_cert is empty"),
        (
            "{key}\nserver_cert: '/etc/tls/server.pem'",
            "SSLConfig.server_cert is not PEM text (it looks like a path: '/etc/tls/server.pem')",
        ),
        ("{key}\nserver_cert: '{rogue_cert}'", "do not load as a key pair"),
        ("{full}\ncustom_ca: 'no PEM here'", "SSLConfig.custom_ca is not PEM text;"),
        ("{full}\nclient_verify: true", "client_verify is true but custom_ca is empty"),
        (
            "server_key: '-----BEGIN ENCRYPTED PRIVATE KEY-----'\nserver_cert: '-----BEGIN '",
            "SSLConfig.server_key is encrypted",
        ),
    ],
)
def test_read_ssl_config_names_the_bad_field(certs, tmp_path, text, message):
    full = _ssl_text(certs)
    key = full.splitlines()[0]
    rogue = certs.rogue_ca.issue_cert("x").cert_chain_pems[0].bytes().decode()
    text = text.format(key=key, full=full, rogue_cert=rogue.replace("\n", "\\n"))
    path = tmp_path / "ssl.config"
    path.write_text(text)
    with pytest.raises(config_lib.ConfigError) as caught:
        config_lib.read_ssl_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.integration
@pytest.mark.parametrize("problem", ["missing", "mismatched"])
def test_a_bad_ssl_config_file_fails_start_up_with_one_line(certs, half, tmp_path, problem):
    path = tmp_path / "ssl.config"
    if problem == "mismatched":
        other_key = certs.rogue_ca.issue_cert("x").private_key_pem.bytes().decode()
        path.write_text(_ssl_text(certs, server_key=other_key))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            f"--port={free_port()}",
            "--model_name=half",
            f"--model_base_path={half}",
            f"--ssl_config_file={path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 255
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Failed to start server")]
    expected = {
        "missing": f"Error: INVALID_ARGUMENT: cannot read {path}: No such file or directory",
        "mismatched": f"Error: INVALID_ARGUMENT: {path}: SSLConfig.server_key and server_cert",
    }[problem]
    assert expected in line
    assert "Traceback" not in result.stderr
    # The file is checked before any model loads.
    assert "Loading servable" not in result.stderr
