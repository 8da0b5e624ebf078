"""The version manager: policies, loading, status and config checks (TF Serving's `core/`)."""
