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
from cram_keras import layers as layers  # noqa: E402
from cram_keras import models as models  # noqa: E402
