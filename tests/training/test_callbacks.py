import json

import keras
import numpy as np
import pytest

from cram_keras.training.callbacks import ResumableEarlyStopping, step_decay_after


def test_step_decay_matches_released_code_schedule():
    # Hand-traced from the released rnn_spn.py: the rate first drops for epoch
    # 32 (0-indexed), then every 12 epochs.
    lrs = [step_decay_after(e, 1.0) for e in range(70)]
    drops = [e for e in range(1, 70) if lrs[e] < lrs[e - 1]]
    assert drops == [32, 44, 56, 68]
    assert lrs[31] == 1.0
    assert lrs[32] == pytest.approx(1 / 1.5)
    assert lrs[69] == pytest.approx(1 / 1.5**4)


def _tiny_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_resumable_early_stopping_persists_state_and_restores_best(tmp_path):
    model = _tiny_model()
    cb = ResumableEarlyStopping(
        str(tmp_path), monitor="val_acc", mode="max", patience=2
    )
    cb.set_model(model)
    cb.on_train_begin()
    model.layers[0].kernel.assign(np.full((2, 1), 7.0, "float32"))
    cb.on_epoch_end(0, {"val_acc": 0.5})
    model.layers[0].kernel.assign(np.zeros((2, 1), "float32"))
    cb.on_epoch_end(1, {"val_acc": 0.4})
    state = json.loads((tmp_path / "early_stopping.json").read_text())
    assert state["best"] == 0.5 and state["best_epoch"] == 0 and state["wait"] == 1

    # A new process resumes: a fresh callback reads the state back and stops
    # after one more epoch without improvement.
    resumed = ResumableEarlyStopping(
        str(tmp_path), monitor="val_acc", mode="max", patience=2
    )
    resumed.set_model(model)
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"val_acc": 0.45})
    assert model.stop_training
    resumed.on_train_end()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.layers[0].kernel), 7.0
    )


def test_missing_monitor_is_a_clear_error(tmp_path):
    cb = ResumableEarlyStopping(str(tmp_path), monitor="val_nope")
    cb.set_model(_tiny_model())
    cb.on_train_begin()
    with pytest.raises(KeyError, match="val_nope"):
        cb.on_epoch_end(0, {"val_acc": 1.0})
