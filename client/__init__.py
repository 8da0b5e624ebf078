"""The slim client (no TensorFlow): `ServingClient` over gRPC or REST, pre- and post-processing,
classical fallbacks and pictures.

Usage:
    python -m client segment car.jpg --server 127.0.0.1:8500 --out out/
"""
