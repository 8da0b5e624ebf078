"""`verify --replay DIR`: logged requests as the golden set.

The folder reader on real TFRecord files (the framing TensorFlow writes), then the real server
logging real client traffic to its `logging_config` prefix, and `python -m serving.rollout verify
--replay` on those logs: an identical canary passes, an untrained one fails the agreement gate.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from client.canary.comparisons import COMPARISONS
from common.contract import generator_contract
from serving.rollout import golden as gold
from serving.tensors import from_numpy
from tests.known_models import tf


def logged(model: str, value: float, batch: int = 1) -> bytes:
    """A PredictionLog as the server writes it: a generator request of `batch` latents."""
    record = prediction_log_pb2.PredictionLog()
    record.log_metadata.model_spec.name = model
    request = record.predict_log.request
    request.model_spec.name = model
    request.inputs["z"].CopyFrom(from_numpy(np.full((batch, 4), value, np.float32)))
    record.predict_log.response.CopyFrom(predict_pb2.PredictResponse())
    return record.SerializeToString()


def write_log(path, *records: bytes, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def values(golden) -> list[float]:
    return [float(r.inputs["z"].float_val[0]) for r in golden.requests]


def test_the_newest_requests_of_the_model_across_files_oldest_first(tmp_path):
    write_log(
        tmp_path / "a" / "gen.000000.tfrecord", *(logged("gen", i) for i in range(3)), mtime=1
    )
    write_log(
        tmp_path / "b" / "gen.000001.tfrecord",
        logged("gen", 3),
        logged("other", 99),
        logged("gen", 4),
        mtime=2,
    )
    (tmp_path / "notes.txt").write_text("not a log")
    assert values(gold.load_replay(tmp_path, "gen")) == [0, 1, 2, 3, 4]
    assert values(gold.load_replay(tmp_path, "gen", limit=3)) == [2, 3, 4]
    golden = gold.load_replay(tmp_path, "gen", limit=2)
    assert values(golden) == [3, 4] and golden.source == f"replay {tmp_path}"


def test_requests_become_items_one_per_batch_entry():
    golden = gold.GoldenSet("replay x")
    golden.requests = [
        prediction_log_pb2.PredictionLog.FromString(logged("gen", v, batch=2)).predict_log.request
        for v in (0.5, 1.5)
    ]
    gold.resolve_replay(golden, COMPARISONS["generator"], generator_contract(latent_dim=4))
    assert [item.name for item in golden.items] == [
        "logged serving_default.z #0.0",
        "logged serving_default.z #0.1",
        "logged serving_default.z #1.0",
        "logged serving_default.z #1.1",
    ]
    assert all(item.truth is None and not item.warmup for item in golden.items)
    assert golden.items[2].value.tolist() == [1.5] * 4


def test_refusals_name_the_folder_and_what_is_wrong(tmp_path):
    with pytest.raises(gold.GoldenError, match="does not exist or is not a folder"):
        gold.load_replay(tmp_path / "missing", "gen")
    with pytest.raises(gold.GoldenError, match=r"holds no request logs \(\*\.tfrecord files"):
        gold.load_replay(tmp_path, "gen")
    write_log(
        tmp_path / "x.000000.tfrecord", logged("unet", 1), logged("unet", 2), logged("loc", 3)
    )
    with pytest.raises(gold.GoldenError) as caught:
        gold.load_replay(tmp_path, "gen")
    assert "no logged Predict request for model gen; records found for: loc (1), unet (2)" in str(
        caught.value
    )
    (tmp_path / "y.000000.tfrecord").write_bytes(b"\x07" * 64)
    os.utime(tmp_path / "x.000000.tfrecord", (1, 1))
    with pytest.raises(gold.GoldenError, match=r"y\.000000\.tfrecord is corrupt: "):
        gold.load_replay(tmp_path, "unet")


def test_a_truncated_last_record_is_left_out_only_in_the_newest_file(tmp_path):
    old, new = tmp_path / "g.000000.tfrecord", tmp_path / "g.000001.tfrecord"
    write_log(old, logged("gen", 1), mtime=1)
    write_log(new, logged("gen", 2), logged("gen", 3), mtime=2)
    with new.open("r+b") as handle:  # the writer was inside its last record
        handle.truncate(new.stat().st_size - 5)
    os.utime(new, (2, 2))
    golden = gold.load_replay(tmp_path, "gen")
    assert values(golden) == [1, 2]
    assert any("truncated last record of g.000001.tfrecord" in note for note in golden.notes)
    shutil.copy(new, old)
    os.utime(old, (1, 1))
    with pytest.raises(gold.GoldenError, match=r"g\.000000\.tfrecord is corrupt: truncated"):
        gold.load_replay(tmp_path, "gen")


# -- on the real server: logged client traffic, then verify --replay --------------------------

CONFIG = """
model_config_list {{
  config {{
    name: "unet" base_path: "{base}/unet" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
    logging_config {{
      log_collector_config {{ type: "tfrecord" filename_prefix: "{logs}/unet" }}
      sampling_config {{ sampling_rate: 1.0 }}
    }}
  }}
}}
"""


@pytest.mark.integration
@pytest.mark.e2e
def test_verify_replay_passes_an_identical_canary_and_fails_an_untrained_one(
    tmp_path, capsys, shared_builds
):
    from client.api import ServingClient
    from serving.rollout import cli as rollout
    from tests.serving.rollout.unet_server import write_versions
    from tests.support import ServerProcess, wait_for

    logs = tmp_path / "logs"
    logs.mkdir()
    # The slim run that ships (no training here) as 1, its copy as 2, untrained as 3.
    base = write_versions(tmp_path, shared_builds, untrained=3)
    config = tmp_path / "models.config"
    config.write_text(CONFIG.format(base=base, logs=logs))
    rng = np.random.default_rng(7)
    server = ServerProcess(
        f"--model_config_file={config}",
        "--allow_version_labels_for_unavailable_models",
        log_path=tmp_path / "server.log",
    )
    with server:
        target = f"127.0.0.1:{server.port}"
        # Real traffic: 12 pictures of different sizes, over gRPC, as an application sends them.
        with ServingClient.grpc(target, timeout=30) as client:
            for i in range(12):
                image = rng.integers(0, 256, (40 + 4 * i, 56, 3), dtype=np.uint8)
                client.segment(image, version_label="stable")
        traffic = tmp_path / "traffic"

        def all_logged() -> bool:  # the writer thread may still be flushing
            try:
                return len(gold.load_replay(logs, "unet").requests) == 12
            except gold.GoldenError:
                return False

        wait_for(all_logged, message="12 logged requests")
        shutil.copytree(logs, traffic)  # a snapshot: verify's own requests are logged too
        tool = ["--server", target, "--config", str(config), "--timeout", "60"]
        # One round, latency gates out of reach: agreement on the logged traffic is what is tested
        # here (the latency gates are tested in test_gates_e2e).
        gates = tmp_path / "gates.toml"
        gates.write_text("[service]\nrequests = 1\np50_ratio = 1000\np99_ratio = 1000\n")

        def run(*argv: str) -> tuple[int, str, str]:
            code = rollout.main([*tool, *argv])
            out, err = capsys.readouterr()
            return code, out, err

        assert run("canary", "unet", "2")[0] == 0
        code, out, err = run("verify", "unet", "--replay", str(traffic), "--gates", str(gates))
        assert code == 0, out + err
        assert f"replay {traffic}: 12 items, 0 with truth" in out
        assert "12 logged Predict requests" in out
        assert "no ground truth in the golden set" in out  # real traffic has no truth
        assert run("abort", "unet")[0] == 0

        assert run("canary", "unet", "3")[0] == 0
        code, out, err = run("verify", "unet", "--replay", str(traffic), "--gates", str(gates))
        assert code == 1 and "fails gate agreement dice" in err, out + err

        # Refused before any request, with the folder named.
        (tmp_path / "empty").mkdir()
        code, _, err = run("verify", "unet", "--replay", str(tmp_path / "empty"))
        assert code == 2 and "holds no request logs" in err
        code, _, err = run("verify", "unet", "--replay", str(traffic), "--golden", str(traffic))
        assert code == 2 and "--golden and --replay both name the golden set" in err
