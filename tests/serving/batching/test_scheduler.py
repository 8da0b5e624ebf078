"""Server-side batching (serving/batching/) and the batching/monitoring config protos."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from google.protobuf import text_format

from serving.batching.scheduler import BatchingOptions, BatchScheduler, validate
from serving.config.protos import batching_parameters_pb2, monitoring_config_pb2
from serving.errors import ServingError, internal

BUSY = "The batch scheduling queue to which this task was submitted is full"


def params(**fields) -> batching_parameters_pb2.BatchingParameters:
    p = batching_parameters_pb2.BatchingParameters()
    for name, value in fields.items():
        if name == "allowed_batch_sizes":
            p.allowed_batch_sizes.extend(value)
        elif name == "pad_variable_length_inputs":
            p.pad_variable_length_inputs = value
        else:
            getattr(p, name).value = value
    return p


class Recorder:
    """fn = lambda d: {"y": d["x"] * 2}, remembering the batch sizes it was called with."""

    def __init__(self, block: threading.Event | None = None, error: Exception | None = None):
        self.sizes: list[int] = []
        self.inputs: list[dict[str, np.ndarray]] = []
        self.entered = threading.Event()
        self.block, self.error = block, error

    def __call__(self, inputs):
        self.sizes.append(len(inputs["x"]))
        self.inputs.append(inputs)
        self.entered.set()
        if self.block is not None:
            self.block.wait(5)
        if self.error is not None:
            raise self.error
        return {"y": inputs["x"] * 2}


@pytest.fixture
def make():
    schedulers = []

    def factory(on_batch=None, **fields):
        scheduler = BatchScheduler(params(**fields), on_batch=on_batch)
        schedulers.append(scheduler)
        return scheduler

    yield factory
    for scheduler in schedulers:
        scheduler.close()


def concurrently(scheduler, fn, arrays, key="k"):
    """Runs one task per array at once; returns (outputs or exception) per task."""
    results: list = [None] * len(arrays)
    start = threading.Barrier(len(arrays))

    def call(i):
        start.wait()
        try:
            results[i] = scheduler.run(key, {"x": arrays[i]}, fn)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(arrays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_concurrent_tasks_are_merged_and_each_caller_gets_its_rows(make):
    scheduler = make(max_batch_size=64, batch_timeout_micros=200_000, num_batch_threads=2)
    fn = Recorder()
    arrays = [np.full((i % 3 + 1, 2), i, dtype=np.float32) for i in range(8)]
    results = concurrently(scheduler, fn, arrays)
    assert max(fn.sizes) > 1 and sum(fn.sizes) == sum(len(a) for a in arrays)
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result["y"], array * 2)


def test_single_task_runs_alone_after_timeout(make):
    scheduler = make(batch_timeout_micros=100_000, num_batch_threads=1)
    fn = Recorder()
    started = time.monotonic()
    out = scheduler.run("k", {"x": np.arange(3)}, fn)
    assert time.monotonic() - started >= 0.09
    assert fn.sizes == [3]
    np.testing.assert_array_equal(out["y"], [0, 2, 4])


def test_zero_timeout_runs_at_once(make):
    scheduler = make(num_batch_threads=1)
    started = time.monotonic()
    scheduler.run("k", {"x": np.ones((1, 1))}, Recorder())
    assert time.monotonic() - started < 0.5


def test_full_batch_closes_without_waiting_and_max_batch_size_splits(make):
    scheduler = make(max_batch_size=4, batch_timeout_micros=3_000_000, num_batch_threads=1)
    fn = Recorder()
    started = time.monotonic()
    results = concurrently(scheduler, fn, [np.full((2,), i) for i in range(4)])
    assert time.monotonic() - started < 2.5
    assert fn.sizes == [4, 4]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [2 * i, 2 * i])


def test_task_larger_than_max_batch_size(make):
    scheduler = make(max_batch_size=4)
    with pytest.raises(ServingError) as info:
        scheduler.run("k", {"x": np.zeros((5, 1))}, Recorder())
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Task size 5 is larger than maximum input batch size 4"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "Batching Run() must have at least one input tensor"),
        ({"x": np.float32(1)}, "Batching Run() input tensors must have at least one dimension"),
        (
            {"x": np.zeros(2), "z": np.zeros(3)},
            "Batching Run() input tensors must have equal 0th-dimension size",
        ),
    ],
)
def test_bad_task_inputs(make, inputs, message):
    with pytest.raises(ServingError) as info:
        make().run("k", inputs, Recorder())
    assert (info.value.code, info.value.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_full_queue_is_unavailable(make):
    scheduler = make(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    release = threading.Event()
    fn = Recorder(block=release)
    first = threading.Thread(target=scheduler.run, args=("k", {"x": np.zeros(1)}, fn))
    first.start()
    assert fn.entered.wait(5)  # the only batch thread is now busy
    second = threading.Thread(target=scheduler.run, args=("k", {"x": np.zeros(1)}, fn))
    second.start()
    wait_until(lambda: any(q.batches[-1].tasks for q in scheduler._queues.values()))
    with pytest.raises(ServingError) as info:
        scheduler.run("k", {"x": np.zeros(1)}, fn)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message.startswith(BUSY)
    release.set()
    first.join(5)
    second.join(5)
    assert fn.sizes == [1, 1]


def test_allowed_batch_sizes_pad_with_first_row_and_cut_outputs(make):
    seen = []
    scheduler = make(
        max_batch_size=8, allowed_batch_sizes=[2, 4, 8], on_batch=lambda *args: seen.append(args)
    )
    fn = Recorder()
    out = scheduler.run("k", {"x": np.array([[5, 6], [7, 8], [9, 10]])}, fn)
    assert fn.sizes == [4]
    np.testing.assert_array_equal(fn.inputs[0]["x"][3], [5, 6])
    np.testing.assert_array_equal(out["y"], [[10, 12], [14, 16], [18, 20]])
    assert seen[0][:3] == ("k", 3, 4) and 0 <= seen[0][3] < 1


def test_different_shapes_without_padding_fail_the_batch(make):
    scheduler = make(max_batch_size=2, batch_timeout_micros=2_000_000)
    fn = Recorder()
    results = concurrently(scheduler, fn, [np.zeros((1, 2)), np.zeros((1, 3))])
    assert fn.sizes == []
    for result in results:
        assert isinstance(result, ServingError)
        assert result.code == grpc.StatusCode.FAILED_PRECONDITION
        assert result.message == (
            "Tensors with name 'x' from different tasks have different shapes and padding is "
            "turned off. Set pad_variable_length_inputs to true, or ensure that all tensors "
            "with the same name have equal dimensions starting with the first dim."
        )


def test_different_shapes_with_padding(make):
    scheduler = make(
        max_batch_size=2, batch_timeout_micros=2_000_000, pad_variable_length_inputs=True
    )
    fn = Recorder()
    short, long = np.array([[1, 2]]), np.array([[3, 4, 5]])
    results = concurrently(scheduler, fn, [short, long])
    assert fn.sizes == [2] and fn.inputs[0]["x"].shape == (2, 3)
    by_first = {int(r["y"][0, 0]): r["y"] for r in results}
    # TF pads with the tensor's own first element (batching_util.cc PadTensor).
    np.testing.assert_array_equal(by_first[2], [[2, 4, 2]])
    np.testing.assert_array_equal(by_first[6], [[6, 8, 10]])


def test_string_inputs_are_padded_too(make):
    scheduler = make(
        max_batch_size=2, batch_timeout_micros=2_000_000, pad_variable_length_inputs=True
    )
    seen = []

    def fn(inputs):
        seen.append(inputs["x"])
        return {"y": inputs["x"]}

    words = [np.array([[b"a"]], dtype=object), np.array([[b"b", b"c"]], dtype=object)]
    concurrently(scheduler, fn, words)
    assert sorted(map(tuple, seen[0].tolist())) == [(b"a", b"a"), (b"b", b"c")]


def test_fn_error_reaches_every_task(make):
    scheduler = make(max_batch_size=3, batch_timeout_micros=2_000_000)
    results = concurrently(scheduler, Recorder(error=internal("boom")), [np.zeros(1)] * 3)
    for result in results:
        assert isinstance(result, ServingError)
        assert (result.code, result.message) == (grpc.StatusCode.INTERNAL, "boom")


def test_plain_exception_propagates(make):
    with pytest.raises(ZeroDivisionError):
        make().run("k", {"x": np.zeros(1)}, lambda inputs: {"y": 1 / 0})


def test_output_without_batch_dim(make):
    with pytest.raises(ServingError) as info:
        make().run("k", {"x": np.zeros(2)}, lambda inputs: {"y": np.zeros(3)})
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message.startswith("Batched output tensor's 0th dimension does not equal")


def test_keys_are_never_merged(make):
    scheduler = make(max_batch_size=8, batch_timeout_micros=100_000)
    fns = {"a": Recorder(), "b": Recorder()}
    threads = [
        threading.Thread(target=scheduler.run, args=(k, {"x": np.zeros(1)}, fns[k])) for k in "abab"
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sum(fns["a"].sizes) == 2 and sum(fns["b"].sizes) == 2


def test_large_batch_splitting(make):
    scheduler = make(
        max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=4
    )
    fn = Recorder()
    out = scheduler.run("k", {"x": np.arange(6)}, fn)
    assert sorted(fn.sizes) == [2, 4]
    np.testing.assert_array_equal(out["y"], np.arange(6) * 2)


def test_close_drains_queued_tasks():
    scheduler = BatchScheduler(params(batch_timeout_micros=30_000_000, num_batch_threads=1))
    fn = Recorder()
    threads = [
        threading.Thread(target=scheduler.run, args=("k", {"x": np.zeros(1)}, fn)) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(len(q.batches[-1].tasks) for q in scheduler._queues.values()) == 2)
    started = time.monotonic()
    scheduler.close()
    assert time.monotonic() - started < 5 and fn.sizes == [2]
    with pytest.raises(ServingError) as info:
        scheduler.run("k", {"x": np.zeros(1)}, fn)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"max_batch_size": 128, "allowed_batch_sizes": [32, 64]},
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 64; "
            "expected 128",
        ),
        (
            {"allowed_batch_sizes": [32, 64]},
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 64; "
            "expected 1000",
        ),
        (
            {"max_batch_size": 64, "allowed_batch_sizes": [32, 16, 64]},
            "allowed_batch_sizes entries must be monotonically increasing",
        ),
        (
            {"max_batch_size": 64, "allowed_batch_sizes": [-1, 64]},
            "allowed_batch_sizes entries must be positive; got [-1, 64]",
        ),
        ({"num_batch_threads": 0}, "num_batch_threads must be positive; was 0"),
        ({"max_batch_size": 0}, "input_batch_size_limit must be positive; was 0"),
        ({"batch_timeout_micros": -1}, "batch_timeout_micros must be non-negative; was -1"),
        ({"max_enqueued_batches": -2}, "max_enqueued_batches must be positive; was -2"),
        (
            {
                "max_batch_size": 4,
                "enable_large_batch_splitting": True,
                "max_execution_batch_size": 8,
            },
            "When enable_large_batch_splitting is true, input_batch_size_limit must be greater "
            "than or equal to max_execution_batch_size.148",
        ),
    ],
)
def test_validation_texts(fields, message):
    with pytest.raises(ServingError) as info:
        validate(params(**fields))
    assert (info.value.code, info.value.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_defaults_and_zero_enqueued_batches():
    validate(None)
    options = BatchingOptions.from_proto(params(max_enqueued_batches=0))
    assert (options.max_batch_size, options.batch_timeout_micros) == (1000, 0)
    assert options.max_enqueued_batches == 1  # SharedBatchScheduler::AddQueue's rewrite


def test_spec_text_protos_parse():
    batching = text_format.Parse(
        """
        max_batch_size { value: 128 }
        batch_timeout_micros { value: 0 }
        max_enqueued_batches { value: 1000000 }
        num_batch_threads { value: 8 }
        thread_pool_name { value: "pool" }
        allowed_batch_sizes: 32  allowed_batch_sizes: 64  allowed_batch_sizes: 128
        pad_variable_length_inputs: true
        enable_large_batch_splitting { value: true }  max_execution_batch_size { value: 64 }
        """,
        batching_parameters_pb2.BatchingParameters(),
    )
    validate(batching)
    options = BatchingOptions.from_proto(batching)
    assert options.max_batch_size == 128 and options.batch_timeout_micros == 0
    assert options.allowed_batch_sizes == (32, 64, 128) and options.max_execution_batch_size == 64
    numbers = {f.name: f.number for f in batching.DESCRIPTOR.fields}
    assert numbers == {
        "max_batch_size": 1,
        "batch_timeout_micros": 2,
        "max_enqueued_batches": 3,
        "num_batch_threads": 4,
        "thread_pool_name": 5,
        "allowed_batch_sizes": 6,
        "pad_variable_length_inputs": 7,
        "enable_large_batch_splitting": 8,
        "max_execution_batch_size": 9,
    }
    assert batching.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    monitoring = text_format.Parse(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }',
        monitoring_config_pb2.MonitoringConfig(),
    )
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    assert monitoring.DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"
