"""Tensor helpers of server-side batching: task sizes, splitting, merging with padding, outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from serving.errors import failed_precondition, internal, invalid_argument

_SHAPE_MISMATCH = (
    "Tensors with name '{}' from different tasks have different shapes and padding is turned "
    "off. Set pad_variable_length_inputs to true, or ensure that all tensors with the same name "
    "have equal dimensions starting with the first dim."
)


def task_size(inputs: Mapping[str, np.ndarray]) -> int:
    """Dim 0 shared by all inputs (BatchingSession::ComputeInputSize), else INVALID_ARGUMENT."""
    if not inputs:
        raise invalid_argument("Batching Run() must have at least one input tensor")
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def split_sizes(size: int, room: int, limit: int) -> list[int]:
    """Chunks of a split task: first fills the open batch's room, then `limit` each."""
    head = min(size, room if room > 0 else limit)
    rest = size - head
    return [head] + [limit] * (rest // limit) + ([rest % limit] if rest % limit else [])


def _round_up(allowed: tuple[int, ...], size: int) -> int:
    """RoundToLowestAllowedBatchSize: the first allowed size >= size, else size itself."""
    return next((s for s in allowed if s >= size), size) if size else size


def _pad_tails(name: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Pads non-batch dims up to the batch's largest, with each tensor's first element as TF."""
    ndim = arrays[0].ndim
    if any(a.ndim != ndim for a in arrays):
        raise failed_precondition(_SHAPE_MISMATCH.format(name))
    if ndim > 6:
        raise invalid_argument("Only tensors with rank from 1 to 6 can be padded.")
    tail = tuple(max(a.shape[d] for a in arrays) for d in range(1, ndim))
    padded = []
    for a in arrays:
        shape = (a.shape[0], *tail)
        if a.shape == shape or a.size == 0 == np.prod(shape):
            padded.append(a.reshape(shape))
            continue
        if a.size == 0:
            raise invalid_argument("Got empty tensor in batch of non-empty tensors.")
        out = np.full(shape, a.flat[0], dtype=a.dtype)
        out[tuple(slice(0, n) for n in a.shape)] = a
        padded.append(out)
    return padded


def merge_inputs(
    inputs: Sequence[Mapping[str, np.ndarray]],
    size: int,
    allowed_batch_sizes: tuple[int, ...],
    pad_variable_length_inputs: bool,
) -> tuple[dict[str, np.ndarray], int]:
    """Concatenates inputs along dim 0, padded (BatchingSession::MergeInputTensors).

    Args:
        inputs: each task's input name to array, in batch order.
        size: the sum of the tasks' sizes.
        allowed_batch_sizes: the batch is padded up to the first of these >= size, if any.
        pad_variable_length_inputs: pad non-batch dims up to the largest instead of refusing.

    Returns:
        (input name to merged array, padded batch size).

    Raises:
        ServingError: TF's texts for shapes or dtypes that cannot be merged.
    """
    padded = _round_up(allowed_batch_sizes, size)
    merged = {}
    for name in inputs[0]:
        arrays = [task[name] for task in inputs]
        if pad_variable_length_inputs:
            arrays = _pad_tails(name, arrays)
        elif any(a.shape[1:] != arrays[0].shape[1:] for a in arrays):
            raise failed_precondition(_SHAPE_MISMATCH.format(name))
        kind = arrays[0].dtype
        if any(a.dtype != kind and not (a.dtype.kind == kind.kind in "SU") for a in arrays):
            raise internal(
                f"Tensor concat operation failed: tensors with name '{name}' from "
                "different tasks have different dtypes"
            )
        if padded > size:
            # Padding rows repeat the first row of the last task with rows, as TF does.
            donor = next(a for a in reversed(arrays) if a.shape[0])
            arrays.append(np.repeat(donor[:1], padded - size, axis=0))
        merged[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return merged, padded


def check_outputs(raw: Mapping[str, np.ndarray], padded: int) -> dict[str, np.ndarray]:
    """Outputs must be batched like the inputs (BatchingSession::SplitOutputTensors)."""
    outputs = {}
    for name, value in raw.items():
        array = np.asarray(value)
        if array.ndim == 0:
            raise failed_precondition("Batched output tensor has 0 dimensions")
        if array.shape[0] != padded:
            raise failed_precondition(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                "dimension sizes of the input tensors"
            )
        outputs[name] = array
    return outputs
