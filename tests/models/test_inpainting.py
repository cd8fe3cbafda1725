"""CRAM inpainting networks and the GAN model: shapes and architecture, the
local crop, the completed image, the losses (against NumPy references with
stub networks), optimizer isolation, warm-up and serialisation (mirrored training:
tests/training/test_distribute.py)."""

import os

import keras
import numpy as np
import pytest
from keras import layers, ops

from cram_keras.data.masks import center_mask, random_rectangle_masks
from cram_keras.models.inpainting import (
    CNNEncoder,
    CRAMInpainter,
    GlobalDiscriminator,
    InpaintingGenerator,
    LocalDiscriminator,
    crop_around_hole,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def softplus(x):
    return np.log1p(np.exp(x))


def tiny_model(channels=1, **kwargs):
    model = CRAMInpainter(
        CNNEncoder(units=16, filters=(4, 4, 4)),
        InpaintingGenerator(32, channels, filters=(8, 4, 4)),
        LocalDiscriminator(16, filters=(4, 4, 4, 4), units=8),
        GlobalDiscriminator(filters=(4, 4, 4), units=8),
        **kwargs,
    )
    model.build([(None, 32, 32, channels), (None, 32, 32, 1)])
    return model


def compile_adam(model, rate=1e-2):
    model.compile(
        g_optimizer=keras.optimizers.Adam(rate),
        local_d_optimizer=keras.optimizers.Adam(rate),
        global_d_optimizer=keras.optimizers.Adam(rate),
        jit_compile=False,
    )
    return model


def images_and_masks(n=4, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 32, 32, channels)).astype("float32")
    masks = random_rectangle_masks(n, 32, 4, 12, seed=seed)
    return images, masks


def snapshot(layer):
    return [np.array(v.numpy()) for v in layer.weights]


def trainable_snapshot(layer):
    return [np.array(v.numpy()) for v in layer.trainable_weights]


def changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


# === Stub networks with known outputs, for the loss references ===


class ConstantGenerator(layers.Layer):
    """G(z) = a trainable constant image (z enters with weight 0)."""

    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = np.asarray(value, "float32")

    def build(self, input_shape):
        self.image = self.add_weight(
            shape=self.value.shape, initializer=keras.initializers.Constant(self.value)
        )

    def call(self, z, training=None):
        zero = 0.0 * ops.sum(z, axis=1)[:, None, None, None]
        return self.image[None] + zero


class ConstantDiscriminator(layers.Layer):
    """logit = a trainable constant c (the images enter with weight 0)."""

    def __init__(self, logit, local=False, **kwargs):
        super().__init__(**kwargs)
        self.logit, self.local = float(logit), local

    def build(self, input_shape):
        self.c = self.add_weight(
            shape=(1,), initializer=keras.initializers.Constant(self.logit)
        )

    def call(self, inputs, training=None):
        images = inputs[0] if self.local else inputs
        return self.c[None, :] + 0.0 * ops.sum(images, axis=(1, 2, 3))[:, None]


class FixedGlimpseEncoder(layers.Layer):
    """A CNNEncoder that also returns one trainable glimpse tau = (s, tx, ty)."""

    def __init__(self, tau, glimpse_size, **kwargs):
        super().__init__(**kwargs)
        self.initial_tau = np.asarray(tau, "float32")
        self.glimpse_size = glimpse_size
        self.cnn = CNNEncoder(units=8, filters=(4, 4, 4))

    def build(self, input_shape):
        self.cnn.build(input_shape)
        self.tau = self.add_weight(
            shape=(3,), initializer=keras.initializers.Constant(self.initial_tau)
        )

    def call(self, inputs, training=None, return_glimpses=False):
        z = self.cnn(inputs, training=training)
        tau = ops.broadcast_to(self.tau[None, None, :], (ops.shape(z)[0], 1, 3))
        return (z, tau, None) if return_glimpses else z


