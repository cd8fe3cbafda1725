"""The differentiable spatial transformer of STN, RNN-SPN and CRAM."""

import keras
from keras import ops

from cram_keras.ops import native_sampler
from cram_keras.ops.sampling import (
    PADDING_MODES,
    affine_sample,
    check_images,
    check_not_empty,
    check_output_size,
    coordinate_dtype,
    scale_translate_sample,
)
from cram_keras.utils import check_bool, check_choice

TRANSFORMS = {"affine": 6, "attention": 3, "anisotropic": 4}


@keras.saving.register_keras_serializable(package="cram_keras")
class SpatialTransformer(keras.layers.Layer):
    """Differentiable spatial transformer: resamples images by an affine map.

    Maps transform parameters to a 2x3 matrix `theta` acting on normalised
    output coordinates and samples the input images bilinearly at
    `theta @ (x, y, 1)` (Jaderberg et al., 2015). Three parameterisations:

    - `"affine"`, 6 params `(t1, ..., t6)`, the full matrix in row-major
      order, `theta = [[t1, t2, t3], [t4, t5, t6]]`, x first (RNN-SPN eq. 1,
      Sønderby et al., 2015; identity: `(1, 0, 0, 0, 1, 0)`). The paper's
      eq. 3 writes grid points as (y, x); its released Lasagne code, like
      us, puts x first.
    - `"attention"`, 3 params `(s, tx, ty)`: isotropic scale and translation,
      `theta = [[s, 0, tx], [0, s, ty]]` (CRAM eq. 3, Chung & Cho, 2018;
      identity: `(1, 0, 0)`).
    - `"anisotropic"`, 4 params `(sx, sy, tx, ty)`:
      `theta = [[sx, 0, tx], [0, sy, ty]]` (what the released CRAM code did;
      identity: `(1, 1, 0, 0)`).

    Coordinate convention: PyTorch's (`torch.nn.functional.affine_grid` and
    `grid_sample`): normalised coordinates in [-1, 1], x (width) first,
    (-1, -1) the top-left. With `align_corners=False` -1 and 1 are the outer
    edges of the border pixels (as `tf.image.resize`), with `True` the
    centres of the border pixels. The released RNN-SPN code used the older
    Lasagne convention, which maps -1 and 1 to the border pixel centres but
    then stretches the image by one pixel; we do not reproduce that.

    The sampling is computed directly in pixel space
    (`cram_keras.ops.affine_sample`; for the axis-aligned `attention` and
    `anisotropic` maps `cram_keras.ops.scale_translate_sample`, which uses
    two small matmuls on small images): identity parameters with an output
    the size of the input return the input bit for bit. Non-finite or huge
    parameters give finite outputs and gradients. Coordinates are float32
    also under a mixed-precision policy: the layer does not autocast its
    inputs (`autocast=False` unless passed); it casts the images to the
    compute dtype itself and keeps the parameters at full precision. The
    output has the compute dtype.

    On TensorFlow (CPU, float32, outside XLA) a compiled kernel samples in
    one op per direction, coordinates included, with the same values to
    float32 rounding of the coordinates. It is built with
    the system C++ compiler on first use and used by default; where it
    cannot be built, one line says why and the `keras.ops` path runs.
    `CRAM_KERAS_NATIVE_SAMPLER=0` turns it off, `=1` makes a failure to
    build it an error (see `cram_keras.ops.native_sampler`).

    Args:
        transform: `"affine"` (default), `"attention"` or `"anisotropic"`.
        output_size: tuple `(height, width)` of the output. Give exactly one
            of `output_size` and `downsample_factor`.
        downsample_factor: positive number `d`; the output is
            `int(H / d)` x `int(W / d)` for inputs of size H x W (RNN-SPN's
            `d`).
        padding: `"zeros"` (default; each bilinear corner outside the image
            contributes 0) or `"border"` (coordinates clamped to the image).
        align_corners: bool, default `False`; see above.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list `[images, params]`: `images` a float tensor of shape
            `(batch, height, width, channels)`, `params` a float tensor of
            shape `(batch, n)` with `n` = 6, 3 or 4 for the transform.

    Input shape:
        `[(batch, height, width, channels), (batch, n)]`.

    Output shape:
        `(batch, out_height, out_width, channels)`.

    Example:

    >>> import numpy as np
    >>> layer = SpatialTransformer("attention", output_size=(8, 8))
    >>> images = np.random.rand(2, 32, 32, 3).astype("float32")
    >>> params = np.array([[0.5, 0.0, 0.0], [0.25, -0.5, 0.5]], "float32")
    >>> tuple(layer([images, params]).shape)
    (2, 8, 8, 3)

    References:
        - Jaderberg, Simonyan, Zisserman, Kavukcuoglu. Spatial Transformer
          Networks. NeurIPS 2015.
        - Sønderby, Sønderby, Maaløe, Winther. Recurrent Spatial Transformer
          Networks. arXiv preprint, 2015.
        - Chung, Cho. CRAM: Clued Recurrent Attention Model. 2018.
    """

    def __init__(
        self,
        transform="affine",
        output_size=None,
        downsample_factor=None,
        padding="zeros",
        align_corners=False,
        **kwargs,
    ):
        # Parameters keep full precision under mixed precision; `call` casts
        # the images to the compute dtype itself.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if transform not in TRANSFORMS:
            raise ValueError(
                f"`transform` must be one of {tuple(TRANSFORMS)}. "
                f"Received: transform={transform!r}"
            )
        if (output_size is None) == (downsample_factor is None):
            raise ValueError(
                "Pass exactly one of `output_size` and `downsample_factor`. "
                f"Received: output_size={output_size!r}, "
                f"downsample_factor={downsample_factor!r}"
            )
        if output_size is not None:
            output_size = check_output_size(output_size)
        if downsample_factor is not None and not (
            isinstance(downsample_factor, (int, float))
            and not isinstance(downsample_factor, bool)
            and downsample_factor > 0
        ):
            raise ValueError(
                "`downsample_factor` must be a positive number. "
                f"Received: downsample_factor={downsample_factor!r}"
            )
        check_choice("padding", padding, PADDING_MODES)
        check_bool("align_corners", align_corners)
        self.transform = transform
        self.output_size = output_size
        self.downsample_factor = downsample_factor
        self.padding = padding
        self.align_corners = align_corners

    def build(self, input_shape):
        self._check_input_shapes(input_shape)

    def call(self, inputs):
        images, params = self._unpack(inputs)
        self._check_input_shapes([images.shape, params.shape])
        images = ops.cast(check_images(images), self.compute_dtype)
        params = ops.cast(params, coordinate_dtype(params.dtype))
        output_size = self._output_hw(images.shape)
        if native_sampler.applicable(images, params):
            # One op each way (TensorFlow, CPU, float32): the coordinates are
            # computed inside the compiled kernel.
            return native_sampler.transform_sample(
                images,
                params,
                self.transform,
                output_size,
                self.padding,
                self.align_corners,
            )
        if self.transform == "affine":
            return affine_sample(
                images,
                ops.reshape(params, (-1, 2, 3)),
                output_size,
                padding=self.padding,
                align_corners=self.align_corners,
            )
        # "attention" (s, tx, ty) and "anisotropic" (sx, sy, tx, ty) are both
        # parameterisations that scale_translate_sample takes as they are.
        return scale_translate_sample(
            images,
            params,
            output_size,
            padding=self.padding,
            align_corners=self.align_corners,
        )

    def compute_output_shape(self, input_shape):
        images_shape, _ = self._check_input_shapes(input_shape)
        out_h, out_w = self._output_hw(images_shape)
        return (images_shape[0], out_h, out_w, images_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "transform": self.transform,
                "output_size": self.output_size,
                "downsample_factor": self.downsample_factor,
                "padding": self.padding,
                "align_corners": self.align_corners,
            }
        )
        return config

    # === Helpers ===

    def _unpack(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(
                "`SpatialTransformer` must be called on a list [images, params]. "
                f"Received: inputs={inputs!r}"
            )
        images, params = inputs
        return ops.convert_to_tensor(images), ops.convert_to_tensor(params)

    def _check_input_shapes(self, input_shape):
        try:
            images_shape, params_shape = (tuple(shape) for shape in input_shape)
        except (TypeError, ValueError):
            raise ValueError(
                "`SpatialTransformer` expects two inputs [images, params]. "
                f"Received: input_shape={input_shape!r}"
            ) from None
        if len(images_shape) != 4 or None in images_shape[1:]:
            raise ValueError(
                "`images` must be a 4D tensor (batch, height, width, channels) "
                "with known height, width and channels. "
                f"Received: images.shape={images_shape}"
            )
        check_not_empty(images_shape)
        n = TRANSFORMS[self.transform]
        if len(params_shape) != 2 or params_shape[1] != n:
            raise ValueError(
                f"`params` must have shape (batch, {n}) for "
                f"transform={self.transform!r}. Received: params.shape={params_shape}"
            )
        batches = (images_shape[0], params_shape[0])
        if None not in batches and batches[0] != batches[1]:
            raise ValueError(
                "`images` and `params` must have the same batch size. Received: "
                f"images.shape={images_shape}, params.shape={params_shape}"
            )
        return images_shape, params_shape

    def _output_hw(self, images_shape):
        if self.output_size is not None:
            return self.output_size
        height, width = images_shape[1], images_shape[2]
        out_h = int(height / self.downsample_factor)
        out_w = int(width / self.downsample_factor)
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"`downsample_factor` is too large for {height}x{width} images: "
                f"the output would be {out_h}x{out_w}. "
                f"Received: downsample_factor={self.downsample_factor!r}"
            )
        return out_h, out_w
