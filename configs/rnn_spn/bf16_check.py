"""RNN-SPN under float32 and mixed_bfloat16: the short training run.

Reproduces: beyond the paper: whether Keras' mixed_bfloat16 policy keeps
    RNN-SPN's learning curves (the paper's recipe on 20k sequences, 10
    epochs, one seed, from the same initial weights), beside its step
    time (benchmarks/bf16_check.py)
Command: python benchmarks/bf16_check.py --config rnn_spn/bf16_check --data-dir MNIST_DIR
Hardware: AMD EPYC (AVX-512 with BF16), 2 cores, no GPU
Wall time: about 1 h (2 runs of 10 epochs)
"""

SETTINGS = dict(model="rnn_spn", epochs=10, n_train=20000, n_valid=5000, n_test=5000)
OUTPUT = "benchmarks/results/bf16_check.json"
