"""RNN-SPN's GRU initialisation: Keras' defaults against Lasagne's.

Reproduces: beyond the paper: the released code builds its GRU with
    Lasagne's defaults (Normal(0, 0.1) weights, zero biases), Keras'
    are Glorot uniform / orthogonal; both trained with the paper's recipe
    on the same 20k sequences for 6 epochs, seeds 0 and 1: the validation
    curves and the first epoch below 50 % and 20 % error
Command: python run_study.py rnn_spn/init --data-dir MNIST_DIR
Hardware: AMD EPYC, 2 cores, no GPU
Wall time: 1.7 h (4 runs of 6 epochs)
"""

PROTOCOL = "rnn_spn_init"
SETTINGS = dict(model="rnn_spn", epochs=6, n_train=20000)
VARIANTS = {
    "keras": dict(gru_initializer="keras"),
    "lasagne": dict(gru_initializer="lasagne"),
}
SEEDS = [0, 1]
OUTPUT = "benchmarks/results/rnn_spn_init.json"
