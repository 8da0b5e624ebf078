"""The server's config files, parsed with TF Serving's protos (TF Serving's `config/`)."""
