"""CRAM sub-networks and the clue loss: shapes, parameter counts, the bounded
localisation head, an LSTM step against a NumPy LSTM, and the clue loss on
glimpses and clues built by hand. Backend-agnostic (also run under JAX).
Serialisation, saving, a training step and mixed precision:
tests/layers/test_public_layers.py."""

import keras
import numpy as np
import pytest

from cram_keras.layers.context_network import ContextNetwork
from cram_keras.layers.conv_blocks import MLP, ConvStack
from cram_keras.layers.core_network import CoreNetwork
from cram_keras.layers.glimpse_network import GlimpseNetwork
from cram_keras.layers.localization_network import LocalizationNetwork
from cram_keras.layers.spatial_transformer import SpatialTransformer
from cram_keras.losses import clue_loss

RNG = np.random.default_rng(0)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def random_images(batch, size=16, channels=1):
    return RNG.random((batch, size, size, channels)).astype("float32")


def random_clue(batch, size=16):
    return (RNG.random((batch, size, size, 1)) > 0.5).astype("float32")


def conv_bn(cin, cout, k):
    # conv without bias + batch norm (gamma, beta, moving mean, moving variance)
    return k * k * cin * cout + 4 * cout


def dense_bn(cin, cout):
    return cin * cout + 4 * cout


# === Blocks ===


def test_conv_stack_and_mlp_shapes_and_parameter_counts():
    cnn = ConvStack((3, 5), kernel_size=3, pool_size=3, pool_strides=2)
    out = cnn(random_images(2, size=15))  # 15 -> 8 -> 4, flattened
    assert tuple(out.shape) == (2, 4 * 4 * 5)
    assert cnn.count_params() == conv_bn(1, 3, 3) + conv_bn(3, 5, 3)

    mlp = MLP((7, 4))
    assert tuple(mlp(np.zeros((3, 6), "float32")).shape) == (3, 4)
    # hidden: no bias + BN; last: plain dense with bias
    assert mlp.count_params() == dense_bn(6, 7) + 7 * 4 + 4
    assert MLP((7,), activate_last=True)(np.zeros((1, 6))).shape == (1, 7)


# === Context network ===


def test_context_network_shapes_any_batch_and_parameter_count():
    net = ContextNetwork(filters=(2, 3, 4), units=5, state_units=6)
    h0, c0 = net([random_images(2, 60), random_clue(2, 60)])
    assert tuple(h0.shape) == tuple(c0.shape) == (2, 6)
    h0, c0 = net([random_images(1, 60), random_clue(1, 60)])
    assert tuple(h0.shape) == (1, 6)
    assert net.compute_output_shape([(None, 60, 60, 1)] * 2) == [(None, 6)] * 2
    # 60 -avg 4-> 15 -pool-> 8 -> 4 -> 2: 2 * 2 * 4 features per branch.
    cnn = conv_bn(1, 2, 3) + conv_bn(2, 3, 3) + conv_bn(3, 4, 3)
    head = dense_bn(2 * 16, 5) + 5 * 6 + 6
    assert net.count_params() == 2 * cnn + 2 * head


def test_context_network_rejects_mismatched_clue():
    net = ContextNetwork(filters=(2,), units=2, state_units=2)
    with pytest.raises(ValueError, match="same, known height and width"):
        net([random_images(1, 16), random_clue(1, 8)])


EMPTY = {
    "no height": (2, 0, 16, 1),
    "no width": (2, 16, 0, 1),
    "no channels": (2, 16, 16, 0),
}
EMPTY_MESSAGE = r"with a height, width and channels of at least 1\. Received: "


