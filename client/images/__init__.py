"""The client's images: reading inputs, pre-processing them as the contract says,
post-processing answers to each image's own size, and pictures of the answers."""
