"""GrpcTransport's traffic rules: round_robin over every address of a name, and retries by gRPC.

Two kinds of real servers take part. For the retry policy, a `grpc.server` in the test process
answers every call with a chosen status and counts the attempts gRPC makes (its
`grpc-previous-rpc-attempts` header). For the balancing, two `python -m serving` processes bind
127.0.0.1 and 127.0.0.2 on the same port, and a small DNS server on loopback (dnslib) answers
one name with both addresses; the client dials `dns://127.0.0.1:DNS_PORT/NAME:PORT`, which
makes gRPC's c-ares resolver ask that server. Each server's share is read from its own
Prometheus page.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import numpy as np
import pytest
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from client import cli
from client.errors import ClientError
from client.transports.grpc import GrpcTransport, service_config
from tests.support import ServerProcess, wait_for

F32 = np.float32
NAME = "tfserving.test"
HOSTS = ("127.0.0.1", "127.0.0.2")
METRICS_PATH = "/monitoring/prometheus/metrics"

# -- the retry policy, against a server that fails on purpose --------------------------------

MODEL_SERVICE = "tensorflow.serving.ModelService"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"


class _FailingServer:
    """A gRPC server answering every call of both TF Serving services with `code`.

    `attempts` lists (method, grpc-previous-rpc-attempts, monotonic time) per attempt received.
    """

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        self.code = code
        self.attempts: list[tuple[str, int, float]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", 64 * 2**20)],
        )
        handlers = []
        for service, methods in (
            (PREDICTION_SERVICE, ("Predict", "GetModelMetadata")),
            (MODEL_SERVICE, ("GetModelStatus", "HandleReloadConfigRequest")),
        ):
            table = {m: grpc.unary_unary_rpc_method_handler(self._fail(m)) for m in methods}
            handlers.append(grpc.method_handlers_generic_handler(service, table))
        self.server.add_generic_rpc_handlers(handlers)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _fail(self, method: str):
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            previous = dict(context.invocation_metadata()).get("grpc-previous-rpc-attempts", "0")
            with self._lock:
                self.attempts.append((method, int(previous), time.monotonic()))
            context.abort(self.code, f"{method} fails on purpose")

        return handle

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.attempts]

    def stop(self) -> None:
        self.server.stop(None)


@pytest.fixture
def failing():
    server = _FailingServer()
    yield server
    server.stop()


def test_idempotent_calls_are_retried_by_grpc(failing):
    # Prepare: 3 retries, a 1 MiB Predict (over gRPC's default 256 KiB retry buffer).
    big = np.zeros(2**18, F32)
    with GrpcTransport(f"127.0.0.1:{failing.port}", retries=3, backoff=0.02, timeout=20) as t:
        # Send and Verify: each call is made 4 times by gRPC itself, then UNAVAILABLE.
        for call, method in (
            (lambda: t.status("m"), "GetModelStatus"),
            (lambda: t.metadata("m"), "GetModelMetadata"),
            (lambda: t.predict("m", {"x": big}), "Predict"),
        ):
            failing.attempts.clear()
            with pytest.raises(ClientError) as caught:
                call()
            assert caught.value.code == "UNAVAILABLE"
            assert failing.methods() == [method] * 4
            assert [previous for _, previous, _ in failing.attempts] == [0, 1, 2, 3]


def test_backoff_stays_under_its_doubling_cap(failing):
    # Retry n waits a random time up to backoff * 2**n: with 0.2 s, gaps of at most 0.2, 0.4
    # and 0.8 s, plus the time an attempt takes on a busy machine. A backoff written in the
    # wrong unit (200 s) fails the bound and the deadline; a cap growing faster than doubling
    # (or the cap of the last retry used from the first) fails it more often than not.
    with (
        GrpcTransport(f"127.0.0.1:{failing.port}", retries=3, backoff=0.2, timeout=20) as t,
        pytest.raises(ClientError),
    ):
        t.status("m")
    times = [at for _, _, at in failing.attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 3
    assert all(gap <= 0.2 * 2**n + 0.3 for n, gap in enumerate(gaps)), gaps


def test_no_retries_means_one_attempt(failing):
    with (
        GrpcTransport(f"127.0.0.1:{failing.port}", retries=0, timeout=20) as t,
        pytest.raises(ClientError, match="UNAVAILABLE"),
    ):
        t.status("m")
    assert failing.methods() == ["GetModelStatus"]


def test_other_statuses_are_not_retried():
    server = _FailingServer(grpc.StatusCode.NOT_FOUND)
    try:
        with (
            GrpcTransport(f"127.0.0.1:{server.port}", retries=3, backoff=0.01) as t,
            pytest.raises(ClientError) as caught,
        ):
            t.predict("m", {"x": np.zeros(2, F32)})
        assert caught.value.code == "NOT_FOUND"
        assert server.methods() == ["Predict"]
    finally:
        server.stop()


def test_reload_config_is_never_retried(failing):
    # The service config names the methods it retries: one that named all of ModelService
    # would send a HandleReloadConfigRequest (a model-list change) up to 5 times.
    config = json.dumps(service_config(4, 0.01))
    channel = grpc.insecure_channel(
        f"127.0.0.1:{failing.port}", options=[("grpc.service_config", config)]
    )
    with channel:
        for method in ("HandleReloadConfigRequest", "GetModelStatus"):
            call = channel.unary_unary(f"/{MODEL_SERVICE}/{method}")
            with pytest.raises(grpc.RpcError) as caught:
                call(b"", timeout=20)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert failing.methods() == ["HandleReloadConfigRequest"] + ["GetModelStatus"] * 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": 5}, "retries must be 0 to 4 over gRPC, not 5"),
        ({"retries": -1}, "retries must be 0 to 4 over gRPC, not -1"),
        ({"backoff": 0}, "backoff must be a positive number of seconds, not 0"),
        ({"keepalive": float("nan")}, "keepalive must be a positive number of seconds"),
    ],
)
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GrpcTransport("127.0.0.1:1", **options)


def test_a_url_is_not_a_grpc_target(capsys):
    with pytest.raises(ValueError, match="is not a gRPC target: give host:port or dns:///"):
        GrpcTransport("http://127.0.0.1:8500")
    # On the command line: one line on stderr, usage status.
    assert cli.main(["status", "half", "--server", "https://serving:8500"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a gRPC target" in err[0]


# -- round_robin over two real servers behind one name ---------------------------------------


class _Names(BaseResolver):
    """Answers A queries for NAME with `addresses` (a test may change them), nothing else."""

    def __init__(self, addresses: list[str]):
        self.addresses = list(addresses)

    def resolve(self, request, handler):
        reply = request.reply()
        question = request.q
        if question.qtype == QTYPE.A and str(question.qname).rstrip(".") == NAME:
            for address in self.addresses:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


class _HostServer(ServerProcess):
    """`python -m serving` bound to one loopback address (`--host`) on a given gRPC port."""

    def __init__(self, host: str, port: int, *flags: str, log_path):
        super().__init__(f"--host={host}", *flags, log_path=log_path)
        self.host, self.port = host, port
        self.flags[0] = f"--port={port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        # The shared probe dials 127.0.0.1, which is the other server for 127.0.0.2.
        with GrpcTransport(f"{self.host}:{self.port}", retries=0, timeout=2) as probe:

            def ready() -> bool:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited:\n{self.log()}")
                try:
                    return probe.status("half")[0]["state"] == "AVAILABLE"
                except ClientError:
                    return False

            wait_for(ready, timeout, message=f"server on {self.host}:{self.port}")

    def predictions(self) -> int:
        """Successful requests for `half`, from the server's own Prometheus page."""
        url = f"http://{self.host}:{self.rest_port}{METRICS_PATH}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        pattern = r':tensorflow:serving:request_count\{model_name="half",status="OK"\} (\S+)'
        match = re.search(pattern, text)
        return int(float(match.group(1))) if match else 0


