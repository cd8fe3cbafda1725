"""RNN-SPN Table 1 under mixed_bfloat16: the paper protocol, RNN-SPN d = 3.

Reproduces: beyond the paper: whether Keras' mixed_bfloat16 policy (bfloat16
    compute, float32 weights and losses; AMX or AVX512_BF16 on a CPU) reaches
    the float32 row's test error at the paper's full protocol: RNN-SPN d = 3
    with the seed, data and initial weights of the float32 row of
    rnn_spn/table1 (rnn_spn_paper.json), beside its training throughput and
    learning curve (assets/rnn_spn_paper_bf16_curves.png)
Command: python train_rnn_spn.py --config table1_bf16:rnn_spn_d3 --data-dir MNIST_DIR
Hardware: Intel Xeon (AVX-512, AVX512_BF16, AMX), 2 cores, no GPU
Wall time: 4.6 h of training (178 epochs, early-stopped), on 2 cores
    shared with other work part of the time

The progress file: python run_study.py rnn_spn/table1_bf16 --report
--data-dir MNIST_DIR --runs-dir RUNS (the run directories as table1's).
"""

PROTOCOL = "table1"
SETTINGS = dict(gru_initializer="lasagne", dtype_policy="mixed_bfloat16")
VARIANTS = {"rnn_spn_d3": dict(model="rnn_spn", downsample=3.0)}
SEEDS = [0]
DEFAULT_VARIANTS = ["rnn_spn_d3"]
SCHEDULE = {"rnn_spn": 300}
OUTPUT = "benchmarks/results/rnn_spn_paper_bf16.json"
FIGURES = {"curves": "assets/rnn_spn_paper_bf16_curves.png", "attention": {}}
# Drawn in grey in the curves figure: the float32 row.
REFERENCE_RUNS = {"RNN-SPN, d = 3, float32": ["rnn_spn_paper.json", "rnn_spn_d3"]}
