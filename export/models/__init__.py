"""The export module of each model: one entry per model, the only place export knows models.

Adding a model means one module here (its signatures, sample requests and checks) and one line
in EXPORTS.
"""

from __future__ import annotations

from export.models import generator, localizer, unet
from export.models.base import ExportModule

EXPORTS: dict[str, ExportModule] = {
    "unet": unet.EXPORT,
    "localizer": localizer.EXPORT,
    "generator": generator.EXPORT,
}


def export_module(model_name: str) -> ExportModule:
    """The model's export module, or a ValueError listing the valid names and input kinds."""
    try:
        return EXPORTS[model_name]
    except KeyError:
        kinds = "; ".join(f"{name}: {', '.join(m.input_kinds)}" for name, m in EXPORTS.items())
        raise ValueError(
            f"no export module for {model_name!r}; valid models and inputs: {kinds}"
        ) from None
