"""Server-side batching of Predict calls (TF Serving's `batching/`)."""
