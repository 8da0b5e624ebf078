"""The served model's contract, rebuilt from GetModelMetadata and checked against ours."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from client.errors import ClientError
from common.contract import DEFAULT_SIGNATURE, Contract, model_contract

# Contract dtype names against the TF DataType names GetModelMetadata reports.
DTYPES = {
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "string": "DT_STRING",
}


def _shape(metadata: Mapping[str, Any], signature: str, side: str, alias: str) -> list[int]:
    try:
        return list(metadata["signatures"][signature][side][alias]["shape"])
    except KeyError:
        raise ClientError(
            "BAD_CONTRACT",
            f"model {metadata.get('name')!r} version {metadata.get('version')} has no {side[:-1]} "
            f"{alias!r} in signature {signature!r}; is it the model this client expects?",
        ) from None


def contract_from_metadata(model_kind: str, metadata: Mapping[str, Any]) -> Contract:
    """Builds the contract of a served model of kind `unet`, `localizer` or `generator`.

    The sizes (image side, latent size, number of classes) come from the served signature; the
    rest (names, dtypes, pre-processing) is the project's contract, and every signature the
    contract names is checked against the metadata, so a mismatched model fails loudly here
    instead of answering nonsense.

    Raises:
        ValueError: for a kind the contract registry does not know (the message lists them).
        ClientError: BAD_CONTRACT when the served signatures differ from the contract.
    """
    entry = model_contract(model_kind)
    contract = entry.served(lambda signature, side, alias: _shape(metadata, signature, side, alias))
    check(contract, metadata)
    # Only what this version serves: a signature newer than the version is not offered.
    served = metadata.get("signatures", {})
    return dataclasses.replace(
        contract, signatures=tuple(s for s in contract.signatures if s.name in served)
    )


def check(contract: Contract, metadata: Mapping[str, Any]) -> None:
    """The contract's signatures, inputs and outputs are served with its dtypes and shapes.

    `serving_default` must be served; a signature added to the contract after a version was
    exported may be missing from it (the client then takes another way), but a served one must
    match exactly.
    """
    served = metadata.get("signatures", {})
    for signature in contract.signatures:
        if signature.name not in served and signature.name != DEFAULT_SIGNATURE:
            continue
        if signature.name not in served:
            raise ClientError(
                "BAD_CONTRACT",
                f"served model {metadata.get('name')!r} lacks signature {signature.name!r} "
                f"(it has {', '.join(sorted(served))})",
            )
        for side, specs in (("inputs", signature.inputs), ("outputs", signature.outputs)):
            for spec in specs:
                info = served[signature.name][side].get(spec.name)
                want = DTYPES.get(spec.dtype, spec.dtype)
                if info is None or info["dtype"] != want:
                    got = "missing" if info is None else info["dtype"]
                    raise ClientError(
                        "BAD_CONTRACT",
                        f"{signature.name}.{side}.{spec.name}: expected {want}, served {got}",
                    )
                dims = [None if d < 0 else d for d in info["shape"]]
                if len(dims) != len(spec.shape) or any(
                    a is not None and b is not None and a != b
                    for a, b in zip(spec.shape, dims, strict=True)
                ):
                    raise ClientError(
                        "BAD_CONTRACT",
                        f"{signature.name}.{side}.{spec.name}: expected shape {spec.shape}, "
                        f"served {tuple(dims)}",
                    )
