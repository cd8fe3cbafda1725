"""CRAM inpainting (Chung & Cho, 2018, Sections III-B2, IV-B, V-B;
docs/design.md, experiment E3): `CRAMInpainter`, the GAN model that trains
an encoder, the generator and the local and global discriminators.

Its parts, each in its module of this package (and importable from it):

- `InpaintingGenerator` (`generator`): the decoder `G(z)`,
  output in [0, 1].
- `LocalDiscriminator`, `GlobalDiscriminator`, `crop_around_hole`
  (`discriminators`): score a crop around the hole, or the whole image.
- `CNNEncoder`, `ContextSkipEncoder` (`encoders`): the
  no-attention baseline encoder, and CRAM with a context skip (beyond the
  paper); `CRAMEncoder` is in `cram_keras.models.cram`.
- The losses (`losses`), written once in `keras.ops`; the
  training and test steps per backend (`steps`); the three
  optimizers seen as one (`InpainterOptimizers`, `optimizers`);
  precise batch norm (`recalibration`).

`fit`, `evaluate` and `predict` run on the TensorFlow and JAX backends (on
torch they raise `NotImplementedError` naming the backend); the networks'
forward passes run on every backend.

Mixed precision: under a `mixed_bfloat16` dtype policy (set globally before
the networks are built, or given to each network), the networks compute in
bfloat16 with float32 variables (their batch norms keep float32 statistics),
while `CRAMInpainter` takes and returns float32 images and computes every
loss in float32: the generator's output, the glimpse parameters and the
discriminators' logits are cast to float32 before the losses, the completed
image and the scores. bfloat16 has float32's range, so the optimizers need
no loss scaling; `mixed_float16` would, and is refused by `compile`.

Every network follows the paper's rule (Sections V-A, V-B): batch
normalisation and ELU after every layer except the last of each network.
Deviations from the paper and the released code are in docs/deviations.md
and in the docstrings of the modules above.
"""

from cram_keras.models.inpainting.discriminators import (
    GlobalDiscriminator,
    LocalDiscriminator,
    crop_around_hole,
)
from cram_keras.models.inpainting.encoders import CNNEncoder, ContextSkipEncoder
from cram_keras.models.inpainting.generator import InpaintingGenerator
from cram_keras.models.inpainting.model import CRAMInpainter
from cram_keras.models.inpainting.optimizers import InpainterOptimizers
from cram_keras.models.inpainting.steps import TRAINING_BACKENDS

__all__ = [
    "CNNEncoder",
    "CRAMInpainter",
    "ContextSkipEncoder",
    "GlobalDiscriminator",
    "InpainterOptimizers",
    "InpaintingGenerator",
    "LocalDiscriminator",
    "TRAINING_BACKENDS",
    "crop_around_hole",
]
