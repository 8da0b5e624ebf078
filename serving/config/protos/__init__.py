"""TF Serving config protos that the `tensorflow-serving-api` wheel lacks; see `generate.sh`.

`monitoring_config.proto` mirrors `tensorflow_serving/config/monitoring_config.proto`,
`ssl_config.proto` mirrors `tensorflow_serving/config/ssl_config.proto`, and
`batching_parameters.proto` mirrors the `BatchingParameters` message of
`tensorflow_serving/servables/tensorflow/session_bundle_config.proto` (same package, message
and field names, numbers and types, so the wire and text formats are identical). They are
registered as `serving/config/protos/*.proto` so they never clash with upstream file names.
After editing or adding a `.proto`, run `serving/config/protos/generate.sh` (it compiles every
`.proto` here with `.venv/bin/python -m grpc_tools.protoc`) to rewrite the `*_pb2.py` modules.
"""
