"""Server-side batching of concurrent calls, after TF's SharedBatchScheduler + BatchingSession."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from serving.batching.options import BatchingOptions, validate
from serving.batching.tensors import check_outputs, merge_inputs, split_sizes, task_size
from serving.config.protos.batching_parameters_pb2 import BatchingParameters
from serving.errors import ServingError, invalid_argument, unavailable

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
BatchFn = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
# on_batch(key, batch_size, padded_size, queuing_latency_s of the batch's oldest task).
OnBatch = Callable[[Hashable, int, int, float], None]


class _Request:
    """One run() call: a latch, its parts' outputs and the first error."""

    __slots__ = ("done", "error", "fn", "parts", "remaining")

    def __init__(self, fn: BatchFn, n_parts: int):
        self.fn = fn
        self.done = threading.Lock()
        self.done.acquire()  # released once every part is finished
        self.parts: list[Outputs | None] = [None] * n_parts
        self.remaining = n_parts
        self.error: BaseException | None = None


@dataclass(slots=True)
class _Task:
    request: _Request
    index: int
    inputs: Mapping[str, np.ndarray]
    size: int
    enqueued: float


@dataclass(slots=True)
class _Batch:
    tasks: list[_Task]
    size: int = 0


class _Queue:
    """Per-key deque of batches; the back one is open, the others are closed."""

    __slots__ = ("batches", "in_flight", "key", "opened", "qkey")

    def __init__(self, key: Hashable, qkey: Hashable):
        self.key, self.qkey = key, qkey
        self.batches: collections.deque[_Batch] = collections.deque([_Batch([])])
        self.opened = 0.0  # when the open batch got its first task
        self.in_flight = 0

    def idle(self) -> bool:
        return self.in_flight == 0 and len(self.batches) == 1 and not self.batches[0].tasks


