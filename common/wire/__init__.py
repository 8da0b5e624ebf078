"""TF Serving's gRPC messages without TensorFlow, for the client and the codec; see generate.sh.

`tensorflow-serving-api` depends on TensorFlow, so the client carries its own copies of the few
messages it sends and reads: `tensor.proto` (DataType, TensorShapeProto, TensorProto),
`model.proto` (ModelSpec), `predict.proto`, `get_model_metadata.proto` (with TensorInfo,
SignatureDef, SignatureDefMap) and `get_model_status.proto` (with StatusProto). Each message keeps
the field numbers and types of the upstream `.proto` files, which is all the binary wire format
depends on, so TF Serving parses ours and we parse its. Upstream fields the client never touches
are left out; the parser skips them as unknown fields.

They live in `package tfsclient;` and register as `common/wire/<name>.proto`, so they never
clash with TensorFlow's own messages when both are imported in one process. One consequence: the
`Any` in GetModelMetadataResponse.metadata names `tensorflow.serving.SignatureDefMap` in its
type_url, so `Any.Unpack` would refuse our SignatureDefMap; parse `any.value` directly instead.

After editing a `.proto`, run `common/wire/generate.sh` (uses `.venv/bin/python -m
grpc_tools.protoc`) to rewrite the `*_pb2.py` modules; the client needs only `protobuf` at run
time, not grpcio-tools.
"""
