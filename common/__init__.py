"""The shared bottom layer every stage imports: serving contracts and the model registry, the
TensorProto codec and TF-free wire protos, status codes, the CLI helper, the quiet TF import."""
