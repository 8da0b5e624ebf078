"""Classical segmentation for when no model can answer: the `classical` extra (SciPy, scikit-image).

The slim client installs without SciPy and scikit-image; this package's names are light, and
the methods load on first use:

    from client import fallbacks
    mask = fallbacks.load().segment(image, "otsu")

`load()` raises `FallbackUnavailableError`, naming the extra to install, when they are missing.
"""

from __future__ import annotations

from types import ModuleType

# The methods `segment` knows; cheap to import, so options can be checked without SciPy.
METHODS = ("otsu", "threshold", "watershed", "kmeans")
# The optional dependency set that brings SciPy and scikit-image.
EXTRA = "classical"


class FallbackUnavailableError(ImportError):
    """The classical fallbacks were needed but SciPy or scikit-image is not installed."""


def load() -> ModuleType:
    """The fallback implementations (`client.fallbacks.methods`).

    Raises:
        FallbackUnavailableError: SciPy or scikit-image is missing; the message says what to
            install.
    """
    try:
        from client.fallbacks import methods
    except ImportError as error:
        missing = getattr(error, "name", None) or "SciPy and scikit-image"
        raise FallbackUnavailableError(
            f"the classical fallbacks need {missing}, which the slim client does not "
            f"install: pip install 'tfserving-stack[{EXTRA}]'"
        ) from None
    return methods
