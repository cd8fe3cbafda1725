"""Models of both papers. Importing this package registers every model with
Keras' serialisation, so that ``keras.models.load_model`` finds them."""

from cram_keras.models.cram import CRAMClassifier, CRAMEncoder
from cram_keras.models.inpainting import (
    CNNEncoder,
    ContextSkipEncoder,
    CRAMInpainter,
    GlobalDiscriminator,
    InpaintingGenerator,
    LocalDiscriminator,
)
from cram_keras.models.rnn_spn import FFNSPN, RNNSPN, ConvNet
from cram_keras.models.saliency import SaliencyNetwork

__all__ = [
    "RNNSPN",
    "FFNSPN",
    "ConvNet",
    "CRAMEncoder",
    "CRAMClassifier",
    "InpaintingGenerator",
    "LocalDiscriminator",
    "GlobalDiscriminator",
    "CNNEncoder",
    "ContextSkipEncoder",
    "CRAMInpainter",
    "SaliencyNetwork",
]
