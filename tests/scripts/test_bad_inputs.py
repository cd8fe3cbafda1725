"""Every bad input gets one clear paragraph, the right exit code (2 usage,
1 data), no traceback, and no half-written run directory; each is refused
before training starts. One test per row of the README's bad-input table."""

import os

import numpy as np
import pytest

from cram_keras.experiments import cli, cram_cls, inpaint, rnn_spn


def run(experiment, argv, capsys):
    try:
        code = cli.main(experiment, argv)
    except SystemExit as exit_info:  # argparse: a flag's value is refused
        code = exit_info.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    return code, (errors[0] if errors else "")


@pytest.fixture
def npz_with_channels(tmp_path):
    def make(channels):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(100, 32, 32, channels), dtype=np.uint8)
        path = tmp_path / f"c{channels}.npz"
        np.savez(path, X=images)
        return path

    return make


@pytest.mark.parametrize("channels", [2, 4])
def test_npz_with_2_or_4_channels_is_refused_before_training(
    channels, npz_with_channels, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = ["--smoke", "--dataset", f"npz:{npz_with_channels(channels)}"]
    code, error = run(inpaint.EXPERIMENT, [*argv, "--output-dir", str(out)], capsys)
    assert code == 1
    assert "1 or 3 channels" in error and f"{channels} channels" in error
    assert not out.exists()


def test_batch_larger_than_the_training_set(npz_with_channels, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--smoke",
        "--dataset",
        f"npz:{npz_with_channels(3)}",
        "--batch-size",
        "500",
    ]
    code, error = run(inpaint.EXPERIMENT, [*argv, "--output-dir", str(out)], capsys)
    assert code == 2
    assert "--batch-size 500" in error and "64 training images" in error
    assert not out.exists()


@pytest.mark.parametrize(
    "experiment, argv, name",
    [
        (inpaint.EXPERIMENT, ["--alpha", "nan"], "alpha"),
        (inpaint.EXPERIMENT, ["--set", "d_learning_rate=inf"], "d_learning_rate"),
        (cram_cls.EXPERIMENT, ["--learning-rate", "nan"], "learning_rate"),
        (rnn_spn.EXPERIMENT, ["--downsample", "inf"], "downsample"),
        (rnn_spn.EXPERIMENT, ["--set", "clip_norm=-inf"], "clip_norm"),
    ],
)
def test_nan_and_inf_are_refused(experiment, argv, name, tmp_path, capsys):
    out = tmp_path / "run"
    code, error = run(experiment, ["--smoke", *argv, "--output-dir", str(out)], capsys)
    assert code == 2 and f"`{name}` must be a finite number" in error
    assert not out.exists()


def test_missing_mnist_dir_is_a_data_error(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--smoke",
        "--data-dir",
        str(tmp_path / "nonexistent"),
        "--output-dir",
        str(out),
    ]
    code, error = run(rnn_spn.EXPERIMENT, argv, capsys)
    assert code == 1 and "nonexistent" in error and "--data-dir" in error
    assert not out.exists()


def test_truncated_mnist_file_is_a_data_error(tmp_path, capsys):
    import shutil

    source = os.environ.get("CRAM_KERAS_MNIST_DIR")
    folder = tmp_path / "mnist"
    folder.mkdir()
    names = (
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    )  # fmt: skip
    if source:
        for name in names:
            shutil.copy(os.path.join(source, name), folder / name)
    else:  # A small valid-looking set made here.
        from tests.scripts.conftest import _fake_digits, _write_idx

        x, y = _fake_digits(2000, 0)
        _write_idx(folder / names[0], x)
        _write_idx(folder / names[1], y)
        _write_idx(folder / names[2], x[:500])
        _write_idx(folder / names[3], y[:500])
    data = (folder / names[0]).read_bytes()
    (folder / names[0]).write_bytes(data[: len(data) // 3])
    out = tmp_path / "run"
    argv = ["--smoke", "--data-dir", str(folder), "--output-dir", str(out)]
    code, error = run(rnn_spn.EXPERIMENT, argv, capsys)
    assert code == 1 and names[0] in error
    assert not out.exists()


@pytest.mark.parametrize(
    "experiment", [rnn_spn.EXPERIMENT, cram_cls.EXPERIMENT, inpaint.EXPERIMENT]
)
@pytest.mark.parametrize("flag", ["--output-dir", "--cache-dir"])
def test_dirs_under_a_regular_file(experiment, flag, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    argv = ["--smoke", flag, str(blocker / "sub")]
    if flag == "--cache-dir":
        if experiment is inpaint.EXPERIMENT:
            pytest.skip("the inpainting experiment caches nothing")
        argv += ["--output-dir", str(tmp_path / "run")]
    code, error = run(experiment, argv, capsys)
    assert code == 2 and "is a regular file" in error and flag in error


@pytest.mark.parametrize(
    "experiment", [rnn_spn.EXPERIMENT, cram_cls.EXPERIMENT, inpaint.EXPERIMENT]
)
@pytest.mark.parametrize("where", ["file", "file/sub", "proc"])
def test_a_cache_variable_that_is_no_folder_is_refused(
    experiment, where, monkeypatch, tmp_path, capsys
):
    """CRAM_KERAS_CACHE (data, the compiled kernel, JAX's steps) under a
    regular file, or where the system refuses a folder (in /proc, for any
    user): refused before anything is written, whatever --cache-dir says
    (it names the data cache only)."""
    (tmp_path / "file").write_text("not a folder")
    if where == "proc":
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc on this system")
        cache = "/proc/cram_keras_cache"
        expected = "but it cannot be created ("
    else:
        cache = str(tmp_path / where)
        expected = f"but {str(tmp_path / 'file')!r} is a regular file"
    monkeypatch.setenv("CRAM_KERAS_CACHE", cache)
    out = tmp_path / "run"
    argv = ["--smoke", "--output-dir", str(out)]
    if experiment is not inpaint.EXPERIMENT:
        argv += ["--cache-dir", str(tmp_path / "data_cache")]
    code, error = run(experiment, argv, capsys)
    assert code == 2, error
    assert expected in error
    assert f"Received: CRAM_KERAS_CACHE={cache!r}" in error
    assert "unset it for ~/.cache/cram_keras" in error
    assert not out.exists()


def test_eval_only_on_a_garbage_file(tmp_path, capsys):
    garbage = tmp_path / "model.keras"
    garbage.write_bytes(b"not a zip file at all")
    argv = ["--smoke", "--dataset", "mnist32", "--eval-only", str(garbage)]
    code, error = run(inpaint.EXPERIMENT, argv, capsys)
    assert code == 2 and "is not a readable Keras model file" in error


def test_eval_only_on_another_experiments_model(tmp_path, capsys):
    import keras

    model = rnn_spn.build_model(rnn_spn.smoke_config(model="conv"))
    model(np.zeros((1, 100, 100, 1), "float32"))
    path = tmp_path / "model.keras"
    model.save(path)
    del keras
    argv = ["--smoke", "--dataset", "mnist32", "--eval-only", str(path)]
    code, error = run(inpaint.EXPERIMENT, argv, capsys)
    assert code == 2 and "holds a ConvNet, not an inpainter" in error


def test_eval_only_on_a_model_trained_on_other_data(tmp_path, capsys):
    config = inpaint.smoke_config(dataset="mnist32")
    model = inpaint.compile_model(inpaint.build_model(config, (32, 32, 1), 4), config)
    path = tmp_path / "model.keras"
    model.save(path)
    bundled_svhn = ["--smoke", "--dataset", "svhn", "--eval-only", str(path)]
    code, error = run(inpaint.EXPERIMENT, bundled_svhn, capsys)
    assert code == 2
    assert "1 channel(s)" in error and "32x32x3" in error


def test_unknown_set_key_lists_the_valid_ones(tmp_path, capsys):
    argv = [
        "--smoke",
        "--set",
        "learning_rat=1e-3",
        "--output-dir",
        str(tmp_path / "r"),
    ]
    code, error = run(rnn_spn.EXPERIMENT, argv, capsys)
    assert code == 2 and "no setting 'learning_rat'" in error
    assert "learning_rate" in error.split("Valid keys:")[1]


def test_a_changed_config_over_completed_epochs_names_the_fields(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--smoke", "--set", "n_train=16", "--set", "epochs=1",
            "--output-dir", str(out)]  # fmt: skip
    assert run(rnn_spn.EXPERIMENT, argv, capsys)[0] == 0
    code, error = run(rnn_spn.EXPERIMENT, [*argv, "--batch-size", "8"], capsys)
    assert code == 2
    assert "batch_size: 16 -> 8" in error and "--overwrite" in error


@pytest.mark.parametrize(
    "experiment, argv",
    [
        (rnn_spn.EXPERIMENT, ["--dtype-policy", "mixed_float16"]),
        (cram_cls.EXPERIMENT, ["--set", "dtype_policy=float16"]),
    ],
)
def test_an_unsupported_dtype_policy_names_the_supported_ones(
    experiment, argv, tmp_path, capsys
):
    out = tmp_path / "run"
    code, error = run(experiment, ["--smoke", *argv, "--output-dir", str(out)], capsys)
    assert code == 2
    assert "`dtype_policy` must be one of ('float32', 'mixed_bfloat16')" in error
    assert "Received: dtype_policy=" in error
    assert not out.exists()


@pytest.mark.parametrize("experiment", [rnn_spn.EXPERIMENT, inpaint.EXPERIMENT])
def test_a_bad_native_sampler_setting_is_refused_before_training(
    experiment, monkeypatch, tmp_path, capsys
):
    from cram_keras.ops import native_sampler

    monkeypatch.setenv(native_sampler.ENV_VAR, "yes")
    monkeypatch.setitem(native_sampler._state, "enabled", None)
    out = tmp_path / "run"
    code, error = run(experiment, ["--smoke", "--output-dir", str(out)], capsys)
    assert code == 2
    assert "CRAM_KERAS_NATIVE_SAMPLER must be 1" in error
    assert "Received: CRAM_KERAS_NATIVE_SAMPLER='yes'" in error
    assert not out.exists()


def test_the_native_sampler_without_a_compiler_is_refused_before_training(
    monkeypatch, tmp_path, capsys
):
    from cram_keras.ops import native_sampler

    monkeypatch.setenv(native_sampler.ENV_VAR, "1")
    monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setitem(native_sampler._state, "enabled", None)
    monkeypatch.setitem(native_sampler._state, "library", None)
    out = tmp_path / "run"
    code, error = run(rnn_spn.EXPERIMENT, ["--smoke", "--output-dir", str(out)], capsys)
    assert code == 2
    assert "'no-such-compiler' was not found" in error
    assert "CRAM_KERAS_NATIVE_SAMPLER=0" in error
    assert not out.exists()


def test_a_bad_sampler_isa_with_the_kernel_forced_is_refused_before_training(
    monkeypatch, tmp_path, capsys
):
    from cram_keras.ops import native_sampler

    monkeypatch.setenv(native_sampler.ENV_VAR, "1")
    monkeypatch.setenv(native_sampler.ISA_ENV_VAR, "sse")
    monkeypatch.setenv(native_sampler.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setitem(native_sampler._state, "enabled", None)
    monkeypatch.setitem(native_sampler._state, "library", None)
    out = tmp_path / "run"
    code, error = run(rnn_spn.EXPERIMENT, ["--smoke", "--output-dir", str(out)], capsys)
    assert code == 2
    assert "CRAM_KERAS_SAMPLER_ISA must be one of avx512, avx2, scalar" in error
    assert "Received: CRAM_KERAS_SAMPLER_ISA='sse'" in error
    assert not out.exists()


# === Sizes that leave nothing to compute ===
#
# A setting whose output (a crop, a hole's context, a glimpse window, a
# feature map) would be empty or smaller than a pixel is refused when the
# Config is made: one paragraph naming the setting, its command-line
# spelling, the valid range computed from the other settings, and the value.


def refused(config_cls, **settings):
    with pytest.raises(ValueError) as info:
        config_cls(**settings)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_largest_downsample_is_the_last_that_the_classifier_can_take():
    # References: the transformer layer's own output size, and the
    # classifier's own layers on crops of that size.
    from cram_keras.experiments.rnn_spn_config import max_downsample
    from cram_keras.layers import SpatialTransformer
    from cram_keras.models.rnn_spn import classification_cnn

    largest = max_downsample()
    assert largest == 5.555

    def crop(downsample):
        layer = SpatialTransformer("affine", downsample_factor=downsample)
        return layer.compute_output_shape(((1, 100, 100, 1), (1, 6)))[1]

    assert crop(largest) == 18 and crop(largest + 0.001) == 17
    smallest = classification_cnn(4, 8, 0.0)(np.zeros((1, 18, 18, 1), "float32"))
    assert smallest.shape == (1, 8)
    with pytest.raises(ValueError, match="negative"):
        classification_cnn(4, 8, 0.0)(np.zeros((1, 17, 17, 1), "float32"))
    for model in ("rnn_spn", "ffn_spn"):
        assert rnn_spn.Config(model=model, downsample=largest).downsample == largest


@pytest.mark.parametrize("model", ["rnn_spn", "ffn_spn"])
@pytest.mark.parametrize(
    "downsample, crop", [(5.556, 17), (6, 16), (50, 2), (100, 1), (1000, 0)]
)
def test_a_downsample_that_leaves_the_classifier_no_pixel_is_refused(
    model, downsample, crop
):
    message = refused(rnn_spn.Config, model=model, downsample=downsample)
    assert message.startswith(
        "`downsample` (--downsample) must be a number in [1, 5.555]"
    )
    assert "at least 18 pixels" in message
    assert message.endswith(
        f"Received: downsample={downsample!r} ({crop}x{crop}-pixel crops)"
    )


def test_the_conv_model_has_no_transformer_and_ignores_downsample():
    assert rnn_spn.Config(model="conv", downsample=1000).downsample == 1000


@pytest.mark.parametrize("name", ["hole_size", "min_hole", "max_hole"])
@pytest.mark.parametrize("value", [0, 32, 100])
def test_a_hole_of_no_pixel_or_of_the_whole_image_is_refused(name, value):
    settings = {name: value}
    if name == "min_hole" and value > 16:
        settings["max_hole"] = 31  # not refused for being above max_hole
    message = refused(inpaint.Config, **settings)
    assert message.startswith(
        f"`{name}` (--set {name}=N) must be an integer in 1..31: "
    )
    assert "32x32 image" in message and message.endswith(f"Received: {name}={value}")


def test_the_largest_holes_leave_a_pixel_to_inpaint_from():
    # Reference: the masks themselves.
    from cram_keras.data.inpainting import inpainting_masks

    config = inpaint.Config(hole_size=31, min_hole=31, max_hole=31)
    for kind in ("center", "random"):
        masks = inpainting_masks(
            4, 32, kind, config.hole_size, config.min_hole, config.max_hole, seed=0
        )
        assert masks.shape == (4, 32, 32, 1)
        assert (masks.reshape(4, -1).sum(axis=1) == 31 * 31).all()
    with pytest.raises(ValueError):
        inpainting_masks(1, 32, "center", hole_size=32)


@pytest.mark.parametrize("min_scale", [0.0, 0.01, 1 / 32 - 1e-6, 1.0, 1.5])
def test_a_glimpse_window_under_a_pixel_or_over_the_image_is_refused(min_scale):
    message = refused(inpaint.Config, min_scale=min_scale, initial_scale=0.99)
    assert message.startswith(
        "`min_scale` (--set min_scale=S) must be a finite number in [0.03125, 1.0): "
    )
    assert "min_scale x 32 pixels" in message
    assert message.endswith(f"Received: min_scale={min_scale!r}")


def test_the_smallest_window_is_one_pixel_of_the_32():
    config = inpaint.Config(min_scale=1 / 32, initial_scale=0.5)
    assert config.min_scale * 32 == 1.0


def test_a_searched_glimpse_window_under_a_pixel_is_refused():
    message = refused(inpaint.Config, min_scale_range=[0.01, 0.3])
    assert message.startswith(
        "`min_scale_range` (--set min_scale_range=LOW,HIGH) must be [low, high] "
        "with 0.03125 <= low: "
    )
    assert message.endswith("Received: min_scale_range=[0.01, 0.3]")
    assert inpaint.Config(min_scale_range=[1 / 32, 0.3]).min_scale_range[0] == 1 / 32


@pytest.mark.parametrize(
    "min_scale, initial_scale", [(0.375, 0.375), (0.375, 0.2), (0.2, 1.0), (0.5, 2.0)]
)
def test_a_first_window_outside_its_bounds_is_refused(min_scale, initial_scale):
    # Reference: the localisation network refuses the same pair.
    from cram_keras.layers import LocalizationNetwork

    with pytest.raises(ValueError):
        LocalizationNetwork(min_scale=min_scale, initial_scale=initial_scale)
    message = refused(inpaint.Config, min_scale=min_scale, initial_scale=initial_scale)
    assert message.startswith(
        f"`initial_scale` (--set initial_scale=S) must be a finite number in "
        f"({min_scale}, 1.0): "
    )
    assert message.endswith(f"Received: initial_scale={initial_scale!r}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, argv, first_words",
    [
        ("train_rnn_spn.py", ["--downsample", "1000"], "`downsample` (--downsample)"),
        (
            "train_inpaint.py",
            ["--set", "min_scale=0.01"],
            "`min_scale` (--set min_scale=S)",
        ),
    ],
)
def test_a_script_refuses_an_empty_output_in_one_paragraph(
    script, argv, first_words, tmp_path
):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, os.path.join(root, script), "--smoke", *argv,
         "--output-dir", str(out)],
        capture_output=True, text=True, cwd=root, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {first_words} must be")
    assert "Received: " in errors[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "experiment, argv, what",
    [
        (rnn_spn.EXPERIMENT, ["--set", "n_train=65"],
         "the 65 training sequences in batches of 16 end with a batch of 1"),
        (cram_cls.EXPERIMENT, ["--set", "n_test=17"],
         "the 17 test images in batches of 16 end with a batch of 1"),
        (inpaint.EXPERIMENT, ["--set", "n_test=33"],
         "the 33 test images in batches of 32 end with a batch of 1"),
        (inpaint.EXPERIMENT, ["--batch-size", "1"],
         "but --batch-size is 1, so a replica would get no example"),
    ],
)  # fmt: skip
def test_a_batch_too_small_for_the_replicas_is_refused(
    experiment, argv, what, monkeypatch, tmp_path, capsys
):
    """Under a strategy of 2 replicas (stood in for: one process sees one
    CPU), a batch of 1 would leave a replica without an example."""
    import tensorflow as tf

    from cram_keras.training import distribute

    def two_replicas(name):
        return distribute.Distribution(name, tf.distribute.get_strategy(), replicas=2)

    monkeypatch.setattr(distribute, "resolve_strategy", two_replicas)
    out = tmp_path / "run"
    argv = ["--smoke", "--strategy", "mirrored", *argv, "--output-dir", str(out)]
    code, error = run(experiment, argv, capsys)
    assert code == 2, error
    assert "--strategy mirrored splits every batch over 2 replicas" in error
    assert what in error
    assert not out.exists()
