"""RNN-SPN Table 1: the paper protocol, one variant per row.

Reproduces: Table 1 of the RNN-SPN paper (Sønderby et al. 2015): RNN-SPN and
    FFN-SPN at d = 1..4 and the CNN on cluttered MNIST sequences, with
    the released code's protocol (60k / 10k / 10k sequences, batch 100,
    RMSprop 5e-4, two-stage clipping, its learning-rate rule, early
    stopping with patience 50 on the validation per-digit error, up to
    300 epochs; the test error of the best validation epoch), the
    learning curves (assets/rnn_spn_paper_curves.png) and Fig. 3
Command: python run_study.py rnn_spn/table1 --data-dir MNIST_DIR
Hardware: one NVIDIA H200 with JAX (the d = 2 rows, three at once:
    benchmarks/results/rnn_spn_paper_gpu.json); Intel Xeon, 2 cores, no
    GPU, TensorFlow (RNN-SPN d = 2 and d = 3: rnn_spn_paper.json)
Wall time: 7 to 11 min per d = 2 row on the H200; on the CPU 3.6 min
    (d = 3) to 4.9 min (d = 2) per epoch

The rows train in stages (SCHEDULE: first RNN-SPN rows to 60 epochs, the
others to 20, then each to the end of its protocol), each in its own run
directory named as its variant; a stopped campaign continues when rerun.
One row alone: `python train_rnn_spn.py --config table1:rnn_spn_d3`.
"""

PROTOCOL = "table1"
SETTINGS = dict(gru_initializer="lasagne")
VARIANTS = {
    "rnn_spn_d1": dict(model="rnn_spn", downsample=1.0),
    "rnn_spn": dict(model="rnn_spn", downsample=2.0),
    "rnn_spn_d3": dict(model="rnn_spn", downsample=3.0),
    "rnn_spn_d4": dict(model="rnn_spn", downsample=4.0),
    "ffn_spn_d1": dict(model="ffn_spn", downsample=1.0),
    "ffn_spn": dict(model="ffn_spn", downsample=2.0),
    "ffn_spn_d3": dict(model="ffn_spn", downsample=3.0),
    "ffn_spn_d4": dict(model="ffn_spn", downsample=4.0),
    "conv": dict(model="conv"),
}
SEEDS = [0]
# The rows a plain run trains, in order: the paper's d = 2 rows.
DEFAULT_VARIANTS = ["rnn_spn", "ffn_spn", "conv"]
# The first stage: each model to this many epochs, in this order.
SCHEDULE = {"rnn_spn": 60, "ffn_spn": 20, "conv": 20}
OUTPUT = "benchmarks/results/rnn_spn_paper.json"
FIGURES = {
    "curves": "assets/rnn_spn_paper_curves.png",
    "attention": {"rnn_spn": "assets/rnn_spn_attention.png"},
}
