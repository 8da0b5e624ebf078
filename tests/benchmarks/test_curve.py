"""`python -m benchmarks.curve`: the knee rule, the step figures, the inputs, and real curves.

The curves run against the shared known-answer server (`half`: y = 0.5x + 2, with a `spin`
signature whose cost grows with `rounds`) over real gRPC and REST on loopback.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.curve import cli
from benchmarks.curve.inputs import load_request, random_inputs
from benchmarks.curve.openloop import arrival_offsets
from benchmarks.curve.steps import NOT_SENT, Request, find_knee, lag_warnings, summarise, table
from client.transports.served_contract import DTYPES
from common.contract import unet_contract

integration = pytest.mark.integration
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def step(rate, achieved, p99, offered=None):
    """A synthetic step: what find_knee reads of `summarise`'s output."""
    return {
        "rate_rps": rate,
        "offered_rps": rate if offered is None else offered,
        "achieved_rps": achieved,
        "p99_ms": p99,
    }


# -- the knee (pure) ---------------------------------------------------------------------------


def test_knee_is_the_last_step_that_keeps_its_rate():
    steps = [step(10, 10, 20), step(20, 19.5, 25), step(40, 31, 30)]  # 31 < 0.95 * 40
    assert find_knee(steps) == 1


def test_knee_ends_where_p99_passes_the_factor_of_the_lowest_steps():
    steps = [step(10, 10, 20), step(20, 20, 59), step(40, 40, 61)]  # 61 > 3 * 20
    assert find_knee(steps) == 1
    assert find_knee(steps, p99_factor=2.0) == 0


def test_knee_takes_the_least_p99_of_any_step_as_reference():
    # A noisy lowest step (p99 40 ms) would allow 120 ms; the least p99 (30 ms) allows 90.
    steps = [step(10, 10, 40), step(20, 20, 30), step(40, 40, 95), step(80, 80, 80)]
    assert find_knee(steps) == 1


def test_knee_compares_achieved_with_the_arrivals_offered_not_the_nominal_rate():
    # Poisson arrivals offered 36 of a nominal 40: all 36 answered is keeping up.
    steps = [step(10, 10, 20), step(40, 36, 25, offered=36)]
    assert find_knee(steps) == 1


def test_knee_is_the_leading_healthy_run_not_a_later_recovery():
    steps = [step(10, 10, 20), step(20, 12, 90), step(40, 40, 21)]
    assert find_knee(steps) == 0


def test_knee_takes_steps_in_rate_order_and_none_when_the_lowest_fails():
    assert find_knee([step(40, 20, 50), step(10, 10, 20)]) == 1
    assert find_knee([step(10, 0, None), step(20, 20, 10)]) is None
    assert find_knee([step(10, 5, 20)]) is None
    assert find_knee([]) is None


def test_summarise_counts_answers_inside_the_window_and_errors_by_code():
    requests = [
        Request(0.0, 0.001, 0.020, "OK"),
        Request(0.5, 0.502, 0.600, "OK"),
        Request(0.9, 0.903, 1.300, "OK"),  # answered after the 1 s window: latency, not rate
        Request(0.95, 0.95, 0.96, "NOT_FOUND"),
        Request(0.97, None, None, NOT_SENT),
    ]
    s = summarise(5.0, 0.0, 1.0, requests)
    assert s["rate_rps"] == 5.0 and s["offered_rps"] == 5.0 and s["sent_rps"] == 4.0
    assert s["achieved_rps"] == 2.0
    assert s["errors"] == {"NOT_FOUND": 1, NOT_SENT: 1}
    assert s["ok"] == 3
    assert s["p50_ms"] == pytest.approx(98.0)  # of 19, 98 and 397 ms
    assert s["lag_max_ms"] == pytest.approx(3.0)
    empty = summarise(5.0, 0.0, 1.0, [Request(0.0, 0.0, 0.1, "UNAVAILABLE")])
    assert empty["p99_ms"] is None and empty["achieved_rps"] == 0
    assert "UNAVAILABLE 1" in table([empty], None)


