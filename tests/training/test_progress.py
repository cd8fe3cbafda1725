"""The line per epoch of a run (`EpochProgress`): its number of the run's
epochs, the epoch's wall time from the end of the previous one, and an ETA
of the epochs left times the mean of the recent epochs, leaving out the
first epoch (which also compiles) once later ones are timed."""

import io
import re

import pytest

from cram_keras.training.progress import EpochProgress, format_seconds


class Clock:
    """Returns the given times, one per call."""

    def __init__(self, *times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def lines_of(stream):
    return stream.getvalue().splitlines()


def test_epoch_time_and_eta_from_the_recent_epochs():
    # Epochs end 20 s, 2 s, 4 s and 6 s after the previous one.
    stream = io.StringIO()
    progress = EpochProgress(10, stream=stream, clock=Clock(100, 120, 122, 126, 132))
    progress.start()
    progress.epoch_end(0, {"loss": 2.3456789})
    progress.epoch_end(1, {"loss": 1.5, "val_loss": 1.75})
    progress.epoch_end(2)
    progress.epoch_end(3)
    assert lines_of(stream) == [
        # 9 epochs left x 20 s (the only epoch timed) = 180 s.
        "Epoch 1/10 - 20s - ETA 3m00s - loss: 2.346",
        # 8 x 2 s: the first epoch is left out once another is timed.
        "Epoch 2/10 - 2.0s - ETA 16s - loss: 1.5 - val_loss: 1.75",
        # 7 x (2 + 4) / 2.
        "Epoch 3/10 - 4.0s - ETA 21s",
        # 6 x (2 + 4 + 6) / 3.
        "Epoch 4/10 - 6.0s - ETA 24s",
    ]


def test_eta_counts_only_recent_epochs_and_stops_where_the_run_stops():
    stream = io.StringIO()
    times = [0, 50, 60, 70, 80, 90, 100, 101, 102, 103]
    progress = EpochProgress(12, until=9, recent=3, stream=stream, clock=Clock(*times))
    progress.start()
    for epoch in range(8):
        progress.epoch_end(epoch)
    # After epoch 8 of 12 with until=9: 1 epoch left x mean(10, 1, 1) = 4 s.
    assert lines_of(stream)[-1] == "Epoch 8/12 - 1.0s - ETA 4.0s"
    # The last epoch (e.g. stopped early) leaves nothing.
    progress.epoch_end(8, last=True)
    assert lines_of(stream)[-1] == "Epoch 9/12 - 1.0s - ETA 0.0s"


def test_a_resumed_run_numbers_its_epochs_from_where_it_resumed():
    stream = io.StringIO()
    progress = EpochProgress(50, stream=stream, clock=Clock(0, 30, 40))
    progress.start()
    progress.epoch_end(40)
    progress.epoch_end(41)
    assert lines_of(stream) == [
        "Epoch 41/50 - 30s - ETA 4m30s",
        "Epoch 42/50 - 10s - ETA 1m20s",
    ]


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0.0s"),
        (4.24, "4.2s"),
        (41.2, "41s"),
        (59.4, "59s"),
        (59.6, "1m00s"),
        (185, "3m05s"),
        (3599, "59m59s"),
        (3600 * 2 + 7 * 60 + 10, "2h07m"),
        (-1, "0.0s"),
    ],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_lines_go_to_stdout_by_default(capsys):
    progress = EpochProgress(2, clock=Clock(0, 1.5))
    progress.start()
    line = progress.epoch_end(0, {"acc": 0.5})
    assert capsys.readouterr().out == line + "\n"
    assert re.fullmatch(r"Epoch 1/2 - 1\.5s - ETA 1\.5s - acc: 0\.5", line)


def test_with_early_stopping_the_eta_gives_the_stop_and_the_end():
    stream = io.StringIO()
    progress = EpochProgress(2000, stream=stream, clock=Clock(0, 30, 40, 50, 60))
    progress.start()
    # 3 epochs more without improvement stop the run: 3 x 10 s; the end of
    # the run's 2000 epochs is 1997 x 10 s away.
    progress.epoch_end(0, stops_within=3)
    progress.epoch_end(1, stops_within=3)
    assert lines_of(stream)[-1] == (
        "Epoch 2/2000 - 10s - ETA 30s without a better epoch, at most 5h33m"
    )
    # Fewer epochs left than patience: one ETA, as without early stopping.
    progress = EpochProgress(5, stream=stream, clock=Clock(0, 10, 20))
    progress.start()
    progress.epoch_end(2, stops_within=50)
    progress.epoch_end(3, stops_within=50)
    assert lines_of(stream)[-1] == "Epoch 4/5 - 10s - ETA 10s"
    # The stopping epoch itself leaves nothing.
    progress = EpochProgress(2000, stream=stream, clock=Clock(0, 10))
    progress.start()
    progress.epoch_end(7, last=True, stops_within=0)
    assert lines_of(stream)[-1] == "Epoch 8/2000 - 10s - ETA 0.0s"
