"""The saliency network that makes CRAM's classification clue (Chung & Cho,
2018, Section V-A, Fig. 6): a convolution-deconvolution network (CNN-DecNN,
after Noh, Hong & Han 2015) with a sigmoid output, trained with Adam on
binary cross-entropy against binary saliency masks."""

import keras
from keras import layers, ops

from cram_keras.layers import batch_normalization
from cram_keras.layers.conv_blocks import build_once
from cram_keras.utils import check_int_tuple, check_positive_int


@keras.saving.register_keras_serializable(package="cram_keras")
class SaliencyNetwork(keras.Model):
    """CNN-DecNN: per-pixel probability that a pixel is salient.

    Paper V-A: "In order to obtain the clue, saliency map, we use a
    convolutional deconvolutional network (CNN-DecNN) [Noh et al. 2015] ...
    trained with Adam in default learning settings. In training and inference
    period, rough saliency (or clue) is obtained from the pre-trained
    CNN-DecNN." With `L = len(filters)`:

        x    = pad(image) to a multiple of 2^L                  (B, H', W', C)
        for f in filters:        conv 3x3 (f) -> BN -> ELU -> max pool 2
        for f in reversed(filters): deconv 3x3 stride 2 (f) -> BN -> ELU
        p    = sigmoid(conv 1x1 (1)), cropped back to H x W      (B, H, W, 1)

    The clue is `p > 0.5` (see `cram_keras.training.saliency`). The
    paper's Fig. 6 is not legible enough to copy layer by layer; this is the
    smallest network of its kind: Noh et al.'s DeconvNet mirrors each
    pooling with an unpooling that reuses the pooling switches, ours with a
    stride-2 transposed convolution (the "deconvolution" of DCGAN), and ours
    is far shallower (three levels instead of VGG-16), enough for digits.
    Batch normalisation and ELU follow every layer but the last (paper V-A).

    **Training data.** The paper pretrains on MSRA10k (10,000 natural images
    with salient-object masks). MSRA10k cannot be downloaded offline, so
    `train_cls.py --clue saliency` trains this network on the training
    split's own ground-truth digit masks (cluttered MNIST) or, for SVHN,
    which has no masks, on contrast pseudo-masks; see
    `cram_keras.training.saliency` and `cram_keras.data.saliency_masks`. Any
    network of this class trained elsewhere (e.g. on MSRA10k) can be passed
    as a `.keras` file instead.

    Args:
        filters: filters of the convolution levels, coarsest last
            (`(16, 32, 64)`); the decoder uses them in reverse.
        kernel_size: kernel size of every convolution and deconvolution (3).
        **kwargs: passed to `keras.Model`.

    Call arguments:
        inputs: float tensor `(B, H, W, C)` in [0, 1], H and W static (any
            size: the input is zero-padded to a multiple of `2 ** L` and the
            output cropped back).
        training: Python bool, batch normalisation mode.

    Returns:
        Saliency probabilities `(B, H, W, 1)` in (0, 1).

    Example:

    >>> net = SaliencyNetwork(filters=(8, 16))
    >>> net.compile("adam", keras.losses.BinaryCrossentropy())
    >>> net.fit(images, masks)                  # masks (B, H, W, 1) in {0, 1}
    >>> clue = keras.ops.cast(net(images) > 0.5, "float32")
    """

    def __init__(self, filters=(16, 32, 64), kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.filters = check_int_tuple("filters", filters)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        # === Layers ===
        policy = dict(dtype=self.dtype_policy)
        conv = dict(padding="same", use_bias=False, **policy)
        self.encoder_blocks = []
        for i, f in enumerate(self.filters):
            self.encoder_blocks.append(
                [
                    layers.Conv2D(f, self.kernel_size, name=f"conv{i}", **conv),
                    batch_normalization.BatchNormalization(
                        name=f"conv{i}_bn", **policy
                    ),
                    layers.Activation("elu", name=f"conv{i}_elu", **policy),
                    layers.MaxPooling2D(2, name=f"pool{i}", **policy),
                ]
            )
        self.decoder_blocks = []
        for i, f in enumerate(reversed(self.filters)):
            self.decoder_blocks.append(
                [
                    layers.Conv2DTranspose(
                        f, self.kernel_size, strides=2, name=f"deconv{i}", **conv
                    ),
                    batch_normalization.BatchNormalization(
                        name=f"deconv{i}_bn", **policy
                    ),
                    layers.Activation("elu", name=f"deconv{i}_elu", **policy),
                ]
            )
        self.head = layers.Conv2D(1, 1, activation="sigmoid", name="head", **policy)

    def _padding(self, height, width):
        multiple = 2 ** len(self.filters)
        return (-height) % multiple, (-width) % multiple

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"`{self.name}` expects images of shape (batch, height, width, "
                f"channels) with known height and width. "
                f"Received: input_shape={input_shape}"
            )
        pad_h, pad_w = self._padding(input_shape[1], input_shape[2])
        shape = (input_shape[0], input_shape[1] + pad_h, input_shape[2] + pad_w) + (
            input_shape[3],
        )
        for block in self.encoder_blocks + self.decoder_blocks:
            for layer in block:
                build_once(layer, shape)
                shape = layer.compute_output_shape(shape)
        build_once(self.head, shape)

    def call(self, inputs, training=None):
        height, width = inputs.shape[1], inputs.shape[2]
        pad_h, pad_w = self._padding(height, width)
        x = inputs
        if pad_h or pad_w:
            x = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        for block in self.encoder_blocks + self.decoder_blocks:
            for layer in block:
                if isinstance(layer, layers.BatchNormalization):
                    x = layer(x, training=training)
                else:
                    x = layer(x)
        # Crop before the 1x1 head (the same result), so that the output is
        # the sigmoid's own tensor and Keras' binary cross-entropy computes
        # from its logits.
        return self.head(x[:, :height, :width, :])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=list(self.filters), kernel_size=self.kernel_size)
        return config