def test_lag_warning_names_the_step_whose_sender_lagged():
    slow = {"rate_rps": 300.0, "lag_p99_ms": 25.0}
    assert lag_warnings([{"rate_rps": 10.0, "lag_p99_ms": 1.0}, slow]) == [
        "sender lag p99 25.0 ms at 300 rps (over 10 ms): the sender, not only the server, "
        "limits this step"
    ]


def test_arrivals_constant_are_evenly_spaced_and_poisson_average_the_rate():
    constant = arrival_offsets(4.0, 2.0, "constant", np.random.default_rng(0))
    np.testing.assert_allclose(constant, np.arange(8) / 4.0)
    poisson = arrival_offsets(200.0, 50.0, "poisson", np.random.default_rng(0))
    # 10,000 expected arrivals: 5 standard deviations is 500.
    assert abs(len(poisson) - 10_000) < 500
    gaps = np.diff(poisson)
    assert np.all(gaps > 0) and poisson[-1] < 50.0
    assert np.std(gaps) == pytest.approx(np.mean(gaps), rel=0.05)  # exponential: sd = mean
    with pytest.raises(ValueError, match="valid: poisson, constant"):
        arrival_offsets(1.0, 1.0, "bursty", np.random.default_rng(0))


# -- inputs ------------------------------------------------------------------------------------


def metadata_of(contract) -> dict:
    """The metadata a server reports for a contract's signatures (as `Transport.metadata`)."""

    def info(spec):
        return {"dtype": DTYPES[spec.dtype], "shape": [-1 if d is None else d for d in spec.shape]}

    return {
        "name": contract.model_name,
        "version": 1,
        "signatures": {
            sig.name: {
                "method_name": "tensorflow/serving/predict",
                "inputs": {t.name: info(t) for t in sig.inputs},
                "outputs": {t.name: info(t) for t in sig.outputs},
            }
            for sig in contract.signatures
        },
    }


def test_random_inputs_follow_the_signature_and_send_encoded_images_as_images():
    metadata = metadata_of(unet_contract(64))
    floats = random_inputs("unet", metadata, "serving_default", batch=2)
    assert floats["image"].dtype == np.float32 and floats["image"].shape == (2, 64, 64, 3)
    assert floats["image"].min() >= 0 and floats["image"].max() < 1
    encoded = random_inputs("unet", metadata, "serve_bytes")["image_bytes"]
    assert encoded.shape == (1,)
    assert Image.open(io.BytesIO(encoded[0])).size == (64, 64)
    # The same string input on a model the contract registry does not know is plain text.
    other = random_inputs("someone_elses", metadata, "serve_bytes")["image_bytes"]
    assert other[0].isalpha() and len(other[0]) == 16


def test_random_inputs_refuse_what_they_cannot_build_with_the_way_out():
    metadata = {"signatures": {"a": {"inputs": {"t": {"dtype": "DT_FLOAT", "shape": None}}}}}
    with pytest.raises(ValueError, match="has no signature 'b'; it has: a"):
        random_inputs("m", metadata, "b")
    with pytest.raises(ValueError, match=r"unknown rank.*--request FILE\.npz"):
        random_inputs("m", metadata, "a")


