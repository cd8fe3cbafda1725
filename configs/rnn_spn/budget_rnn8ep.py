"""RNN-SPN (d = 2) for 8 epochs on 20k sequences.

Reproduces: a short CPU run of the RNN-SPN paper's Table 1 RNN-SPN, d = 2,
    with the paper's optimiser and schedule, kept for reference; the
    tables use the full protocol (rnn_spn/table1)
Command: python run_study.py rnn_spn/budget_rnn8ep --data-dir MNIST_DIR
Hardware: AMD EPYC, 2 cores, no GPU
Wall time: 11 min (1 run of 8 epochs)

The GRU starts from Keras' initialisation, the default when this ran.
"""

PROTOCOL = "rnn_spn_budget"
SETTINGS = dict(epochs=8, n_train=20000, gru_initializer="keras")
VARIANTS = {"rnn_spn": dict(model="rnn_spn")}
SEEDS = [0]
OUTPUT = "benchmarks/results/rnn_spn_budget_rnn8ep.json"