def _shared_port() -> int:
    """A port free on both loopback addresses."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind((HOSTS[0], 0))
            port = first.getsockname()[1]
            try:
                second.bind((HOSTS[1], port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


class _Cluster:
    """Two servers of the known `half` model behind NAME (and each on a UNIX socket)."""

    def __init__(self, root, port: int, dns_port: int, names: _Names):
        self.root, self.port, self.names = root, port, names
        self.target = f"dns://127.0.0.1:{dns_port}/{NAME}:{port}"
        self.servers: list[_HostServer | None] = [None, None]

    def socket(self, index: int):
        return self.root / f"grpc-{index}.sock"

    def up(self, *indexes: int, flags: tuple[str, ...] = ()) -> list[_HostServer]:
        """Starts the servers at `indexes` that are not running (with `flags` added); returns
        them all, ready."""
        for index in indexes:
            server = self.servers[index]
            if server is None or server.process.poll() is not None:
                if server is not None:
                    server.stop()
                self.servers[index] = _HostServer(
                    HOSTS[index],
                    self.port,
                    f"--model_config_file={self.root / 'models.config'}",
                    f"--monitoring_config_file={self.root / 'monitoring.config'}",
                    f"--grpc_socket_path={self.socket(index)}",
                    "--file_system_poll_wait_seconds=0",
                    "--drain_seconds=2",
                    *flags,
                    log_path=self.root / f"server-{index}.log",
                ).start(wait=False)
        for index in indexes:
            self.servers[index].wait_ready()
        return [self.servers[index] for index in indexes]

    def stop(self) -> None:
        for server in self.servers:
            if server is not None:
                server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The two servers, started on first use, and the DNS server answering NAME."""
    from tests.known_models import write_known_model

    root = tmp_path_factory.mktemp("balancing")
    write_known_model(root / "models" / "half", 1, a=0.5, b=2.0)
    (root / "models.config").write_text(
        f'model_config_list {{ config {{ name: "half" base_path: "{root / "models" / "half"}" '
        'model_platform: "tensorflow" } }\n'
    )
    (root / "monitoring.config").write_text(
        f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
    )
    names = _Names(HOSTS)
    # Quiet about each query and answer; errors are still printed.
    dns = DNSServer(names, port=0, address="127.0.0.1", logger=DNSLogger("-request,-reply"))
    dns.start_thread()
    made = _Cluster(root, _shared_port(), dns.server.server_address[1], names)
    try:
        yield made
    finally:
        made.stop()
        dns.stop()