@pytest.mark.parametrize("case", list(EMPTY))
@pytest.mark.parametrize("built", [False, True])
def test_networks_refuse_empty_images_clearly(case, built):
    """An image with no pixels or no channels is refused by name, on the
    first call and after the networks are built."""
    shape = EMPTY[case]
    images = np.zeros(shape, "float32")
    clue = np.zeros((*shape[:3], 1), "float32")
    context = ContextNetwork(filters=(2,), units=2, state_units=2, name="ctx")
    locate = make_localization(name="loc")
    glimpse = GlimpseNetwork(filters=(2,), units=3, name="gl")
    cnn = ConvStack((2,), name="cnn")
    if built:
        context([random_images(2), random_clue(2)])
        locate.features(random_images(2), random_clue(2))
        glimpse([random_images(2, 8), np.zeros((2, 3), "float32")])
        cnn(random_images(2))
    calls = {
        "ctx": lambda: context([images, clue]),
        "loc": lambda: locate.features(images, clue),
        "gl": lambda: glimpse([images, np.zeros((2, 3), "float32")]),
        "cnn": lambda: cnn(images),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"`{name}` expects .*{EMPTY_MESSAGE}"):
            call()


# === Localisation network ===


def make_localization(**kwargs):
    kwargs = dict(filters=(2, 2, 2), units=4) | kwargs
    return LocalizationNetwork(**kwargs)


def test_localization_starts_at_the_stated_centred_glimpse():
    loc = make_localization(min_scale=0.25, initial_scale=0.6)
    features = loc.features(random_images(4), random_clue(4), training=False)
    assert tuple(features.shape) == (4, 2 * 2 * 2 * 2)  # 16 -> 8 -> 4 -> 2
    tau = numpy(loc([features, RNG.normal(size=(4, 7)).astype("float32")]))
    np.testing.assert_allclose(tau, np.tile([0.6, 0.0, 0.0], (4, 1)), atol=1e-6)
    # Another batch size after building.
    features = loc.features(random_images(2), random_clue(2))
    assert tuple(loc([features, np.zeros((2, 7), "float32")]).shape) == (2, 3)


@pytest.mark.parametrize("magnitude", [1.0, 1e3, 1e30])
def test_localization_window_stays_inside_the_image(magnitude):
    loc = make_localization(min_scale=0.2)
    features = loc.features(random_images(4), random_clue(4))
    state = np.zeros((4, 7), "float32")
    loc([features, state])
    # Replace the zero head by a huge random one: the raw outputs are huge.
    kernel, bias = loc.head.get_weights()
    loc.head.set_weights(
        [
            (RNG.normal(size=kernel.shape) * magnitude).astype("float32"),
            (RNG.normal(size=bias.shape) * magnitude).astype("float32"),
        ]
    )
    tau = numpy(
        loc([features, RNG.normal(size=(4, 7)).astype("float32")], training=False)
    )
    # And the parameterisation itself on raw values from -inf to inf.
    raw = np.concatenate(
        [
            RNG.normal(size=(256, 3)) * magnitude,
            np.array([[np.inf, -np.inf, np.inf], [-np.inf, np.inf, -np.inf]]),
        ]
    ).astype("float32")
    tau = np.concatenate([tau, numpy(loc.attention_parameters(raw))])
    scale, t = tau[:, :1], tau[:, 1:]
    assert np.all(np.isfinite(tau))
    assert np.all(scale >= 0.2 - 1e-7) and np.all(scale <= 1.0)
    # The window [t - s, t + s] lies inside [-1, 1] (up to float rounding).
    assert np.all(t - scale >= -1.0 - 1e-6) and np.all(t + scale <= 1.0 + 1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(min_scale=0.0), "min_scale"),
        (dict(min_scale=1.0), "min_scale"),
        (dict(min_scale=0.5, initial_scale=0.4), "initial_scale"),
        (dict(initial_scale=1.0), "initial_scale"),
        (dict(units=0), "units"),
        (dict(filters=()), "filters"),
        (dict(steps=0), "steps"),
        (dict(steps=4, layout="ring"), "layout"),
        (dict(layout="spread"), "layout"),
    ],
)
def test_localization_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        LocalizationNetwork(**kwargs)


