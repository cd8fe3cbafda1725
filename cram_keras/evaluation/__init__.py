"""Evaluation: inpainting metrics, classical baselines and scoring; where
CRAM's glimpses go.

metrics:    hole_psnr, hole_l1, ssim, completed_image (keras.ops; any backend).
baselines:  telea_inpaint, navier_stokes_inpaint, mean_fill (NumPy / OpenCV)
            and evaluate_inpainting, the one scorer every method goes through.
inpainting: a trained inpainter and the baselines scored alike
            (score_methods), and its pathway diagnostics.
glimpses:   glimpse-window statistics; a classifier's glimpses on a split.
"""

from cram_keras.evaluation.baselines import (
    BASELINES,
    evaluate_inpainting,
    mean_fill,
    navier_stokes_inpaint,
    telea_inpaint,
)
from cram_keras.evaluation.metrics import completed_image, hole_l1, hole_psnr, ssim

__all__ = [
    "BASELINES",
    "completed_image",
    "evaluate_inpainting",
    "hole_l1",
    "hole_psnr",
    "mean_fill",
    "navier_stokes_inpaint",
    "ssim",
    "telea_inpaint",
]
