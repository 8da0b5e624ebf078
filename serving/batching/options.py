"""Batching settings: BatchingParameters with TF's defaults, and TF Serving's checks on them."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from serving.config.protos.batching_parameters_pb2 import BatchingParameters
from serving.errors import invalid_argument

# Wrapper fields of BatchingParameters that map 1:1 onto BatchingOptions.
_WRAPPED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
_WRAPPED += ("thread_pool_name", "enable_large_batch_splitting")


@dataclass(frozen=True)
class BatchingOptions:
    """Effective settings: BatchingParameters with TF's defaults filled in."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    thread_pool_name: str = "batch_threads"
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 1000
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_proto(cls, params: BatchingParameters | None) -> BatchingOptions:
        """Reads a BatchingParameters proto; unset wrapper fields keep the defaults.

        Args:
            params: the parsed `--batching_parameters_file`, or None for all defaults.

        Returns:
            The effective options (not yet validated).
        """
        if params is None:
            return cls()
        kw = {name: getattr(params, name).value for name in _WRAPPED if params.HasField(name)}
        split = kw.get("enable_large_batch_splitting", False)
        limit = kw.get("max_batch_size", cls.max_batch_size)
        kw["max_execution_batch_size"] = limit
        if split and params.HasField("max_execution_batch_size"):
            kw["max_execution_batch_size"] = params.max_execution_batch_size.value
        if not split and kw.get("max_enqueued_batches") == 0:
            # SharedBatchScheduler::AddQueue rewrites 0 to 1 for models that rely on it.
            kw["max_enqueued_batches"] = 1
        kw["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
        kw["pad_variable_length_inputs"] = params.pad_variable_length_inputs
        return cls(**kw)


def validate(params: BatchingParameters | BatchingOptions | None) -> None:
    """Rejects settings that TF Serving refuses when it wraps a session for batching.

    Args:
        params: a BatchingParameters proto, effective options, or None (defaults).

    Raises:
        ServingError: INVALID_ARGUMENT with TF's message text.
    """
    o = params if isinstance(params, BatchingOptions) else BatchingOptions.from_proto(params)
    sizes, limit, run_limit = (
        list(o.allowed_batch_sizes),
        o.max_batch_size,
        o.max_execution_batch_size,
    )
    threads, timeout, queued = o.num_batch_threads, o.batch_timeout_micros, o.max_enqueued_batches
    last = sizes[-1] if sizes else limit
    checks = [
        (threads < 1, f"num_batch_threads must be positive; was {threads}"),
        (
            last != limit,
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
            f"{last}; expected {limit}",
        ),
        # TF Serving checks neither sign nor order (b/161641195); bad entries would only
        # misbehave later, so they are refused up front.
        (any(s <= 0 for s in sizes), f"allowed_batch_sizes entries must be positive; got {sizes}"),
        (
            any(a >= b for a, b in itertools.pairwise(sizes)),
            "allowed_batch_sizes entries must be monotonically increasing",
        ),
        (limit <= 0, f"input_batch_size_limit must be positive; was {limit}"),
        (timeout < 0, f"batch_timeout_micros must be non-negative; was {timeout}"),
        (queued <= 0, f"max_enqueued_batches must be positive; was {queued}"),
        (run_limit <= 0, f"max_execution_batch_size must be positive; was {run_limit}"),
        # TF's StrCat glues the three values onto the sentence without separators.
        (
            o.enable_large_batch_splitting and limit < run_limit,
            "When enable_large_batch_splitting is true, input_batch_size_limit must be greater "
            f"than or equal to max_execution_batch_size.1{limit}{run_limit}",
        ),
    ]
    for failed, message in checks:
        if failed:
            raise invalid_argument(message)