@pytest.mark.parametrize("steps", [1, 3])
def test_localization_spread_starts_around_the_centre(steps):
    # Independent geometry: glimpse n's window centred at radius r on the
    # angle 2 pi n / N, r = min(s0 / 2, 0.9 (1 - s0)); one glimpse stays centred.
    s0 = 0.4
    loc = make_localization(
        min_scale=0.25, initial_scale=s0, steps=steps, layout="spread"
    )
    features = loc.features(random_images(3), random_clue(3))
    state = RNG.normal(size=(3, 7)).astype("float32")
    radius = 0.0 if steps == 1 else min(s0 / 2, 0.9 * (1 - s0))
    for n in range(steps):
        tau = numpy(loc([features, state], step=n))
        angle = 2 * np.pi * n / steps
        expected = [s0, radius * np.cos(angle), radius * np.sin(angle)]
        np.testing.assert_allclose(tau, np.tile(expected, (3, 1)), atol=1e-6)
        # Each window contains the image centre.
        assert np.all(np.abs(tau[:, 1:]) < tau[:, :1])
    with pytest.raises(ValueError, match="step=None"):
        loc([features, state])
    with pytest.raises(ValueError, match=f"step={steps}"):
        loc([features, state], step=steps)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="gradient by tf.GradientTape; the step bias is plain keras.ops",
)
def test_localization_per_step_starts_are_learned_separately():
    # Centred per-step starts: all glimpses begin at the shared window, and
    # each step's bias gets the gradient of its own glimpse only.
    loc = make_localization(initial_scale=0.5, steps=2)
    features = loc.features(random_images(2), random_clue(2))
    state = np.zeros((2, 7), "float32")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        taus = [loc([features, state], step=n) for n in range(2)]
        loss = tf.reduce_sum(taus[0][:, 1])  # moves only glimpse 0's tx
    np.testing.assert_allclose(numpy(taus[0]), numpy(taus[1]), atol=0)
    grad = numpy(tape.gradient(loss, loc.step_bias))
    # d tx / d b = (1 - s) (1 - tanh(b)^2) = 0.5 per image at b = 0.
    np.testing.assert_allclose(grad, [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)


# === Glimpse network ===


def test_glimpse_network_shapes_and_multiplicative_interaction():
    net = GlimpseNetwork(filters=(2, 3, 4), units=5)
    patch = random_images(4, size=12)
    tau = RNG.random((4, 3)).astype("float32")
    gv = numpy(net([patch, tau]))
    assert gv.shape == (4, 5)
    assert tuple(net([random_images(2, 12), RNG.random((2, 3))]).shape) == (2, 5)
    # 12 -> 6 -> 3 -> 2: a 16-vector into MLP_what; both MLPs linear.
    cnn = conv_bn(1, 2, 3) + conv_bn(2, 3, 3) + conv_bn(3, 4, 3)
    assert net.count_params() == cnn + (16 * 5 + 5) + (3 * 5 + 5)
    # gv = what(patch) * where(tau): where = tau @ W + b, checked in NumPy.
    w, b = net.where.get_weights()
    what = numpy(net.what(net.what_cnn(patch)))
    np.testing.assert_allclose(gv, what * (tau @ w + b), rtol=1e-5, atol=1e-6)
    net.where.set_weights([np.zeros_like(w), np.zeros_like(b)])
    np.testing.assert_array_equal(numpy(net([patch, tau])), 0.0)


# === Core network ===


def numpy_lstm_step(x, h, c, kernel, recurrent, bias):
    """Keras LSTMCell gates (i, f, c, o), sigmoid / tanh."""
    z = x @ kernel + h @ recurrent + bias
    i, f, g, o = np.split(z, 4, axis=-1)

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return h, c


def test_core_network_is_two_stacked_lstm_steps():
    units = 4
    core = CoreNetwork(units=units)
    gv = RNG.normal(size=(4, 6)).astype("float32")
    s1 = [RNG.normal(size=(4, units)).astype("float32") for _ in range(2)]
    s2 = [RNG.normal(size=(4, units)).astype("float32") for _ in range(2)]
    r1, r2, new1, new2 = core([gv, s1, s2])
    h1, c1 = numpy_lstm_step(gv, *s1, *core.lstm1.get_weights())
    h2, c2 = numpy_lstm_step(h1, *s2, *core.lstm2.get_weights())
    for got, want in [(r1, h1), (r2, h2), (new1[0], h1), (new1[1], c1), (new2[1], c2)]:
        np.testing.assert_allclose(numpy(got), want, rtol=1e-5, atol=1e-5)
    assert numpy(new2[0]).shape == (4, units)
    lstm = 4 * (6 * units + units * units + units)
    lstm += 4 * (units * units + units * units + units)
    assert core.count_params() == lstm


# === Clue loss ===
# Every sampling below is 4 glimpses of an 8x8 clue at 4x4, so that eager JAX
# compiles the sampler once.


def half_clue(batch):
    """Left half salient: columns 0..3 of 8 are 1 (all rows)."""
    clue = np.zeros((batch, 8, 8, 1), "float32")
    clue[:, :, :4] = 1.0
    return clue


INSIDE = [0.25, -0.5, 0.0]  # x in [-0.75, -0.25]: columns 0.75..2.25, all salient
OUTSIDE = [0.25, 0.5, 0.3]  # x in [0.25, 0.75]: columns 4.75..6.25, none salient
HALF = [0.5, 0.0, 0.0]  # x in [-0.5, 0.5]: samples at columns 2, 3, 4, 5 exactly


@pytest.mark.parametrize("tau, expected", [(INSIDE, 0.0), (OUTSIDE, 1.0), (HALF, 0.5)])
def test_clue_loss_on_hand_built_glimpses(tau, expected):
    taus = np.full((2, 2, 3), tau, "float32")
    loss = clue_loss(half_clue(2), taus, glimpse_size=4)
    assert float(numpy(loss)) == pytest.approx(expected, abs=1e-6)


def test_clue_loss_reductions_and_batch_mean():
    tau = np.array([[INSIDE, OUTSIDE], [HALF, HALF]], "float32")
    # image 0: (0 + 1) / 2 = 0.5, image 1: (0.5 + 0.5) / 2 = 0.5
    assert float(numpy(clue_loss(half_clue(2), tau, 4))) == pytest.approx(0.5)
    # sums: 1 and 1
    loss = clue_loss(half_clue(2), tau, 4, reduction="sum")
    assert float(numpy(loss)) == pytest.approx(1.0)
    # (B, 3): one glimpse per image, (0 + 1 + 0.5 + 0.5) / 4.
    loss = clue_loss(half_clue(4), tau.reshape(4, 3), (4, 4))
    assert float(numpy(loss)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="reduction="):
        clue_loss(half_clue(2), tau, 4, reduction="max")


def test_clue_loss_is_one_minus_the_mean_transformed_clue():
    clue = random_clue(4, 8)
    scale = RNG.uniform(0.2, 1.0, (4, 1))
    shift = RNG.uniform(-1.0, 1.0, (4, 2)) * (1.0 - scale)
    tau = np.concatenate([scale, shift], axis=-1).astype("float32")
    st = SpatialTransformer(transform="attention", output_size=(4, 4))
    expected = np.mean(1.0 - numpy(st([clue, tau])).mean(axis=(1, 2, 3)))
    loss = clue_loss(clue, tau[:, None], 4)
    assert float(numpy(loss)) == pytest.approx(expected, abs=1e-6)
    # Two glimpses of two images: the rows of tau in image-major order.
    loss = clue_loss(clue[:2], tau.reshape(2, 2, 3), 4)
    per_glimpse = 1.0 - numpy(st([clue[[0, 0, 1, 1]], tau])).mean(axis=(1, 2, 3))
    assert float(numpy(loss)) == pytest.approx(per_glimpse.mean(), abs=1e-6)
