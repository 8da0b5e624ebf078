"""Shared test helpers without TensorFlow: the real `python -m serving` process on free loopback
ports, TLS certificates, polling, and a corrupt model version.

Client and common tests import this module, so it must not import TensorFlow (the server runs in
its own process); the known-answer SavedModels, which need TensorFlow to write, are in
`tests.known_models`. `test_slim.py` imports every client test module with TensorFlow blocked.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from common.wire import model_pb2, predict_pb2

ROOT = Path(__file__).resolve().parents[1]
# Client-side limits raised like a real client would, so large responses can be read.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.max_send_message_length", 2**31 - 1),
]


# The xdist group of the files that call the shared tiny-model server (`tiny_server` in
# tests/conftest.py): one worker runs them all, so they share one server (tests/scheduling.py).
TINY_SERVER = "tiny_server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """`python -m serving` with the given flags; `--port`/`--rest_api_port` are chosen here.

    Readiness is detected as TF Serving's own test harness does: a Predict for a model that
    does not exist answers with an error mentioning `Servable` once the server is up.

    Args:
        flags: `python -m serving` flags other than the two ports.
        log_path: Where the server's stdout and stderr go.
        rest: Whether to open a REST port.
        credentials: For a server started with `--ssl_config_file`, the channel credentials
            that the readiness probe (and `self.channel`) use; None for plaintext.
    """

    def __init__(
        self,
        *flags: str,
        log_path: Path,
        rest: bool = True,
        credentials: grpc.ChannelCredentials | None = None,
    ):
        self.credentials = credentials
        self.port = free_port()
        self.rest_port = free_port() if rest else 0
        self.flags = [f"--port={self.port}", *flags]
        if rest:
            self.flags.append(f"--rest_api_port={self.rest_port}")
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None

    def start(self, wait: bool = True, timeout: float = 120.0) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", *self.flags],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        target = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            channel = grpc.secure_channel(target, self.credentials, options=CHANNEL_OPTIONS)
        # The client's TensorFlow-free copy of PredictRequest: same wire format as TF Serving's.
        predict = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        )
        probe = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name="intentionally_missing_model")
        )
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                predict(probe, timeout=1.0)
            except grpc.RpcError as error:
                if "Servable" in (error.details() or ""):
                    self.channel = channel
                    return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = ""):
    """Polls `predicate` until it returns a truthy value; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")


# -- TLS -----------------------------------------------------------------------------------

# Names in the test server's certificate: clients dial 127.0.0.1, or check another name.
SERVER_NAMES = ("localhost", "127.0.0.1", "serving.internal")


class TLSCertificates:
    """Three CAs made at test time with trustme, and their certificates as PEM files.

    `server_ca` signs the server's certificate, `client_ca` the client's (it is the server's
    custom_ca under mutual TLS), and `rogue_ca` an intruder's certificate and nothing the
    server trusts. Files: server-ca.pem, client-ca.pem, rogue-ca.pem, client.pem, client.key,
    rogue-client.pem, rogue-client.key.
    """

    def __init__(self, folder: str | os.PathLike):
        import trustme

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server_ca, self.client_ca, self.rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
        self.server = self.server_ca.issue_cert(*SERVER_NAMES)
        for name, ca in (("server", self.server_ca), ("client", self.client_ca)):
            ca.cert_pem.write_to_path(str(self.path(f"{name}-ca.pem")))
        self.rogue_ca.cert_pem.write_to_path(str(self.path("rogue-ca.pem")))
        for name, ca in (("client", self.client_ca), ("rogue-client", self.rogue_ca)):
            leaf = ca.issue_cert(f"{name}.test")
            leaf.cert_chain_pems[0].write_to_path(str(self.path(f"{name}.pem")))
            leaf.private_key_pem.write_to_path(str(self.path(f"{name}.key")))

    def path(self, name: str) -> Path:
        return self.folder / name

    def ssl_config(
        self, *, client_verify: bool = False, custom_ca: bool = True, name: str = "ssl.config"
    ) -> Path:
        """Writes TF Serving's SSLConfig text file and returns its path.

        Args:
            client_verify: Require client certificates (mutual TLS).
            custom_ca: Name the client CA as custom_ca (needed by client_verify).
            name: The file name in the folder.
        """
        from google.protobuf import text_format

        from serving.config.protos import ssl_config_pb2

        config = ssl_config_pb2.SSLConfig(
            server_key=self.server.private_key_pem.bytes().decode(),
            server_cert=self.server.cert_chain_pems[0].bytes().decode(),
            custom_ca=self.client_ca.cert_pem.bytes().decode() if custom_ca else "",
            client_verify=client_verify,
        )
        path = self.path(name)
        path.write_text(text_format.MessageToString(config))
        return path

    def credentials(self, ca: str = "server", client: str | None = None) -> grpc.ChannelCredentials:
        """gRPC credentials trusting `<ca>-ca.pem`, showing `<client>.pem` if given."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.path(f"{ca}-ca.pem").read_bytes(),
            private_key=None if client is None else self.path(f"{client}.key").read_bytes(),
            certificate_chain=None if client is None else self.path(f"{client}.pem").read_bytes(),
        )


def staging_folder(base_path: str | os.PathLike, version: int) -> tuple[Path, Path]:
    """An empty folder to write a version into, and the version folder to rename it to.

    A non-numeric name is invisible to the version poller, so the rename publishes it whole.
    """
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}"
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp, base / str(version)


def corrupt_version(base_path: str | os.PathLike, version: int) -> Path:
    """Writes `<base_path>/<version>/saved_model.pb` full of garbage, so loading it must fail.

    Args:
        base_path: The model's base path (created if missing).
        version: The version number.

    Returns:
        The version directory.
    """
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / "saved_model.pb").write_bytes(b"\xff\xfe this is not a SavedModel \x00\x01" * 8)
    final = base / str(version)
    os.rename(tmp, final)
    return final


class SharedBuilds:
    """Folders built once per test run, however many pytest-xdist workers ask for them.

    The first worker to ask builds the folder under an exclusive lock (into a temporary name,
    renamed when done); the others wait on the lock, then use the same folder. A folder is
    shared, so a test must treat it as read-only: copy what it changes.

    Args:
        root: A folder of this run only (`tests/conftest.py` picks it).
    """

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, key: str, build: Callable[[Path], object]) -> Path:
        """`root/key`, made by `build(folder)` the first time it is asked for in this run."""
        self._build(key, build, wait=True)
        return self.root / key

    def folders(self, builds: dict[str, Callable[[Path], object]]) -> dict[str, Path]:
        """`folder` for several keys, made side by side with the other workers: first the
        folders no other worker is making (one by one), then a wait for the rest."""
        for key, build in builds.items():
            self._build(key, build, wait=False)
        return {key: self.folder(key, build) for key, build in builds.items()}

    def _build(self, key: str, build: Callable[[Path], object], wait: bool) -> None:
        done = self.root / key
        with open(self.root / f".{key}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker is making it
            if not done.is_dir():
                tmp = self.root / f".tmp-{key}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                build(tmp)
                os.rename(tmp, done)
