"""Shared test set-up: quiet TensorFlow logs and keep thread use stable on the 2-core machines."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
