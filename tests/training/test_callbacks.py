import pytest

from cram_keras.training.callbacks import step_decay_after


def test_step_decay_matches_released_code_schedule():
    # Hand-traced from the released rnn_spn.py: the rate first drops for epoch
    # 32 (0-indexed), then every 12 epochs.
    lrs = [step_decay_after(e, 1.0) for e in range(70)]
    drops = [e for e in range(1, 70) if lrs[e] < lrs[e - 1]]
    assert drops == [32, 44, 56, 68]
    assert lrs[31] == 1.0
    assert lrs[32] == pytest.approx(1 / 1.5)
    assert lrs[69] == pytest.approx(1 / 1.5**4)
