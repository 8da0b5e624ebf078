"""Export: turns a training run into a versioned, self-checked SavedModel for TF Serving.

Usage:
    python -m export unet --run runs/unet/slim --base-path models
"""
