"""The client's TLS: `client.transports.tls.TLSFiles`, both transports, `ServingClient` and the CLI.

Both go to a real `python -m serving --ssl_config_file` under mutual TLS: gRPC on its gRPC port,
HTTPS on its REST port (the embedded server's addition; TF Serving's REST port stays plain).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import numpy as np
import pytest

from client import cli
from client.api import ServingClient
from client.errors import BAD_INPUT, ClientError
from client.transports.grpc import GrpcTransport
from client.transports.rest import RestTransport
from client.transports.tls import TLSFiles
from tests.support import ROOT, ServerProcess, TLSCertificates

F32 = np.float32


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TLSCertificates:
    return TLSCertificates(tmp_path_factory.mktemp("pki"))


def files(certs, client: str | None = "client", ca: str = "server", **more) -> TLSFiles:
    """TLSFiles trusting `<ca>-ca.pem` and showing `<client>.pem`, if any."""
    return TLSFiles(
        ca=certs.path(f"{ca}-ca.pem"),
        cert=None if client is None else certs.path(f"{client}.pem"),
        key=None if client is None else certs.path(f"{client}.key"),
        **more,
    )


def tls_flags(certs, client: str | None = "client") -> list[str]:
    flags = ["--ca", str(certs.path("server-ca.pem"))]
    if client is not None:
        flags += [
            "--cert",
            str(certs.path(f"{client}.pem")),
            "--key",
            str(certs.path(f"{client}.key")),
        ]
    return flags


# -- TLSFiles on its own ---------------------------------------------------------------------


def test_a_missing_file_is_bad_input_naming_it(certs, tmp_path):
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ClientError) as caught:
        GrpcTransport("127.0.0.1:1", tls=TLSFiles(ca=missing))
    assert caught.value.code == BAD_INPUT
    assert caught.value.message == f"TLS ca file {missing} does not exist"
    with pytest.raises(ClientError, match=r"TLS key file .*does not exist"):
        TLSFiles(cert=certs.path("client.pem"), key=tmp_path / "no.key").ssl_context()


def test_a_file_that_is_not_pem_is_bad_input(certs, tmp_path):
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a not PEM")
    with pytest.raises(ClientError, match=r"TLS ca file .*ca\.der is not PEM") as caught:
        TLSFiles(ca=der).grpc_credentials()
    assert caught.value.code == BAD_INPUT


def test_cert_and_key_go_together(certs):
    with pytest.raises(ClientError, match="TLS cert given without key"):
        TLSFiles(cert=certs.path("client.pem"))
    with pytest.raises(ClientError, match="TLS key given without cert"):
        TLSFiles(key=certs.path("client.key"))


def test_a_key_that_is_not_the_certificates_is_bad_input(certs):
    mixed = TLSFiles(cert=certs.path("client.pem"), key=certs.path("rogue-client.key"))
    with pytest.raises(ClientError, match="do not load as a pair") as caught:
        mixed.grpc_credentials()
    assert caught.value.code == BAD_INPUT


def test_the_ssl_context_trusts_only_the_given_ca(certs):
    context = files(certs).ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    [root] = context.get_ca_certs()
    assert root["subject"] == root["issuer"]  # the one self-signed test CA, no system roots
    assert TLSFiles().ssl_context().verify_mode == ssl.CERT_REQUIRED


def test_tls_needs_an_https_url():
    with pytest.raises(ValueError, match="TLS options need an https:// URL"):
        RestTransport("http://127.0.0.1:1", tls=TLSFiles())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ca", "/nowhere/ca.pem"], "error: TLS ca file /nowhere/ca.pem does not exist"),
        (["--cert", "c.pem"], "error: TLS cert given without key"),
        (["--rest", "http://127.0.0.1:1", "--tls"], "TLS options need an https:// URL"),
    ],
)
def test_cli_tls_mistakes_are_one_line_usage_errors(capsys, argv, message):
    assert cli.main(["status", "half", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("python -m client: ")


# -- gRPC under mutual TLS -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_server(certs, tmp_path_factory):
    # Writing the SavedModel needs TensorFlow; this module itself must import without it.
    from tests.known_models import write_known_model

    base = tmp_path_factory.mktemp("models") / "half"
    write_known_model(base, 1, a=0.5, b=2.0)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={base}",
        f"--ssl_config_file={certs.ssl_config(client_verify=True)}",
        log_path=base.parent / "server.log",
        credentials=certs.credentials(client="client"),
    )
    with server:
        yield server


@pytest.mark.integration
def test_grpc_transport_over_mutual_tls(mtls_server, certs):
    with GrpcTransport(f"127.0.0.1:{mtls_server.port}", tls=files(certs), timeout=10) as grpc_:
        outputs, version = grpc_.predict("half", {"x": np.array([1.0, 2.0], F32)})
        assert version == 1 and outputs["y"].tolist() == [2.5, 3.0]
        [status] = grpc_.status("half")
        assert status["state"] == "AVAILABLE"


@pytest.mark.integration
def test_serving_client_passes_tls_through(mtls_server, certs):
    target = f"localhost:{mtls_server.port}"
    with ServingClient.grpc(target, tls=files(certs), timeout=10) as client:
        assert client.status("half")[0]["state"] == "AVAILABLE"


@pytest.mark.integration
@pytest.mark.parametrize(
    "tls", [None, "no client certificate", "rogue client certificate", "rogue CA"]
)
def test_grpc_clients_the_server_or_we_do_not_trust_are_unavailable(mtls_server, certs, tls):
    tls = {
        None: None,
        "no client certificate": files(certs, client=None),
        "rogue client certificate": files(certs, client="rogue-client"),
        "rogue CA": files(certs, ca="rogue"),
    }[tls]
    target = f"127.0.0.1:{mtls_server.port}"
    with (
        GrpcTransport(target, tls=tls, retries=0, timeout=10) as grpc_,
        pytest.raises(ClientError) as caught,
    ):
        grpc_.status("half")
    assert caught.value.code == "UNAVAILABLE"


@pytest.mark.integration
def test_server_name_is_the_name_checked(mtls_server, certs):
    target = f"127.0.0.1:{mtls_server.port}"
    with GrpcTransport(target, tls=files(certs, server_name="serving.internal")) as grpc_:
        assert grpc_.status("half")[0]["state"] == "AVAILABLE"
    wrong = files(certs, server_name="elsewhere.example")
    with (
        GrpcTransport(target, tls=wrong, retries=0, timeout=10) as grpc_,
        pytest.raises(ClientError, match="UNAVAILABLE"),
    ):
        grpc_.status("half")


@pytest.mark.integration
def test_cli_status_over_mutual_tls(mtls_server, certs, capsys):
    # The real `python -m client` process, as an operator runs it.
    argv = ["status", "half", "--server", f"127.0.0.1:{mtls_server.port}", *tls_flags(certs)]
    result = subprocess.run(
        [sys.executable, "-m", "client", *argv], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["state"] == "AVAILABLE"
    # Without a client certificate: one line, the server's refusal, exit 3.
    argv = ["status", "half", "--server", f"127.0.0.1:{mtls_server.port}", "--timeout", "3"]
    assert cli.main([*argv, *tls_flags(certs, client=None)]) == cli.EXIT_SERVER
    err = capsys.readouterr().err
    assert err.startswith("client: UNAVAILABLE: ") and err.count("\n") == 1


# -- HTTPS on the REST port ----------------------------------------------------------------


class _Https:
    """Where the mutual-TLS server's REST port answers HTTPS."""

    def __init__(self, server: ServerProcess):
        self.url = f"https://127.0.0.1:{server.rest_port}"


