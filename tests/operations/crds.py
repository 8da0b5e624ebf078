"""Custom resources checked against their CRD's schema, as the API server would check them.

kubernetes-validate knows only Kubernetes' own kinds, so each CRD a manifest uses is vendored in
schemas/ (schemas/README.md names its project, release and commit) and read here.

Example:
    crd = load_crd("keda.sh_scaledobjects.yaml", "ScaledObject")
    validator = crd_validator(crd, "v1alpha1")
    assert schema_errors(validator, manifest) == []
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def strict(schema):
    """The schema with undeclared fields refused, as `kubectl apply --validate=strict` does.

    Objects that list `properties` and allow nothing else get `additionalProperties: false`;
    maps (`additionalProperties` given) and `x-kubernetes-preserve-unknown-fields` stay open.
    """
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def _read(path: Path) -> str:
    """A vendored file's text; a very large CRD is stored gzipped, unchanged inside."""
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    return path.read_text()


@functools.cache
def _crds(file: str) -> tuple[dict, ...]:
    """The CRDs in schemas/`file`, parsed once per run (KServe's is ~2 MB of YAML); libyaml's
    parser when PyYAML has it, as it is several times faster."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    documents = yaml.load_all(_read(SCHEMAS / file), Loader=loader)
    return tuple(d for d in documents if d and d.get("kind") == "CustomResourceDefinition")


def load_crd(file: str, kind: str) -> dict:
    """The CustomResourceDefinition of `kind` in schemas/`file` (one file may hold several).

    Raises:
        LookupError: the file defines no CRD of that kind.

    The dict is shared between callers: read it, do not change it.
    """
    crds = _crds(file)
    matching = [c for c in crds if c["spec"]["names"]["kind"] == kind]
    if len(matching) != 1:
        kinds = sorted(c["spec"]["names"]["kind"] for c in crds)
        raise LookupError(f"{file} has no single CRD of kind {kind}; it has {kinds}")
    return matching[0]


def crd_validator(crd: dict, version: str) -> jsonschema.Draft7Validator:
    """A strict validator of the CRD's `version` (e.g. "v1beta1").

    Raises:
        LookupError: the CRD has no such version.
    """
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in versions:
        kind = crd["spec"]["names"]["kind"]
        raise LookupError(f"{kind} has no version {version}; it has {sorted(versions)}")
    schema = strict(versions[version]["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(validator: jsonschema.Draft7Validator, document: dict) -> list[str]:
    """Every schema violation in `document`, as `dotted.path: message`; [] when it is valid."""
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]
