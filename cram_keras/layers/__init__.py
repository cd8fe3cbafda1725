"""Keras layers of CRAM and RNN-SPN (one public class per module)."""

from cram_keras.layers.spatial_transformer import SpatialTransformer

__all__ = ["SpatialTransformer"]
