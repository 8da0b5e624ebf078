"""How the client reaches TF Serving: gRPC and REST transports with one interface, TLS, the JSON
values of the REST API, and the served model's contract rebuilt from its metadata."""
