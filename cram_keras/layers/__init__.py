"""Keras layers of CRAM and RNN-SPN (one public class per module).

- `SpatialTransformer`: the differentiable spatial transformer of STN,
  RNN-SPN and CRAM.
- `ContextNetwork`: CRAM's initial state of the second core LSTM from a
  coarse view of image and clue (eq. 1-2).
- `LocalizationNetwork`: CRAM's attention parameters of the next glimpse
  (eq. 5).
- `GlimpseNetwork`: CRAM's glimpse vector, "what" times "where" (eq. 6).
- `CoreNetwork`: one step of CRAM's two stacked core LSTMs (eq. 7-8).

All are registered for Keras serialisation under the package "cram_keras"
and pass their dtype policy to their sub-layers (mixed precision).
"""

from cram_keras.layers.context_network import ContextNetwork
from cram_keras.layers.core_network import CoreNetwork
from cram_keras.layers.glimpse_network import GlimpseNetwork
from cram_keras.layers.localization_network import LocalizationNetwork
from cram_keras.layers.spatial_transformer import SpatialTransformer

__all__ = [
    "ContextNetwork",
    "CoreNetwork",
    "GlimpseNetwork",
    "LocalizationNetwork",
    "SpatialTransformer",
]
