"""RNN-SPN Table 1: dropout and downsample factor chosen on the validation set.

Reproduces: the choice the RNN-SPN paper describes for Table 1
    ("down-sampling factors and dropout rates optimized on the validation
    set"; it reports neither the grid nor the values chosen), with the
    validation set alone: per model, the grid's trial with the lowest
    validation per-digit error at its best epoch
Command: python run_study.py rnn_spn/dropout_search --data-dir MNIST_DIR
Hardware: not run yet
Wall time: not run yet (99 trials of 20 epochs on the full training set)

Each trial trains the paper's setting with the grid's dropout rate,
placement and d for EPOCHS_PER_TRIAL epochs, seed 0, the dropout ramp over
the first 5 epochs, as its own paused run directory that never evaluates
the test set.
"""

PROTOCOL = "dropout_search"
SETTINGS = dict(dropout_ramp_epochs=5)
GRID = dict(
    models=["rnn_spn", "ffn_spn", "conv"],
    rates=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
    placements=["code", "paper"],
    downsample=[1.0, 2.0, 3.0, 4.0],
)
EPOCHS_PER_TRIAL = 20
OUTPUT = "benchmarks/results/rnn_spn_dropout_search.json"
