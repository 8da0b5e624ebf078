"""The client applications call: segment, localize and generate, over gRPC (default) or REST.

Example:
    >>> from client.api import ServingClient
    >>> with ServingClient.grpc("127.0.0.1:8500", timeout=10) as client:
    ...     result = client.segment("car.jpg")[0]
    ...     result.mask.shape, result.source          # original size, "model:unet/1"

TLS: `ServingClient.grpc(target, tls=TLSFiles(ca="ca.pem"))` (see `client.transports.tls`).

Canary traffic: `ServingClient.grpc(target, canary_fraction=0.1, sticky_key=user_id)` sends 10 %
of the calls (sticky per key) to the `canary` label and the rest to `stable`; `shadow_fraction`
mirrors calls answered by `stable` to the canary in the background (see `client.canary.routing` and
`client.canary.shadow`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from client import fallbacks
from client.canary.routing import Router, route
from client.canary.shadow import ShadowRecorder
from client.errors import ClientError
from client.images.inputs import InputImage
from client.images.preprocess import ImageLike
from client.models import IMAGE_MODELS, generation
from client.results import Generation, Localization, Segmentation
from client.transports.base import MAX_RESPONSE_BYTES
from client.transports.served_contract import contract_from_metadata
from client.transports.tls import TLSFiles
from common.contract import DEFAULT_SIGNATURE

FALLBACK_POLICIES = ("auto", "never", "only")
# The failures that mean "the model can't answer" rather than "the request is wrong".
FALLBACK_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND")


def _classical():
    """The classical methods, or a ClientError naming the extra to install when they are absent."""
    try:
        return fallbacks.load()
    except fallbacks.FallbackUnavailableError as error:
        raise ClientError("FAILED_PRECONDITION", str(error)) from None


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


class ServingClient:
    """Calls the three served models; the same methods over either transport.

    Args:
        transport: a `client.transports.grpc.GrpcTransport` or `RestTransport`.
        fallback: "auto" (classical methods when the model can't answer), "never" or "only".
        method: the classical segmentation method for fallbacks (see `fallbacks.METHODS`).
        cleanup: keep only the largest foreground component and fill its holes.
        max_batch: images per request.
        canary_fraction: the share of calls sent to the `canary` label, in [0, 1] (0: off).
            With it (or shadow_fraction) set, calls that pin no version or label go to a label:
            `canary` for that share, `stable` for the rest; a canary call falls back to
            `stable` when no canary is loaded. The result's `source` names the label too.
        sticky_key: the default key for the split (a user or session id): one key always gets
            the same label. Calls may pass their own `sticky_key`; with none the split is random.
        shadow_fraction: the share of calls answered by `stable` that are mirrored to `canary`
            in the background, their agreement written to `shadow_log` (0: off).
        shadow_log: the JSON-lines file of shadow records; required with shadow_fraction.
    """

    def __init__(
        self,
        transport,
        *,
        fallback: str = "auto",
        method: str = "otsu",
        cleanup: bool = False,
        max_batch: int = 16,
        canary_fraction: float = 0.0,
        sticky_key: str | bytes | int | None = None,
        shadow_fraction: float = 0.0,
        shadow_log: str | None = None,
    ):
        if fallback not in FALLBACK_POLICIES:
            raise ValueError(
                f"fallback must be one of {', '.join(FALLBACK_POLICIES)}, not {fallback!r}"
            )
        if method not in fallbacks.METHODS:
            raise ValueError(
                f"method must be one of {', '.join(fallbacks.METHODS)}, not {method!r}"
            )
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.transport = transport
        self.fallback, self.method, self.cleanup, self.max_batch = (
            fallback,
            method,
            cleanup,
            max_batch,
        )
        self._contracts: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self.router = None
        if canary_fraction or shadow_fraction:
            self.router = Router(canary_fraction, sticky_key)
        self.shadow = None
        if shadow_fraction:
            if shadow_log is None:
                raise ValueError("shadow_fraction needs shadow_log, the file of shadow records")
            self.shadow = ShadowRecorder(shadow_fraction, shadow_log)

    @classmethod
    def grpc(
        cls,
        target: str = "127.0.0.1:8500",
        *,
        timeout: float = 30.0,
        tls: TLSFiles | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        **options,
    ) -> ServingClient:
        """A client over gRPC; `tls` (a `client.transports.tls.TLSFiles`) makes the channel TLS.

        A call whose answer is over `max_response_bytes` fails with RESOURCE_EXHAUSTED.
        """
        from client.transports.grpc import GrpcTransport

        transport = GrpcTransport(
            target, timeout=timeout, tls=tls, max_response_bytes=max_response_bytes
        )
        return cls(transport, **options)

    @classmethod
    def rest(
        cls,
        url: str = "http://127.0.0.1:8501",
        *,
        timeout: float = 30.0,
        tls: TLSFiles | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        **options,
    ) -> ServingClient:
        """A client over REST; an https:// URL uses `tls` (or the system's roots).

        `timeout` bounds each call as a whole, however slowly the answer arrives; an answer over
        `max_response_bytes` fails with RESOURCE_EXHAUSTED before more of it is read.
        """
        from client.transports.rest import RestTransport

        transport = RestTransport(
            url, timeout=timeout, tls=tls, max_response_bytes=max_response_bytes
        )
        return cls(transport, **options)

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        self.transport.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _contract(self, kind: str, model: str, version, label, timeout):
        key = (kind, model, version, label)
        with self._lock:
            cached = self._contracts.get(key)
        if cached is None:
            metadata = self.transport.metadata(model, version=version, label=label, timeout=timeout)
            cached = contract_from_metadata(kind, metadata)
            with self._lock:
                self._contracts[key] = cached
        return cached

    def _predict_batches(
        self, model, signature, arrays, *, key, version, label, timeout, output_filter=()
    ):
        """Runs `arrays` (one per image) through the model in `max_batch` chunks."""
        outputs: list[dict[str, np.ndarray]] = []
        served = None
        for start in range(0, len(arrays), self.max_batch):
            batch = np.stack(arrays[start : start + self.max_batch])
            answer, served = self.transport.predict(
                model,
                {key: batch},
                signature=signature,
                version=version,
                label=label,
                timeout=timeout,
                output_filter=output_filter,
            )
            outputs.extend({k: v[i] for k, v in answer.items()} for i in range(len(batch)))
        return outputs, served

    def _image_model(self, kind, loaded, model, version, label, timeout) -> list:
        """An image model on the call's images, post-processed per image.

        Over gRPC the client pre-processes (`serving_default`); over REST, where a float image
        costs tens of thousands of JSON numbers, it sends the encoded images as they are to the
        model's bytes signature when the served version has one.
        """
        entry = IMAGE_MODELS.get(kind)
        if entry is None:
            raise ValueError(f"no image model {kind!r}; valid: {', '.join(IMAGE_MODELS)}")
        contract = self._contract(kind, model, version, label, timeout)
        encoded = [image.encoded() for image in loaded]
        served = {sig.name for sig in contract.signatures}
        if (
            self.transport.sends_encoded_images
            and entry.bytes_signature in served
            and all(data is not None for data in encoded)
        ):
            arrays = [np.array(data, dtype=object) for data in encoded]
            signature, key, wanted = entry.bytes_signature, "image_bytes", ()
        else:
            arrays = [image.model_input(contract.preprocessing) for image in loaded]
            signature, key, wanted = DEFAULT_SIGNATURE, "image", entry.outputs
        outputs, version_served = self._predict_batches(
            model,
            signature,
            arrays,
            key=key,
            version=version,
            label=label,
            timeout=timeout,
            output_filter=wanted,
        )
        if signature != DEFAULT_SIGNATURE:
            try:
                outputs = [entry.from_bytes(out) for out in outputs]
            except (KeyError, OSError, ValueError) as error:
                raise ClientError("INTERNAL", f"bad answer from {signature}: {error}") from None
        source = f"model:{model}/{version_served}"
        return [
            entry.postprocess(contract, out, image.size, source)
            for image, out in zip(loaded, outputs, strict=True)
        ]

    def _model_or_fallback(self, from_model, classical):
        """The model's answer, or the classical one when the policy says so (never on bad input)."""
        if self.fallback != "only":
            try:
                return from_model()
            except ClientError as error:
                if not (self.fallback == "auto" and error.code in FALLBACK_CODES):
                    raise
        return classical()

    def _routed(self, kind, model, pin, ask):
        """`ask(label)` on the label the split picks; pin = (version, label, sticky_key)."""
        version, label, key = pin
        return route(self.router, self.shadow, kind, model, (version, label), key, ask)

    @staticmethod
    def _load(images) -> list[InputImage]:
        """Opens every image first, so a bad one fails the call before anything is sent."""
        return [InputImage(image, i) for i, image in enumerate(_as_list(images))]

    # -- public API ----------------------------------------------------------------------------

    def predict_images(
        self,
        images: ImageLike | Sequence[ImageLike],
        *,
        kind: str,
        model: str | None = None,
        model_version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
        sticky_key: str | bytes | int | None = None,
    ) -> list:
        """Any image model of `client.models.IMAGE_MODELS`, one result per image, no fallback.

        `segment` and `localize` are this plus their classical fallbacks.

        Raises:
            ValueError: for a kind the registry does not know.
            ClientError: BAD_INPUT for an unreadable image, or the server's error.
        """
        loaded, model = self._load(images), model or kind
        ask = partial(self._image_model, kind, loaded, model, model_version, timeout=timeout)
        return self._routed(kind, model, (model_version, version_label, sticky_key), ask)

    def segment(
        self,
        images: ImageLike | Sequence[ImageLike],
        *,
        model: str = "unet",
        model_version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
        sticky_key: str | bytes | int | None = None,
    ) -> list[Segmentation]:
        """Foreground masks at each image's original size.

        Raises:
            ClientError: BAD_INPUT for an unreadable image; the server's error when the model
                fails and the fallback policy does not cover it (INVALID_ARGUMENT never does).
        """
        loaded = self._load(images)
        ask = partial(self._segment_model, loaded, model, model_version, timeout=timeout)
        pin = (model_version, version_label, sticky_key)
        return self._model_or_fallback(
            lambda: self._routed("unet", model, pin, ask),
            lambda: [self._segment_classical(image) for image in loaded],
        )

    def _segment_model(self, loaded, model, version, label, timeout) -> list[Segmentation]:
        results = self._image_model("unet", loaded, model, version, label, timeout)
        if self.cleanup:
            results = [result.with_mask(_classical().clean_mask(result.mask)) for result in results]
        return results

    def _segment_classical(self, loaded: InputImage) -> Segmentation:
        image, instances = loaded.pixels(), None
        if self.method == "watershed":
            instances, _ = _classical().watershed_instances(image)
            mask = instances > 0
        else:
            mask = _classical().segment(image, self.method)
        if self.cleanup:
            mask = _classical().clean_mask(mask)
        return Segmentation(mask, mask.astype(np.float32), f"fallback:{self.method}", instances)

    def localize(
        self,
        images: ImageLike | Sequence[ImageLike],
        *,
        model: str = "localizer",
        model_version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
        sticky_key: str | bytes | int | None = None,
    ) -> list[Localization]:
        """The class and box (original pixels, clipped) of the object in each image."""
        loaded = self._load(images)
        ask = partial(self._localize_model, loaded, model, model_version, timeout=timeout)
        pin = (model_version, version_label, sticky_key)
        return self._model_or_fallback(
            lambda: self._routed("localizer", model, pin, ask),
            lambda: [self._localize_classical(image) for image in loaded],
        )

    def _localize_classical(self, loaded: InputImage) -> Localization:
        image, classical = loaded.pixels(), _classical()
        box = classical.largest_component_box(classical.segment(image, self.method))
        if box is None:
            box = (0, 0, image.shape[1] - 1, image.shape[0] - 1)
        return Localization("unknown", math.nan, box, f"fallback:{self.method}")

    def _localize_model(self, loaded, model, version, label, timeout) -> list[Localization]:
        return self._image_model("localizer", loaded, model, version, label, timeout)

    def generate(
        self,
        n: int | None = None,
        *,
        seeds: Sequence[int] | None = None,
        latents: np.ndarray | None = None,
        model: str = "generator",
        model_version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
        sticky_key: str | bytes | int | None = None,
    ) -> Generation:
        """`n` images from random latent vectors, one per seed, or one per given latent vector.

        Seeds and latents are reproducible. There is no classical fallback for generation: a
        failure raises.
        """
        if sum(x is not None for x in (n, seeds, latents)) != 1:
            raise ValueError("give one of n, seeds or latents")
        if n is not None and n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        if self.fallback == "only":
            raise ClientError("UNIMPLEMENTED", "generate has no classical fallback")
        drawn: list[np.ndarray] = []  # random latents, drawn once: a fallback or mirror reuses them

        def ask(label: str | None) -> Generation:
            contract = self._contract("generator", model, model_version, label, timeout)
            if seeds is not None:
                inputs = {"seeds": np.asarray(list(seeds), np.int64)}
                signature = "serve_seeds"
            else:
                if latents is None and not drawn:
                    rng = np.random.default_rng()
                    drawn.append(rng.standard_normal((n, contract.latent_dim)).astype(np.float32))
                z = drawn[0] if latents is None else np.asarray(latents, np.float32)
                inputs, signature = {"z": z}, "serving_default"
            answer, served = self.transport.predict(
                model,
                inputs,
                signature=signature,
                version=model_version,
                label=label,
                timeout=timeout,
            )
            return generation(
                answer["images"], None if seeds is None else list(seeds), f"model:{model}/{served}"
            )

        try:
            pin = (model_version, version_label, sticky_key)
            return self._routed("generator", model, pin, ask)
        except ClientError as error:
            raise ClientError(error.code, f"{error.message} (generate has no fallback)") from None

    def status(self, model: str, *, timeout: float | None = None) -> list[dict]:
        """Every version of `model` with its state (GetModelStatus)."""
        return self.transport.status(model, timeout=timeout)

    def metadata(self, model: str, *, timeout: float | None = None, **spec) -> dict:
        """The served signatures of `model` (GetModelMetadata)."""
        return self.transport.metadata(model, timeout=timeout, **spec)
