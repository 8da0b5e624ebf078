"""The shared bottom layer: serving contracts, the quiet TensorFlow import, and (soon) the codec."""
