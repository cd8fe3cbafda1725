"""--strategy mirrored on a CPU split into two logical devices: each script's
smoke run goes to the end (training on two replicas, evaluation, figures,
--export) and records the two replicas; and reading a number from a
variable made under a strategy (`python_scalar`), which ``int()`` cannot."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from cram_keras.training.distribute import python_scalar

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs `python SCRIPT ARGS...` after splitting the CPU into two logical
# devices (which must happen before TensorFlow starts).
SPLIT_CPU_AND_RUN = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Per script: extra flags, the run's figures and what its evaluation writes.
SCRIPTS = {
    "train_rnn_spn.py": (
        ["--set", "n_train=32"],
        ["attention.png"],
        "test_per_digit_error",
    ),
    "train_cls.py": ([], ["glimpses.png", "glimpses.gif"], "test_error"),
    "train_inpaint.py": (
        ["--dataset", "mnist32", "--set", "n_train=32"],
        ["inpaint.png", "glimpse_windows.png", "figures/epoch_002.png"],
        "methods",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_mirrored_on_two_logical_cpus_runs_the_script_to_the_end(
    script, fake_mnist_dir, tmp_path
):
    flags, figures, evaluated = SCRIPTS[script]
    out = tmp_path / "run"
    argv = [os.path.join(ROOT, script), "--smoke", "--strategy", "mirrored",
            "--data-dir", str(fake_mnist_dir), "--export", "--output-dir", str(out),
            *flags]  # fmt: skip
    if script != "train_inpaint.py":
        argv += ["--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(
        [sys.executable, "-c", SPLIT_CPU_AND_RUN, *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2"),
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distribution"] == {
        "strategy": "mirrored",
        "replicas": 2,
        "workers": 1,
    }
    assert metrics["epochs"] == 2 and evaluated in metrics
    for name in ["model.keras", "saved_model/saved_model.pb", *figures]:
        assert (out / name).is_file(), name
    if script == "train_inpaint.py":
        # 32 training images in global batches of 16, two epochs: each step
        # of the two replicas counts once.
        assert metrics["steps"]["generator"] == 4


def test_python_scalar_reads_what_int_cannot():
    """`python_scalar` exists because ``int()`` and ``float()`` of a Keras
    variable made under a tf.distribute strategy raise; when the first two
    checks fail, Keras reads such variables itself."""
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        count = keras.Variable(7, dtype="int64", trainable=False)
        rate = keras.Variable(0.25, dtype="float32")
    with pytest.raises(TypeError, match="MirroredVariable"):
        int(count)
    with pytest.raises(TypeError, match="MirroredVariable"):
        float(rate)
    assert python_scalar(count) == 7 and type(python_scalar(count)) is int
    assert python_scalar(rate) == 0.25 and type(python_scalar(rate)) is float
    # Any one-element value, of any rank; anything larger is refused.
    assert python_scalar(np.array([[3]])) == 3
    assert python_scalar(tf.constant([1.5])) == 1.5
    assert python_scalar(np.bool_(True)) is True
    assert python_scalar(2.0) == 2.0
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        python_scalar(np.zeros(2))