X = {"x": np.array([1.0, 2.0], F32)}


def _predict(transport: GrpcTransport) -> None:
    outputs, _ = transport.predict("half", X)
    assert outputs["y"].tolist() == [2.5, 3.0]


@pytest.mark.integration
def test_calls_spread_over_every_address_of_the_name(cluster):
    servers = cluster.up(0, 1)
    before = [server.predictions() for server in servers]
    with GrpcTransport(cluster.target, retries=0, timeout=20) as transport:
        for _ in range(40):
            _predict(transport)
    shares = [server.predictions() - start for server, start in zip(servers, before, strict=True)]
    # round_robin alternates once both connections are up; pick_first would give 40 and 0.
    assert sum(shares) == 40 and min(shares) >= 10, shares


@pytest.mark.integration
def test_the_command_line_takes_a_dns_target(cluster, capsys):
    cluster.up(0, 1)
    assert cli.main(["status", "half", "--server", cluster.target, "--timeout", "20"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer == [{"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}]


@pytest.mark.integration
def test_a_stopped_server_is_skipped(cluster):
    # Prepare: both servers take calls over one channel.
    kept, stopped = cluster.up(0, 1)
    with GrpcTransport(cluster.target, retries=0, timeout=20) as transport:
        for _ in range(10):
            _predict(transport)
        # Send: one server goes away (the name still lists it, as DNS may for a while).
        assert stopped.stop() == 0
        before = kept.predictions()
        # Verify: no call fails, with no retries to hide one, and the other server took all.
        for _ in range(20):
            _predict(transport)
    assert kept.predictions() - before == 20


@pytest.mark.integration
def test_a_status_read_is_retried_across_a_restart(cluster):
    """A read started while nothing listens succeeds once a server is back at the address.

    The address is server 0's UNIX socket: when server 0 stops, the path is gone; a second
    later, server 1's socket (already listening) is moved to that path, so the gap has a known
    length instead of a process start-up's.
    """
    first, second = cluster.up(0, 1)
    target = f"unix:{cluster.socket(0)}"
    with (
        GrpcTransport(target, retries=4, backoff=4.0, timeout=90) as retrying,
        GrpcTransport(target, retries=0, timeout=20) as once,
    ):
        assert retrying.status("half")[0]["state"] == "AVAILABLE"
        assert once.status("half")[0]["state"] == "AVAILABLE"
        assert first.stop() == 0
        # Without retries a read in the gap fails at once.
        with pytest.raises(ClientError) as caught:
            once.status("half")
        assert caught.value.code == "UNAVAILABLE"
        answers: list = []
        started = time.monotonic()
        reader = threading.Thread(target=lambda: answers.append(retrying.status("half")))
        reader.start()
        time.sleep(1.0)
        cluster.socket(1).replace(cluster.socket(0))
        reader.join(120)
        elapsed = time.monotonic() - started
    assert answers and answers[0][0]["state"] == "AVAILABLE", second.log()
    assert elapsed >= 1.0


@pytest.mark.slow
@pytest.mark.integration
def test_an_added_address_is_found_after_the_servers_connection_age(cluster):
    """gRPC resolves the name again only when a connection closes, at most every 30 s. Servers
    run with grpc.max_connection_age_ms close each connection after that age, so the client
    finds an address added to the name (a new pod) at its next resolution (~30 s here)."""
    for server in cluster.servers:
        if server is not None:
            server.stop()
    age = "--grpc_channel_arguments=grpc.max_connection_age_ms=2000"
    first, second = cluster.up(0, 1, flags=(age,))
    cluster.names.addresses[:] = HOSTS[:1]
    try:
        before = second.predictions()
        with GrpcTransport(cluster.target, timeout=20) as transport:
            _predict(transport)  # the name resolves to the first address only
            cluster.names.addresses[:] = HOSTS

            def reached() -> bool:
                _predict(transport)
                return second.predictions() > before

            wait_for(reached, timeout=90, interval=0.2, message="a call to the added address")
    finally:
        cluster.names.addresses[:] = HOSTS
        first.stop()
        second.stop()
