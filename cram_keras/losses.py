"""CRAM encoder loss: the clue loss (Chung & Cho, 2018, eq. 9)."""

from keras import ops

from cram_keras.ops import affine_sample

CLUE_REDUCTIONS = ("mean", "sum")


def clue_loss(clue, tau, glimpse_size, reduction="mean"):
    """How much of each glimpse falls outside the clue (CRAM eq. 9).

    For every glimpse `n` the clue is sampled through the same attention
    transform as the image, `theta_n = [[s, 0, tx], [0, s, ty]]` (normalised
    coordinates, x first, `align_corners=False`, zeros padding, bilinear: the
    `SpatialTransformer` with `transform="attention"`), and

        L_n = 1 - mean(ST(clue, tau_n))        in [0, 1] for a {0, 1} clue

    is the fraction of the glimpse that is *not* salient (classification) or
    *not* occluded (inpainting): 0 when the glimpse lies wholly inside the
    clue, 1 when wholly outside. The released code's
    `mean_n (1 - mean(glimpse of the mask))` (weight 0.1 in the total loss) is
    this with `reduction="mean"`; the paper's eq. 9 writes the sum over
    glimpses (of `ST(clue, tau_n)`, where the sign and the `1 -` are evidently
    meant: the loss must fall as the glimpses cover the clue).

    `reduction="mean"` (the default) averages over the `N` glimpses, so the
    loss stays in [0, 1] and the clue weight means the same for any number of
    glimpses (a keras-tuner search over `num_glimpses` does not silently
    rescale the clue term); `"sum"` is the paper's eq. 9 as written and
    equals `N` times the mean. Both are then averaged over the batch.

    Args:
        clue: float tensor `(B, H, W, 1)`, 1 = salient / occluded.
        tau: float tensor `(B, N, 3)` (or `(B, 3)` for one glimpse), the
            attention parameters `(s, tx, ty)` of each glimpse.
        glimpse_size: int or `(height, width)`, the glimpse size in pixels
            (the encoder's, so that the clue is sampled where the image is).
        reduction: `"mean"` or `"sum"` over glimpses.

    Returns:
        Scalar float32 tensor.

    Example:

    >>> clue = np.zeros((1, 8, 8, 1), "float32"); clue[:, :, :4] = 1.0
    >>> clue_loss(clue, np.array([[[0.5, 0.0, 0.0]]], "float32"), 4)  # half
    0.5
    """
    if reduction not in CLUE_REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {CLUE_REDUCTIONS}. "
            f"Received: reduction={reduction!r}"
        )
    if isinstance(glimpse_size, int) and not isinstance(glimpse_size, bool):
        glimpse_size = (glimpse_size, glimpse_size)
    clue = ops.cast(ops.convert_to_tensor(clue), "float32")
    tau = ops.convert_to_tensor(tau)
    if len(tau.shape) == 2:
        tau = ops.expand_dims(tau, 1)
    if len(tau.shape) != 3 or tau.shape[-1] != 3 or len(clue.shape) != 4:
        raise ValueError(
            "`clue_loss` expects clue (B, H, W, 1) and tau (B, N, 3). "
            f"Received: clue.shape={tuple(clue.shape)}, tau.shape={tuple(tau.shape)}"
        )
    num_glimpses = tau.shape[1]
    if num_glimpses is None:
        raise ValueError(
            "`clue_loss` needs a static number of glimpses. "
            f"Received: tau.shape={tuple(tau.shape)}"
        )
    tau = ops.cast(tau, "float32")
    coverage = []
    for n in range(num_glimpses):  # N is small; no N copies of the clue
        scale, tx, ty = tau[:, n, 0], tau[:, n, 1], tau[:, n, 2]
        zero = ops.zeros_like(scale)
        theta = ops.stack([scale, zero, tx, zero, scale, ty], axis=-1)
        patch = affine_sample(clue, ops.reshape(theta, (-1, 2, 3)), glimpse_size)
        coverage.append(ops.mean(patch, axis=(1, 2, 3)))
    coverage = ops.stack(coverage, axis=1)  # (B, N)
    per_image = 1.0 - coverage
    if reduction == "mean":
        per_image = ops.mean(per_image, axis=1)
    else:
        per_image = ops.sum(per_image, axis=1)
    return ops.mean(per_image)
