"""serving/servables/saved_model.py: loading known-answer SavedModels and running them."""

from __future__ import annotations

import re
import threading

import grpc
import numpy as np
import pytest

from serving.errors import ServingError
from serving.servables.saved_model import from_op_error, grpc_code, load_servable
from tests.known_models import tf, write_known_model
from tests.support import corrupt_version

F32 = np.float32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_known_model(tmp_path_factory.mktemp("known") / "m", 1, a=0.5, b=2.0, warmup="good")


@pytest.fixture(scope="module")
def servable(model_dir):
    return load_servable("m", 1, model_dir)


def test_identity(servable, model_dir):
    assert (servable.name, servable.version, servable.path) == ("m", 1, model_dir)
    assert {"serving_default", "two_inputs", "echo_bytes", "spin", "matrix"} <= set(
        servable.signature_defs
    )
    spin = servable.signature_defs["spin"]
    assert set(spin.inputs) == {"x", "rounds"} and set(spin.outputs) == {"y"}
    assert spin.inputs["rounds"].dtype == tf.int32.as_datatype_enum


def test_known_answers(servable):
    y = servable.run("serving_default", {"x": np.array([0.0, 1.0, 4.0], F32)})
    np.testing.assert_array_equal(y["y"], np.array([2.0, 2.5, 4.0], F32))
    assert y["y"].dtype == F32
    out = servable.run("two_inputs", {"a": np.array([3.0], F32), "b": np.array([1.0], F32)})
    assert out["sum"].tolist() == [4.0] and out["diff"].tolist() == [2.0]
    spun = servable.run("spin", {"x": np.array([2.0], F32), "rounds": np.array([50], np.int32)})
    assert spun["y"].tolist() == [3.0]
    rows = servable.run("matrix", {"m": np.array([[1, 2, 3], [4, 5, 6]], F32)})
    assert rows["row_sum"].tolist() == [6.0, 15.0]


def test_strings_round_trip_as_bytes(servable):
    out = servable.run("echo_bytes", {"text": np.array([b"ab", b"\xff\x00z"], dtype=object)})
    assert out["text_bytes"].dtype == object
    assert out["text_bytes"].tolist() == [b"ab", b"\xff\x00z"]
    assert out["length"].tolist() == [2, 3] and out["length"].dtype == np.int32


def test_unknown_signature(servable):
    with pytest.raises(ServingError) as caught:
        servable.run("nope", {})
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == 'Serving signature key "nope" not found.'


def test_wrong_dtype_is_refused_not_cast(servable):
    with pytest.raises(ServingError) as caught:
        servable.run("serving_default", {"x": np.array([1.0], np.float64)})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "Expects arg[0] to be float but double is provided"


def test_shapes_are_the_sessions_to_decide(servable):
    # TF Serving feeds tensors as they come: a [None, 3] placeholder takes a [2, 4] matrix when
    # the graph can compute on it, and a [None] input takes a matrix.
    rows = servable.run("matrix", {"m": np.ones((2, 4), F32)})
    assert rows["row_sum"].tolist() == [4.0, 4.0]
    y = servable.run("serving_default", {"x": np.ones((2, 2), F32)})
    assert y["y"].tolist() == [[2.5, 2.5], [2.5, 2.5]]


def test_what_the_graph_refuses_is_the_runtimes_error(servable):
    with pytest.raises(ServingError) as caught:
        servable.run("two_inputs", {"a": np.ones((2,), F32), "b": np.ones((3,), F32)})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Incompatible shapes: [2] vs. [3]" in caught.value.message


def test_unknown_input_alias_is_invalid_argument(servable):
    with pytest.raises(ServingError) as caught:
        servable.run("serving_default", {"wrong": np.ones((2,), F32)})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "wrong" in caught.value.message


def test_output_subset(servable):
    out = servable.run(
        "two_inputs", {"a": np.array([3.0], F32), "b": np.array([1.0], F32)}, ["diff"]
    )
    assert out == {"diff": np.array([2.0], F32)}


def test_object_graph_only_variables_fail_as_under_tf_serving(tmp_path):
    # A Keras 3 model saved through a tf.Module that tracks only the model: TF2's object-graph
    # loader restores it, but the MetaGraph's restore op never names the variables, so the
    # session loader (TF Serving's) fails every run. The export tracks them (export/publish.py).
    import keras

    inputs = keras.Input((2,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs))
    module = tf.Module()
    module.model = model
    fn = tf.function(
        lambda x: {"y": model(x)}, input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")]
    )
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": fn})
    broken = load_servable("m", 1, tmp_path / "1")
    with pytest.raises(ServingError) as caught:
        broken.run("serving_default", {"x": np.ones((1, 2), F32)})
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    # Keras may uniquify the layer's name when other tests built a "dense" before this one.
    assert re.search(r"Could not find variable dense(_\d+)?/(kernel|bias)", caught.value.message)
    broken.close()


def test_concurrent_runs(servable):
    errors, results = [], {}

    def work(i: int) -> None:
        try:
            for _ in range(20):
                x = np.full((3,), float(i), F32)
                results[i] = servable.run("serving_default", {"x": x})["y"].tolist()
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == {i: [0.5 * i + 2.0] * 3 for i in range(8)}


def test_close_stops_runs(model_dir):
    own = load_servable("m", 1, model_dir)
    own.close()
    with pytest.raises(ServingError):
        own.run("serving_default", {"x": np.array([1.0], F32)})


def test_missing_saved_model(tmp_path):
    with pytest.raises(ServingError) as caught:
        load_servable("m", 3, tmp_path)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.message == (
        f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {tmp_path}"
    )


def test_corrupt_saved_model(tmp_path):
    with pytest.raises(ServingError) as caught:
        load_servable("m", 2, corrupt_version(tmp_path, 2))
    assert caught.value.code == grpc.StatusCode.DATA_LOSS


def test_wrong_tags(model_dir):
    with pytest.raises(ServingError) as caught:
        load_servable("m", 1, model_dir, tags=("serve", "gpu"))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.message.startswith(
        "Could not find meta graph def matching supplied tags: { serve gpu }."
    )


def test_error_codes_map_by_number():
    assert grpc_code(3) == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_code(999) == grpc.StatusCode.UNKNOWN
    error = from_op_error(tf.errors.ResourceExhaustedError(None, None, "too big"))
    assert (error.code, error.message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too big")
    assert from_op_error(RuntimeError("boom")).code == grpc.StatusCode.UNKNOWN
