"""Forward-pass FLOP counts of Keras models, from their conv and dense layers.

One multiply-accumulate counts as two FLOPs. Other layers (pooling, activations, batch norm)
are cheap next to convolutions and are left out, so the figure is a slight underestimate.
"""

from __future__ import annotations

import math

import keras


def forward_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass for a single example (batch size 1)."""
    macs = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h_in, w_in, c_in = layer.input.shape
            k = math.prod(layer.kernel_size)
            macs += h_in * w_in * k * c_in * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h_out, w_out, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            macs += h_out * w_out * math.prod(layer.kernel_size) * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return 2 * macs


def _leaf_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer
