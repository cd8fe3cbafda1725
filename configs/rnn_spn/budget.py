"""RNN-SPN Table 1's three d = 2 models for 2 epochs on 20k sequences.

Reproduces: a short CPU run of the RNN-SPN paper's Table 1 models (RNN-SPN,
    FFN-SPN, CNN at d = 2) with the paper's optimiser and schedule, kept
    for reference; the tables use the full protocol (rnn_spn/table1)
Command: python run_study.py rnn_spn/budget --data-dir MNIST_DIR
Hardware: AMD EPYC, 2 cores, no GPU
Wall time: 31 min (3 runs of 2 epochs)

The GRU starts from Keras' initialisation, the default when this ran.
"""

PROTOCOL = "rnn_spn_budget"
SETTINGS = dict(epochs=2, n_train=20000, gru_initializer="keras")
VARIANTS = {
    "rnn_spn": dict(model="rnn_spn"),
    "ffn_spn": dict(model="ffn_spn"),
    "conv": dict(model="conv"),
}
SEEDS = [0]
OUTPUT = "benchmarks/results/rnn_spn_budget.json"