def test_load_request_reads_npz_and_names_a_bad_file(tmp_path):
    path = tmp_path / "request.npz"
    np.savez(path, x=np.array([1.0], np.float32), rounds=np.array([3], np.int32))
    loaded = load_request(path)
    assert loaded["x"].dtype == np.float32 and loaded["rounds"].tolist() == [3]
    (tmp_path / "bad.npz").write_text("not an archive")
    with pytest.raises(ValueError, match=r"not a NumPy \.npz archive"):
        load_request(tmp_path / "bad.npz")


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--grpc", "127.0.0.1:1", "--model", "m", "--rates", "10,abc"], "--rates '10,abc'"),
        (["--grpc", "127.0.0.1:1", "--model", "m", "--rates", "20,10"], "rising"),
        (["--grpc", "127.0.0.1:1", "--model", "m", "--seconds", "0"], "--seconds"),
        (["--grpc", "localhost", "--model", "m"], "--grpc 'localhost'"),
        (["--grpc", "http://127.0.0.1:8500", "--model", "m"], "--rest takes URLs"),
        (["--rest", "ftp://host", "--model", "m"], "ftp://host"),
        (["--rest", "http://host", "--model", "m", "--ca", "ca.pem"], "https://"),
        (["--grpc", "127.0.0.1:1"], "--model"),
        (["--grpc", "127.0.0.1:1", "--model", "m", "--arrivals", "bursty"], "bursty"),
        (["--grpc", "127.0.0.1:1", "--model", "m", "--ca", "no-such-ca.pem"], "no-such-ca.pem"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_them(capsys, tmp_path, argv, names):
    assert cli.main([*argv, "--out", str(tmp_path / "c.json")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("python -m benchmarks.curve: error:")
    assert names in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("transport", ["--grpc", "--rest"])
def test_a_request_that_cannot_be_sent_exits_1_before_any_load(capsys, tmp_path, transport):
    request = tmp_path / "record.npz"
    np.savez(request, x=np.zeros(1, dtype=[("a", "f4")]))  # a record: no tensor type holds it
    where = "127.0.0.1:1" if transport == "--grpc" else "http://127.0.0.1:1"
    argv = [transport, where, "--model", "m", "--request", str(request)]
    assert cli.main([*argv, "--out", str(tmp_path / "c.json")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "('a', '<f4')" in err
    assert not (tmp_path / "c.json").exists()


# -- real curves -------------------------------------------------------------------------------


def target(server, transport: str) -> list[str]:
    if transport == "grpc":
        return ["--grpc", f"127.0.0.1:{server.port}"]
    return ["--rest", f"http://127.0.0.1:{server.rest_port}"]


def curve(tmp_path, capsys, *argv) -> tuple[int, dict | None, str]:
    out = tmp_path / "curve.json"
    code = cli.main([*argv, "--no-progress", "--out", str(out)])
    printed = capsys.readouterr()
    return code, json.loads(out.read_text()) if out.exists() else None, printed.out + printed.err


@integration
@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_two_step_curve_from_the_served_metadata(known_server, tmp_path, capsys, transport):
    # Prepare / Send: a random input built from half's metadata, two rates.
    code, result, printed = curve(
        tmp_path, capsys, *target(known_server, transport), "--model", "half",
        "--rates", "20,40", "--seconds", "1.5", "--warmup", "0.5",
    )  # fmt: skip
    # Verify
    assert code == 0, printed
    assert result["transport"] == transport and result["model"] == "half"
    assert [s["rate_rps"] for s in result["steps"]] == [20.0, 40.0]
    for s in result["steps"]:
        assert s["errors"] == {} and s["ok"] == s["requests"] > 0
        assert s["achieved_rps"] > 0 and s["sent_rps"] == s["offered_rps"]
        assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
        assert 0 <= s["lag_p50_ms"] <= s["lag_p99_ms"]
    assert "<- knee" in printed or result["knee"] is None
    assert (tmp_path / "curve.png").read_bytes().startswith(PNG_MAGIC)


@integration
@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_bad_model_name_is_counted_as_not_found(known_server, tmp_path, capsys, transport):
    request = tmp_path / "request.npz"
    np.savez(request, x=np.array([1.0], np.float32))
    code, result, printed = curve(
        tmp_path, capsys, *target(known_server, transport), "--model", "no_such_model",
        "--request", str(request), "--rates", "20", "--seconds", "1", "--warmup", "0",
    )  # fmt: skip
    assert code == 0, printed
    (only,) = result["steps"]
    assert only["errors"] == {"NOT_FOUND": only["requests"]} and only["requests"] > 0
    assert only["achieved_rps"] == 0 and only["p99_ms"] is None
    assert result["knee"] is None and "knee: none" in printed


@integration
def test_unreadable_metadata_exits_1_naming_the_model(known_server, capsys, tmp_path):
    code, result, printed = curve(
        tmp_path, capsys, *target(known_server, "grpc"), "--model", "no_such_model",
    )  # fmt: skip
    assert code == 1 and result is None
    assert "model 'no_such_model'" in printed and "NOT_FOUND" in printed
    assert "--request FILE.npz" in printed


@integration
def test_an_overloaded_server_shows_as_latency_and_a_lower_achieved_rate(
    known_server, tmp_path, capsys
):
    """The sender is open-loop: past the server's capacity it still sends at the offered rate.

    A closed-loop sender (the next request after the last answer) would send only as fast as
    the answers come, so its sent rate would fall with the achieved one.
    """
    request = tmp_path / "spin.npz"
    # About 55 ms of matrix products a request on this machine (500 rounds took 23 ms, and two
    # cores then answered 65 of 100 a second, too close to the bound): 100 a second is 5.5 s of
    # work a second, far past two cores, which can answer some 36.
    np.savez(request, x=np.array([1.0], np.float32), rounds=np.array([1200], np.int32))
    code, result, printed = curve(
        tmp_path, capsys, *target(known_server, "grpc"), "--model", "half",
        "--signature", "spin", "--request", str(request), "--rates", "2,100",
        "--seconds", "1", "--warmup", "0.5", "--arrivals", "constant", "--keep-going",
    )  # fmt: skip
    assert code == 0, printed
    low, high = result["steps"]
    assert high["sent_rps"] >= 0.9 * high["offered_rps"]
    assert high["achieved_rps"] < 0.6 * high["offered_rps"], printed
    assert high["p50_ms"] > 3 * low["p50_ms"], printed
    assert result["knee"]["index"] == 0


# -- TLS and kept-alive connections ------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """`half` behind TLS on both ports, closing REST connections idle for half a second."""
    from tests.known_models import write_known_model
    from tests.support import ServerProcess, TLSCertificates

    root = tmp_path_factory.mktemp("curve-tls")
    certs = TLSCertificates(root / "certs")
    write_known_model(root / "half", 1, a=0.5, b=2.0)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={root / 'half'}",
        f"--ssl_config_file={certs.ssl_config()}",
        "--rest_api_idle_timeout_seconds=0.5",
        log_path=root / "server.log",
        credentials=certs.credentials(),
    )
    with server:
        yield server, certs.path("server-ca.pem")


@integration
def test_grpc_curve_over_tls(tls_server, tmp_path, capsys):
    server, ca = tls_server
    code, result, printed = curve(
        tmp_path, capsys, "--grpc", f"127.0.0.1:{server.port}", "--ca", str(ca),
        "--model", "half", "--rates", "20", "--seconds", "1", "--warmup", "0",
    )  # fmt: skip
    assert code == 0, printed
    (only,) = result["steps"]
    assert only["errors"] == {} and only["ok"] == only["requests"] > 0


@integration
def test_rest_curve_over_https_survives_connections_the_server_closed_while_idle(
    tls_server, tmp_path, capsys
):
    """Requests 0.67 s apart find their kept-alive connection closed after 0.5 s idle: each
    must go over a new connection, not fail as UNAVAILABLE."""
    server, ca = tls_server
    code, result, printed = curve(
        tmp_path, capsys, "--rest", f"https://127.0.0.1:{server.rest_port}", "--ca", str(ca),
        "--model", "half", "--rates", "1.5", "--seconds", "3", "--warmup", "0",
        "--arrivals", "constant",
    )  # fmt: skip
    assert code == 0, printed
    (only,) = result["steps"]
    assert only["requests"] == 5 and only["errors"] == {} and only["ok"] == 5
