"""cram-keras: Keras 3 port of CRAM and RNN-SPN (recurrent spatial attention).

Subpackages:
  ops:         backend-agnostic sampling ops (affine_grid, bilinear_sample).
  layers:      Keras layers (SpatialTransformer, CRAM sub-networks).
  models:      RNN-SPN, FFN-SPN, ConvNet, CRAM classifier and inpainter.
  data:        NumPy-first dataset loaders and generators.
  training:    TensorFlow-side training utilities (strategy, callbacks, export).
  experiments: one module per paper experiment (config + train_and_evaluate).
"""

__version__ = "0.1.0"

# Register the layers and models with Keras' serialisation on import, so that
# `import cram_keras` is enough before `keras.models.load_model(...)`.
# TensorFlow (Keras' default backend) loads here: the lines it logs while its
# libraries load are held to TF_CPP_MIN_LOG_LEVEL, as its later logs are.
from cram_keras._startup_logs import filtered_startup_logs as _filtered_startup_logs

try:
    with _filtered_startup_logs():
        import keras as _keras  # noqa: F401
except ImportError as _error:  # e.g. KERAS_BACKEND=torch without torch installed
    # Reported in one line by the scripts (cram_keras.experiments.cli.script);
    # importing a subpackage that needs Keras raises it again.
    KERAS_IMPORT_ERROR = _error
else:
    KERAS_IMPORT_ERROR = None
    from cram_keras import layers as layers
    from cram_keras import models as models

    # Registers TwoStageClipOptimizer, so that `import cram_keras` suffices to
    # load a saved RNN-SPN model with its optimizer.
    from cram_keras.training import clipping as _clipping  # noqa: F401

    # Registers the compiled metrics (e.g. RNN-SPN's sequence accuracy).
    from cram_keras.training import metrics as _metrics  # noqa: F401
