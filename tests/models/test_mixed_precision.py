"""Under a mixed dtype policy given to a model or network itself (not set
globally), every layer it creates computes in that policy: the CRAM encoder
and classifier, the inpainter's networks, the RNN-SPN models and the
saliency network pass `layer_testing.run_mixed_precision_test` (sub-layers
under the policy, float32 variables, outputs in the compute dtype and close
to float32's). The inpainter's own training step under `mixed_bfloat16`:
tests/models/test_inpainting_bf16.py."""

import keras
import pytest
from layer_testing import run_mixed_precision_test
from testing import TINY_ENCODER as ENCODER

from cram_keras.models.cram import CRAMClassifier, CRAMEncoder
from cram_keras.models.inpainting import (
    CNNEncoder,
    GlobalDiscriminator,
    InpaintingGenerator,
    LocalDiscriminator,
)
from cram_keras.models.rnn_spn import FFNSPN, RNNSPN, ConvNet
from cram_keras.models.saliency import SaliencyNetwork

IMAGE_AND_CLUE = [(2, 16, 16, 1), (2, 16, 16, 1)]
DIGITS = (2, 40, 40, 1)
SMALL_SPN = dict(num_steps=2, num_classes=3, classifier_filters=2, dense_units=4)

# name: (make(dtype) -> network, input shape(s)).
CASES = {
    "CRAMEncoder": (lambda dtype: CRAMEncoder(**ENCODER, dtype=dtype), IMAGE_AND_CLUE),
    # The classifier's own encoder (encoder=None) is built with its policy.
    "CRAMClassifier": (
        lambda dtype: CRAMClassifier(
            None, num_classes=3, decoder_units=(4,), clue_weight=0.0, dtype=dtype
        ),
        IMAGE_AND_CLUE,
    ),
    "InpaintingGenerator": (
        lambda dtype: InpaintingGenerator(16, 1, filters=(4, 3), dtype=dtype),
        (2, 5),
    ),
    "LocalDiscriminator": (
        lambda dtype: LocalDiscriminator(8, filters=(2, 3), units=4, dtype=dtype),
        IMAGE_AND_CLUE,
    ),
    "GlobalDiscriminator": (
        lambda dtype: GlobalDiscriminator(filters=(2, 3), units=4, dtype=dtype),
        (2, 16, 16, 1),
    ),
    "CNNEncoder": (
        lambda dtype: CNNEncoder(units=4, filters=(2, 3), use_clue=True, dtype=dtype),
        IMAGE_AND_CLUE,
    ),
    "RNNSPN": (
        lambda dtype: RNNSPN(
            localization_filters=2, rnn_units=4, dropout=0.1, dtype=dtype, **SMALL_SPN
        ),
        DIGITS,
    ),
    "FFNSPN": (
        lambda dtype: FFNSPN(
            localization_filters=2, localization_units=4, dtype=dtype, **SMALL_SPN
        ),
        DIGITS,
    ),
    "ConvNet": (lambda dtype: ConvNet(dtype=dtype, **SMALL_SPN), DIGITS),
    "SaliencyNetwork": (
        lambda dtype: SaliencyNetwork(filters=(2, 3), dtype=dtype),
        (2, 12, 12, 1),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_networks_compute_in_their_own_dtype_policy(case):
    make, input_shape = CASES[case]
    keras.utils.set_random_seed(0)
    run_mixed_precision_test(make, input_shape)
    assert keras.config.dtype_policy().name == "float32"
