"""One loaded SavedModel version and Predict on it (TF Serving's `servables/tensorflow/`)."""
