"""Backend-agnostic sampling ops (PyTorch's `affine_grid` / `grid_sample`),
and the fused one-channel convolution, ReLU and max-pooling of RNN-SPN's
first layers."""

from cram_keras.ops.conv_pool import conv_relu_max_pool
from cram_keras.ops.sampling import (
    PADDING_MODES,
    affine_grid,
    affine_sample,
    bilinear_sample,
    scale_translate_sample,
)

__all__ = [
    "PADDING_MODES",
    "affine_grid",
    "affine_sample",
    "bilinear_sample",
    "conv_relu_max_pool",
    "scale_translate_sample",
]
