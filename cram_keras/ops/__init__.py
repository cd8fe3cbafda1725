"""Backend-agnostic sampling ops (PyTorch's `affine_grid` / `grid_sample`)."""

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
    "scale_translate_sample",
]
