"""Config checks of `model_servers/server_core.cc`: pure functions over the config protos."""

from __future__ import annotations

from serving.errors import failed_precondition, invalid_argument

TENSORFLOW_PLATFORM = "tensorflow"
_MODEL_TYPE_TENSORFLOW = 1  # ModelType.TENSORFLOW


def model_platform(model_config) -> str:
    """The platform of a `ModelConfig`, honouring the deprecated `model_type` field.

    Raises:
        ServingError: INVALID_ARGUMENT when both or neither field is set, or model_type is OTHER.
    """
    if model_config.model_type:
        if model_config.model_platform:
            raise invalid_argument(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model_config.name}"
            )
        if model_config.model_type != _MODEL_TYPE_TENSORFLOW:
            raise invalid_argument(
                f"ModelServerConfig::model_type choice {model_config.model_type} not supported."
            )
        return TENSORFLOW_PLATFORM
    if not model_config.model_platform:
        raise invalid_argument(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model_config.name}"
        )
    return model_config.model_platform


def is_relative_uri(uri: str) -> bool:
    """`UriIsRelativePath`: no scheme://host and not an absolute path."""
    return "://" not in uri and not uri.startswith("/")


def validate_config(config, old_config=None) -> None:
    """Checks a `ModelServerConfig` before anything is applied, with TF Serving's texts.

    Args:
        config: The new `ModelServerConfig`.
        old_config: The config in force, or None on the first call.

    Raises:
        ServingError: INVALID_ARGUMENT for a config that TF Serving would refuse.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise invalid_argument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported"
        )
    models = config.model_config_list.config
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
    for model in models:
        if is_relative_uri(model.base_path):
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
    if old_config is not None:
        old = {m.name: model_platform(m) for m in old_config.model_config_list.config}
        for model in models:
            platform = model_platform(model)
            if model.name in old and old[model.name] != platform:
                raise invalid_argument(
                    f"Illegal to change a model's platform. For model {model.name} platform was "
                    f"{old[model.name]} and new platform requested is {platform}"
                )
    for model in models:
        platform = model_platform(model)
        if platform != TENSORFLOW_PLATFORM:
            raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")


def label_map(
    config,
    available: dict[str, set[int]],
    old_labels: dict[str, dict[str, int]],
    allow_unavailable: bool = False,
) -> dict[str, dict[str, int]]:
    """Builds model -> {label: version} from a config (`UpdateModelVersionLabelMap`).

    Args:
        config: The new `ModelServerConfig` (already validated).
        available: Model -> versions that are AVAILABLE right now.
        old_labels: The label map in force.
        allow_unavailable: `--allow_version_labels_for_unavailable_models`: a label may point at
            a version that is not available, unless it already points at a different version.

    Returns:
        The new label map.

    Raises:
        ServingError: FAILED_PRECONDITION for a label that must not point at its version.
    """
    labels: dict[str, dict[str, int]] = {}
    for model in config.model_config_list.config:
        for label in sorted(model.version_labels):
            version = model.version_labels[label]
            existing = old_labels.get(model.name, {}).get(label)
            allowed = allow_unavailable and (existing is None or existing == version)
            if not allowed and version not in available.get(model.name, set()):
                raise failed_precondition(
                    f"Request to assign label to version {version} of model {model.name}, "
                    "which is not currently available for inference"
                )
            labels.setdefault(model.name, {})[label] = version
    return labels
