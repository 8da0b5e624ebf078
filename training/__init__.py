"""Training for the three served models: `unet`, `localizer` and `generator`.

Usage:
    python -m training unet --preset slim --out runs/unet/slim
"""