class BatchScheduler:
    """Merges concurrent run() calls with the same key into one call of their function.

    Queues (one per key) are served round-robin by `num_batch_threads` shared threads.
    """

    def __init__(self, params: BatchingParameters | None = None, on_batch: OnBatch | None = None):
        """Starts the batch threads.

        Args:
            params: batching parameters; None or unset fields take TF's defaults.
            on_batch: called after each batch with (key, batch_size, padded_size,
                queuing_latency_s), the latency being the wait of the batch's oldest task;
                e.g. to feed the batching_session metrics.

        Raises:
            ServingError: INVALID_ARGUMENT for settings TF Serving refuses.
        """
        self.options = BatchingOptions.from_proto(params)
        validate(self.options)
        self._on_batch = on_batch
        self._limit = self.options.max_execution_batch_size
        self._timeout = self.options.batch_timeout_micros / 1e6
        self._cv = threading.Condition()
        self._queues: dict[Hashable, _Queue] = {}
        self._next = 0  # round-robin position among the queues
        self._idle = 0  # batch threads waiting on the condition
        self._closing = False
        self._threads = [
            threading.Thread(
                target=self._work, name=f"{self.options.thread_pool_name}_{i}", daemon=True
            )
            for i in range(self.options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, key: Hashable, inputs: Mapping[str, np.ndarray], fn: BatchFn) -> Outputs:
        """Runs `fn` on this task batched with concurrent tasks of the same key; blocks.

        Args:
            key: what may share a batch, e.g. (model, version, signature, output names).
            inputs: input name to array, all with the same dim 0 (the task size).
            fn: runs a merged batch; must return arrays whose dim 0 is the batch size.

        Returns:
            This task's rows of every output.

        Raises:
            ServingError: TF's batching errors, or the error `fn` raised for the batch.
        """
        inputs = {name: np.asarray(value) for name, value in inputs.items()}
        size = task_size(inputs)
        if size > self.options.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self.options.max_batch_size}"
            )
        qkey = (key, tuple(sorted(inputs)))  # TF keys queues by the tensor signature
        with self._cv:
            if self._closing:
                raise unavailable("The batch scheduler is closed")
            queue = self._queues.get(qkey)
            if queue is None:
                queue = self._queues[qkey] = _Queue(key, qkey)
            request = self._enqueue(queue, inputs, size, fn)
        request.done.acquire()
        if request.error is not None:
            if isinstance(request.error, ServingError):
                # A fresh copy per task: one instance raised in many threads mangles tracebacks.
                raise ServingError(request.error.code, request.error.message) from request.error
            raise request.error
        if len(request.parts) == 1:
            return request.parts[0]
        return {
            name: np.concatenate([part[name] for part in request.parts])
            for name in request.parts[0]
        }

    def close(self) -> None:
        """Runs everything already queued, then stops the batch threads."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def _enqueue(self, queue: _Queue, inputs: Outputs, size: int, fn: BatchFn) -> _Request:
        """Queue::Schedule: adds the task (or its split parts) to the queue's batches."""
        opts, limit, batches = self.options, self._limit, queue.batches
        room = limit - batches[-1].size
        if opts.enable_large_batch_splitting:
            capacity = (opts.max_enqueued_batches - len(batches)) * limit + room
            if size > capacity:
                raise unavailable(
                    "The batch scheduling queue to which this task was submitted is full; task "
                    f"size is {size} but scheduling capacity is only {capacity} "
                    f"(num_enqueued_batches={len(batches)}, max_enqueued_batches="
                    f"{opts.max_enqueued_batches}, open_batch_size={batches[-1].size}, "
                    f"max_execution_batch_size={limit})"
                )
        elif size > room and len(batches) >= opts.max_enqueued_batches:
            raise unavailable(
                "The batch scheduling queue to which this task was submitted is full; currently "
                f"{len(batches)} batches enqueued and max_enqueued_batches is "
                f"{opts.max_enqueued_batches}"
            )
        split = opts.enable_large_batch_splitting and size > room
        sizes = split_sizes(size, room, limit) if split else [size]
        request, now, start, wake = _Request(fn, len(sizes)), time.monotonic(), 0, False
        for index, n in enumerate(sizes):
            part = (
                inputs if len(sizes) == 1 else {k: v[start : start + n] for k, v in inputs.items()}
            )
            start += n
            if batches[-1].size + n > limit:
                batches.append(_Batch([]))
            if not batches[-1].tasks:
                queue.opened, wake = now, True  # a new deadline, or a closed batch behind it
            batches[-1].tasks.append(_Task(request, index, part, n, now))
            batches[-1].size += n
        if wake or batches[-1].size >= limit:
            self._cv.notify()
        return request

    def _take(self, now: float) -> tuple[_Queue, _Batch] | None:
        """Round-robin: the next closed batch, or an open one that is full or timed out."""
        queues = list(self._queues.values())
        for i in range(len(queues)):
            queue = queues[(self._next + i) % len(queues)]
            batches = queue.batches
            if len(batches) == 1:
                open_batch = batches[0]
                if not open_batch.tasks or not (
                    self._closing
                    or open_batch.size >= self._limit
                    or now >= queue.opened + self._timeout
                ):
                    continue
                batches.append(_Batch([]))
            self._next = (self._next + i + 1) % len(queues)
            queue.in_flight += 1
            return queue, batches.popleft()
        return None

    def _pending(self) -> bool:
        return any(len(q.batches) > 1 or q.batches[0].tasks for q in self._queues.values())

    def _work(self) -> None:
        """A batch thread: take a batch (waiting for one or a deadline), run it, repeat."""
        while True:
            with self._cv:
                while (item := self._take(time.monotonic())) is None:
                    if self._closing and not self._pending():
                        return
                    deadlines = [
                        q.opened + self._timeout
                        for q in self._queues.values()
                        if len(q.batches) == 1 and q.batches[0].tasks
                    ]
                    self._idle += 1
                    self._cv.wait(max(min(deadlines) - time.monotonic(), 0) if deadlines else None)
                    self._idle -= 1
                if self._idle and self._pending():
                    self._cv.notify()  # hand the remaining work and deadlines to an idle thread
            queue, batch = item
            try:
                self._process(queue, batch)
            finally:
                with self._cv:
                    queue.in_flight -= 1
                    if queue.idle() and self._queues.get(queue.qkey) is queue:
                        del self._queues[queue.qkey]  # queues of unloaded models must not pile up

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        """BatchingSession::ProcessBatch: merge, run once, hand each task its rows."""
        tasks, now = batch.tasks, time.monotonic()
        waited = now - min(t.enqueued for t in tasks)
        padded, outputs, error = batch.size, {}, None
        try:
            opts = self.options
            merged, padded = merge_inputs(
                [t.inputs for t in tasks],
                batch.size,
                opts.allowed_batch_sizes,
                opts.pad_variable_length_inputs,
            )
            outputs = check_outputs(tasks[0].request.fn(merged), padded)
        except BaseException as exc:  # every task of the batch must get it, or it hangs
            error = exc
        start = 0
        for task in tasks:
            rows = None if error else {k: v[start : start + task.size] for k, v in outputs.items()}
            start += task.size
            self._finish(task, rows, error)
        if self._on_batch is not None:
            try:
                self._on_batch(queue.key, batch.size, padded, waited)
            except Exception:
                log.exception("on_batch callback failed")

    def _finish(self, task: _Task, rows: Outputs | None, error: BaseException | None) -> None:
        request = task.request
        if len(request.parts) > 1:
            # Parts of one split task may finish on different batch threads at once.
            with self._cv:
                request.parts[task.index] = rows
                request.error = request.error or error
                request.remaining -= 1
                if request.remaining:
                    return
        else:
            request.parts[0], request.error = rows, error
        request.done.release()