def stub_model(generator_value, local_logit, global_logit, encoder=None, **kwargs):
    model = CRAMInpainter(
        encoder or CNNEncoder(units=8, filters=(4, 4, 4)),
        ConstantGenerator(generator_value),
        ConstantDiscriminator(local_logit, local=True),
        ConstantDiscriminator(global_logit),
        **kwargs,
    )
    model.build([(None, 32, 32, 1), (None, 32, 32, 1)])
    return compile_adam(model)


# === Networks ===


def test_generator_upsamples_with_3x3_stride_2_to_image_range():
    gen = InpaintingGenerator(32, 3, filters=(16, 8, 4))
    z = np.random.default_rng(0).normal(size=(5, 20)).astype("float32") * 100.0
    out = ops.convert_to_numpy(gen(z))
    assert out.shape == (5, 32, 32, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    deconvs = [
        x for x in gen._flatten_layers() if isinstance(x, layers.Conv2DTranspose)
    ]
    assert [d.kernel_size for d in deconvs] == [(3, 3)] * 3
    assert [d.strides for d in deconvs] == [(2, 2)] * 3
    assert gen.start_size == 4
    with pytest.raises(ValueError, match="divisible"):
        InpaintingGenerator(30, 3, filters=(16, 8, 4))


@pytest.mark.parametrize(
    "disc, convs, features",
    # Local: a 16x16 crop -> 8 -> 4 -> 2 -> 1 x 512; global: 32 -> 16 -> 8 -> 4 x 256.
    [(LocalDiscriminator(16), 4, 1 * 1 * 512), (GlobalDiscriminator(), 3, 4 * 4 * 256)],
)
def test_discriminators_are_5x5_stride_2_cnns_and_2_layer_mlps(disc, convs, features):
    images = np.zeros((2, 32, 32, 3), "float32")
    masks = np.repeat(center_mask()[None], 2, axis=0)
    logits = (
        disc([images, masks]) if isinstance(disc, LocalDiscriminator) else disc(images)
    )
    assert tuple(logits.shape) == (2, 1)
    conv_layers = [x for x in disc._flatten_layers() if isinstance(x, layers.Conv2D)]
    dense_layers = sorted(
        (x for x in disc._flatten_layers() if isinstance(x, layers.Dense)),
        key=lambda x: x.name,
    )
    assert len(conv_layers) == convs and len(dense_layers) == 2
    assert all(c.kernel_size == (5, 5) and c.strides == (2, 2) for c in conv_layers)
    assert dense_layers[0].kernel.shape[0] == features  # the local one sees the crop
    # Logits: the last dense layer is linear (no sigmoid, no batch norm).
    assert dense_layers[-1].activation is keras.activations.linear


def test_cnn_encoder_ignores_the_clue_and_has_no_glimpses():
    enc = CNNEncoder(units=8, filters=(4, 4, 4))
    images, masks = images_and_masks(3)
    z1 = ops.convert_to_numpy(enc([images, masks]))
    z2, tau, patches = enc([images, 1.0 - masks], return_glimpses=True)
    np.testing.assert_array_equal(z1, ops.convert_to_numpy(z2))
    assert tau is None and patches is None and z1.shape == (3, 8)


# === The local crop ===


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_local_crop_is_centred_on_the_hole(seed):
    # Holes filled with a marker value on a zero image: the crop holds the
    # whole marker, with equal margins (up to one pixel) unless clamped.
    masks = random_rectangle_masks(16, 32, 2, 10, seed=seed)
    images = np.where(masks > 0.5, 7.0, 0.0).astype("float32")
    images = np.concatenate([images, -images], axis=-1)  # two channels
    crops = ops.convert_to_numpy(crop_around_hole(images, masks, 16))
    assert crops.shape == (16, 16, 16, 2)
    for crop, mask in zip(crops, masks, strict=True):
        hole = mask[..., 0] > 0.5
        assert (crop[..., 0] == 7.0).sum() == hole.sum()  # all of the hole
        ys, xs = np.nonzero(crop[..., 0] == 7.0)
        hy, hx = np.nonzero(hole)
        for got, full in ((ys, hy), (xs, hx)):
            before, after = got.min(), 15 - got.max()
            clamped = full.min() - got.min() == 0 or full.max() - got.max() == 16
            assert clamped or abs(before - after) <= 1
    # The paper's centred 8x8 hole: rows and columns 8..23, 4-pixel margins.
    image = np.arange(32 * 32, dtype="float32").reshape(1, 32, 32, 1)
    crop = ops.convert_to_numpy(crop_around_hole(image, center_mask()[None], 16))
    np.testing.assert_array_equal(crop, image[:, 8:24, 8:24])


def test_local_discriminator_sees_only_the_crop():
    disc = LocalDiscriminator(16, filters=(4, 4, 4, 4), units=8)
    rng = np.random.default_rng(0)
    images = rng.random((2, 32, 32, 1)).astype("float32")
    masks = np.repeat(center_mask()[None], 2, axis=0)
    other = images.copy()
    other[:, :8] = 0.0  # outside rows 8..23
    other[:, :, 24:] = 1.0
    np.testing.assert_array_equal(
        ops.convert_to_numpy(disc([images, masks])),
        ops.convert_to_numpy(disc([other, masks])),
    )


# === Completed image, encoder input ===


def test_completed_image_is_the_input_outside_the_hole_exactly():
    model = tiny_model(channels=3)
    images, masks = images_and_masks(4, channels=3)
    completed = ops.convert_to_numpy(model([images, masks]))
    generated, tau = model.generate(images, masks)
    outside = np.broadcast_to(masks < 0.5, images.shape)
    np.testing.assert_array_equal(completed[outside], images[outside])
    np.testing.assert_allclose(
        completed[~outside],
        ops.convert_to_numpy(generated)[~outside],
        rtol=0,
        atol=1e-7,
    )
    assert tau is None


def test_encoder_sees_zeros_in_the_hole_and_the_mask_as_clue():
    seen = {}

    class SpyEncoder(CNNEncoder):
        def call(self, inputs, training=None, return_glimpses=False):
            seen["image"], seen["clue"] = (ops.convert_to_numpy(t) for t in inputs)
            return super().call(
                inputs, training=training, return_glimpses=return_glimpses
            )

    model = CRAMInpainter(
        SpyEncoder(units=8, filters=(4, 4, 4)),
        InpaintingGenerator(32, 1, filters=(4, 4, 4)),
        LocalDiscriminator(16, filters=(4, 4, 4, 4), units=8),
        GlobalDiscriminator(filters=(4, 4, 4), units=8),
    )
    images, masks = images_and_masks(3)
    images += 0.5  # no zeros in the image itself
    model([images, masks])
    np.testing.assert_array_equal(seen["clue"], masks)
    np.testing.assert_array_equal(seen["image"], np.where(masks > 0.5, 0.0, images))


# === Losses against NumPy references ===


def test_losses_match_numpy_references_and_warmup_switches_gan_on():
    value = np.full((32, 32, 1), 0.25, "float32")
    model = stub_model(value, 0.3, -0.7, alpha=2.0, beta=0.5, warmup_steps=1)
    images, masks = images_and_masks(4)
    losses, _ = model.compute_losses_and_gradients(images, masks)
    hole = np.broadcast_to(masks > 0.5, images.shape)
    recon = np.mean(
        [np.abs(0.25 - im[h]).mean() for im, h in zip(images, hole, strict=True)]
    )
    adv = softplus(-0.3) + softplus(0.7)
    np.testing.assert_allclose(float(losses["recon_loss"]), recon, rtol=1e-5)
    np.testing.assert_allclose(float(losses["adv_loss"]), adv, rtol=1e-5)
    np.testing.assert_allclose(
        float(losses["local_d_loss"]), softplus(-0.3) + softplus(0.3), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(losses["global_d_loss"]), softplus(0.7) + softplus(-0.7), rtol=1e-5
    )
    assert float(losses["clue_loss"]) == 0.0  # no glimpses, no clue loss
    # Warm-up: the first step is reconstruction-only ...
    np.testing.assert_allclose(float(losses["g_loss"]), 2.0 * recon, rtol=1e-5)
    model.train_step((images, masks))
    # ... then L_gan is on (the constant generator moved by one Adam step).
    losses, _ = model.compute_losses_and_gradients(images, masks)
    expected = 2.0 * float(losses["recon_loss"]) + 0.5 * float(losses["adv_loss"])
    np.testing.assert_allclose(float(losses["g_loss"]), expected, rtol=1e-5)


def test_clue_loss_counts_the_glimpse_outside_the_hole():
    # Centred 8x8 hole of 32x32; a centred window of half-size s = 0.5 is
    # 16x16 pixels, sampled 1:1 by a 16-pixel glimpse: 64 / 256 of it is hole;
    # s = 0.25 is the hole itself, sampled 1:1 by an 8-pixel glimpse.
    masks = np.repeat(center_mask()[None], 2, axis=0)
    images = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    for tau, size, expected in (
        ((0.5, 0.0, 0.0), 16, 0.75),
        ((0.25, 0.0, 0.0), 8, 0.0),
    ):
        encoder = FixedGlimpseEncoder(tau, glimpse_size=size)
        model = stub_model(
            np.zeros((32, 32, 1)), 0.0, 0.0, encoder=encoder, beta=0.0, clue_weight=0.4
        )
        losses, grads = model.compute_losses_and_gradients(images, masks)
        np.testing.assert_allclose(float(losses["clue_loss"]), expected, atol=1e-6)
        np.testing.assert_allclose(
            float(losses["g_loss"]),
            0.4 * expected + float(losses["recon_loss"]),
            rtol=1e-5,
        )
    # The clue loss moves tau (the encoder is in the generator's variables).
    encoder = FixedGlimpseEncoder((0.5, 0.0, 0.0), glimpse_size=16)
    model = stub_model(np.zeros((32, 32, 1)), 0.0, 0.0, encoder=encoder, beta=0.0)
    _, grads = model.compute_losses_and_gradients(images, masks)
    tau_grad = grads["generator"][
        [v.path for v in model.generator_variables].index(encoder.tau.path)
    ]
    assert ops.convert_to_numpy(tau_grad)[0] > 0  # shrinking the window lowers the loss


# === Optimizers: every network moves, each optimizer only its own ===


def test_one_fit_step_changes_all_three_networks_with_finite_losses():
    model = compile_adam(tiny_model())
    images, masks = images_and_masks(8)
    nets = (
        model.encoder,
        model.generator,
        model.local_discriminator,
        model.global_discriminator,
    )
    before = [trainable_snapshot(net) for net in nets]
    history = model.fit(images, masks, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for net, old in zip(nets, before, strict=True):
        assert changed(old, trainable_snapshot(net)), net.name
    for name in ("g_loss", "recon_loss", "adv_loss", "local_d_loss", "global_d_loss"):
        assert np.isfinite(history.history[name][0]), name
    assert int(model.g_optimizer.iterations) == 1
    assert int(model.local_d_optimizer.iterations) == 1
    assert int(model.global_d_optimizer.iterations) == 1


def test_each_optimizer_updates_only_its_own_network():
    model = compile_adam(tiny_model())
    images, masks = images_and_masks(8)
    _, grads = model.compute_losses_and_gradients(images, masks)
    nets = {
        "generator": (model.encoder, model.generator),
        "local_discriminator": (model.local_discriminator,),
        "global_discriminator": (model.global_discriminator,),
    }
    steps = {
        "generator": (model.g_optimizer, model.generator_variables),
        "local_discriminator": (
            model.local_d_optimizer,
            model.local_discriminator.trainable_variables,
        ),
        "global_discriminator": (
            model.global_d_optimizer,
            model.global_discriminator.trainable_variables,
        ),
    }
    for name, (optimizer, variables) in steps.items():
        before = {n: [snapshot(net) for net in group] for n, group in nets.items()}
        optimizer.apply(grads[name], variables)
        for other, group in nets.items():
            after = [snapshot(net) for net in group]
            moved = any(
                changed(b, a) for b, a in zip(before[other], after, strict=True)
            )
            assert moved == (other == name), (name, other)


# === tf.distribute ===
# Mirrored training of the inpainter (three optimizers, the clue loss divided
# by the replicas, three steps, logged losses) against one device:
# tests/training/test_distribute.py, case (c).


# === Evaluation and serialisation ===


def test_test_step_reports_hole_metrics_of_the_completed_images():
    from cram_keras.evaluation.baselines import evaluate_inpainting

    model = compile_adam(tiny_model())
    images, masks = images_and_masks(8)
    scores = model.evaluate(images, masks, batch_size=8, verbose=0, return_dict=True)
    assert set(scores) == {"hole_psnr", "hole_l1", "ssim"}
    expected = evaluate_inpainting(
        images, ops.convert_to_numpy(model([images, masks])), masks
    )
    for name, value in expected.items():
        np.testing.assert_allclose(scores[name], value, rtol=1e-5)


def test_batch_norm_recalibration_averages_the_batch_statistics():
    # Recalibrated on one batch, inference mode reproduces training mode on
    # that batch: every moving mean and variance is that batch's.
    model = compile_adam(tiny_model())
    images, masks = images_and_masks(8)
    model.fit(images, masks, batch_size=8, epochs=1, verbose=0)
    momenta = [
        x.momentum for x in model.generator._flatten_layers() if hasattr(x, "momentum")
    ]
    assert model.recalibrate_batch_norm([(images, masks)] * 3, num_batches=2) == 2
    generated, _ = model.generate(images, masks, training=True)
    inference, _ = model.generate(images, masks, training=False)
    np.testing.assert_allclose(
        ops.convert_to_numpy(inference), ops.convert_to_numpy(generated), atol=2e-5
    )
    assert momenta == [
        x.momentum for x in model.generator._flatten_layers() if hasattr(x, "momentum")
    ]


def test_batch_norm_recalibration_is_the_plain_average_over_batches():
    # Training mode normalises with batch statistics, so each batch's
    # statistics depend on the weights and that batch only: recalibrating on
    # [A, B] must give the mean of recalibrating on [A] and on [B].
    model = compile_adam(tiny_model())
    images, masks = images_and_masks(8)
    model.fit(images, masks, batch_size=8, epochs=1, verbose=0)
    norms = [
        x
        for net in (model.encoder, model.generator)
        for x in net._flatten_layers()
        if isinstance(x, keras.layers.BatchNormalization)
    ]

    def statistics(batches):
        model.recalibrate_batch_norm(batches, num_batches=len(batches))
        return [
            ops.convert_to_numpy(v).astype("float64")
            for x in norms
            for v in (x.moving_mean, x.moving_variance)
        ]

    a, b = (images[:4], masks[:4]), (images[4:], masks[4:])
    both, only_a, only_b = statistics([a, b]), statistics([a]), statistics([b])
    for ab, sa, sb in zip(both, only_a, only_b, strict=True):
        np.testing.assert_allclose(ab, (sa + sb) / 2, rtol=1e-5, atol=1e-6)
    assert any(
        np.abs(sa - sb).max() > 1e-4 for sa, sb in zip(only_a, only_b, strict=True)
    )
    assert getattr(model, "_recalibration_fn", None) is None  # eager: <= 4 batches
    if keras.backend.backend() == "tensorflow":  # more: compiled, once per model
        for _ in range(2):
            assert model.recalibrate_batch_norm([a, b] * 3, num_batches=5) == 5
        assert model._recalibration_fn.experimental_get_tracing_count() == 1


def test_saved_and_reloaded_model_completes_identically(tmp_path):
    model = compile_adam(tiny_model(), rate=1e-2)
    images, masks = images_and_masks(8)
    model.fit(images, masks, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert (
        isinstance(loaded, CRAMInpainter) and loaded.warmup_steps == model.warmup_steps
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded([images, masks])),
        ops.convert_to_numpy(model([images, masks])),
    )
    config = loaded.get_config()
    assert (
        config["alpha"] == 1.0
        and config["beta"] == 1e-3
        and config["clue_weight"] == 0.1
    )


def test_building_builds_every_layer_and_every_weight_without_running():
    """`build` traces the networks on symbolic inputs (no forward pass): every
    layer of the full-size CRAM inpainter ends built, and a training forward
    pass afterwards creates no weight and builds nothing more."""
    from cram_keras.experiments.inpaint import build_model, compile_model
    from cram_keras.experiments.inpaint_config import SMOKE, Config

    config = Config(**SMOKE)
    model = compile_model(build_model(config, (32, 32, 3), 4), config)
    unbuilt = [layer.name for layer in model._flatten_layers() if not layer.built]
    assert not unbuilt
    names = [v.path for v in model.weights]
    assert len(names) > 100
    images, masks = images_and_masks(2, channels=3)
    model.compute_losses(images, masks)
    assert [v.path for v in model.weights] == names
    assert all(layer.built for layer in model._flatten_layers())


def test_infer_returns_the_generators_output_and_glimpses_as_numpy():
    from cram_keras.experiments.inpaint import build_model
    from cram_keras.experiments.inpaint_config import SMOKE, Config

    model = build_model(Config(**SMOKE), (32, 32, 3), 4)
    images, masks = images_and_masks(3, channels=3)
    for ablate in (None, "glimpses", "context"):
        generated, tau = model.infer(images, masks, ablate=ablate)
        assert isinstance(generated, np.ndarray) and isinstance(tau, np.ndarray)
        expected, expected_tau = model.generate(images, masks, ablate=ablate)
        np.testing.assert_array_equal(generated, ops.convert_to_numpy(expected))
        np.testing.assert_array_equal(tau, ops.convert_to_numpy(expected_tau))
    assert tau.shape == (3, SMOKE["glimpses"], 3)
    generated, tau = compile_adam(tiny_model()).infer(*images_and_masks(2))
    assert generated.shape == (2, 32, 32, 1) and tau is None


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="beta=-1"):
        tiny_model(beta=-1)
    with pytest.raises(ValueError, match="warmup_steps=1.5"):
        tiny_model(warmup_steps=1.5)
    with pytest.raises(ValueError, match="crop_size"):
        crop_around_hole(np.zeros((1, 8, 8, 1)), np.ones((1, 8, 8, 1)), 16)


def test_training_on_torch_is_refused_in_one_line(monkeypatch):
    # torch is not installed here: the backend check is asked in this process.
    model = compile_adam(tiny_model())
    images, masks = images_and_masks(2)
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    attempts = {
        "fit": lambda: model.fit(images, masks, verbose=0),
        "evaluate": lambda: model.evaluate(images, masks, verbose=0),
        "predict": lambda: model.predict((images, masks), verbose=0),
        "train_step": lambda: model.train_step((images, masks)),
        "test_step": lambda: model.test_step((images, masks)),
        "predict_step": lambda: model.predict_step((images, masks)),
    }
    for method, attempt in attempts.items():
        with pytest.raises(NotImplementedError) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message, method
        assert message.startswith(f"CRAMInpainter.{method}: "), message
        assert "trains on TensorFlow or JAX only" in message, method
        assert "Received: backend='torch'" in message, method
