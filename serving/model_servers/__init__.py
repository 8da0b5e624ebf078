"""Start-up, flags, the gRPC services, health and metrics (TF Serving's `model_servers/`)."""