@pytest.fixture(scope="module")
def proxy(mtls_server):
    return _Https(mtls_server)


@pytest.mark.integration
def test_rest_transport_over_mutual_tls(proxy, certs):
    with RestTransport(proxy.url, tls=files(certs), timeout=20) as rest:
        outputs, version = rest.predict("half", {"x": np.array([1.0, 2.0, 3.0], F32)})
        assert version == 1 and outputs["y"].tolist() == [2.5, 3.0, 3.5]
        assert rest.status("half")[0]["state"] == "AVAILABLE"
    with RestTransport(proxy.url, tls=files(certs, server_name="serving.internal")) as rest:
        assert rest.status("half")[0]["state"] == "AVAILABLE"
    host_named = proxy.url.replace("127.0.0.1", "localhost")
    with ServingClient.rest(host_named, tls=files(certs), timeout=20) as client:
        assert client.metadata("half")["version"] == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    "who, reason",
    [
        # The server refuses: the client sees its alert, or only the closed socket.
        ("no client certificate", None),
        ("rogue client certificate", None),
        # The client refuses, and says why.
        ("rogue CA", "CERTIFICATE_VERIFY_FAILED"),
        ("wrong server name", "Hostname mismatch"),
    ],
)
def test_https_clients_the_server_or_we_do_not_trust_are_unavailable(proxy, certs, who, reason):
    tls = {
        "no client certificate": files(certs, client=None),
        "rogue client certificate": files(certs, client="rogue-client"),
        "rogue CA": files(certs, ca="rogue"),
        "wrong server name": files(certs, server_name="elsewhere.example"),
    }[who]
    with (
        RestTransport(proxy.url, tls=tls, retries=0, timeout=10) as rest,
        pytest.raises(ClientError) as caught,
    ):
        rest.status("half")
    assert caught.value.code == "UNAVAILABLE"
    if reason is not None:
        assert reason in caught.value.message
    # It was the credentials: the same port serves a trusted client.
    with RestTransport(proxy.url, tls=files(certs), timeout=10) as rest:
        assert rest.status("half")[0]["state"] == "AVAILABLE"


@pytest.mark.integration
def test_cli_over_https(proxy, certs, capsys):
    # No scheme with TLS options means https://.
    for url in (proxy.url, proxy.url.removeprefix("https://")):
        assert cli.main(["metadata", "half", "--rest", url, *tls_flags(certs)]) == 0
        assert json.loads(capsys.readouterr().out)["name"] == "half"
