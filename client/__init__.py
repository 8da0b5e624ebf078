"""The slim client (no TensorFlow): `ServingClient` over gRPC or REST, pre- and post-processing,
classical fallbacks and pictures.

Example:
    >>> from client import ServingClient
    >>> with ServingClient.grpc("127.0.0.1:8500") as client:
    ...     mask = client.segment("car.jpg")[0].mask

Usage:
    python -m client segment car.jpg --server 127.0.0.1:8500 --out out/

Layout: `api`, `models`, `results`, `cli`, `demo` and `errors` on top; `transports/` (gRPC,
REST, TLS, the served contract), `images/` (inputs, pre- and post-processing, pictures),
`canary/` (routing, shadow, comparisons, judge) and `fallbacks/` below them.
"""

from client.api import ServingClient
from client.errors import ClientError
from client.results import Generation, Localization, Segmentation
from client.transports.tls import TLSFiles

__all__ = ["ClientError", "Generation", "Localization", "Segmentation", "ServingClient", "TLSFiles"]
