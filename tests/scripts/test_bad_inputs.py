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
    argv = ["--smoke", "--model", "conv", "--set", "n_train=16", "--set", "epochs=1",
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
    monkeypatch.setenv(native_sampler.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setitem(native_sampler._state, "enabled", None)
    monkeypatch.setitem(native_sampler._state, "library", None)
    out = tmp_path / "run"
    code, error = run(rnn_spn.EXPERIMENT, ["--smoke", "--output-dir", str(out)], capsys)
    assert code == 2
    assert "'no-such-compiler' was not found" in error
    assert "CRAM_KERAS_NATIVE_SAMPLER=0" in error
    assert not out.exists()
