"""RNN-SPN Table 1 with the dropout chosen on the validation set.

Reproduces: Table 1 of the RNN-SPN paper (Sønderby et al. 2015) as the
    paper trained it, with "dropout rates optimized on the validation set":
    each row the paper protocol of rnn_spn/table1 (60k / 10k / 10k
    sequences, batch 100, RMSprop 5e-4, two-stage clipping, the released
    code's learning-rate rule and dropout ramp, early stopping with
    patience 50, up to 300 epochs, the test error of the best validation
    epoch), at the dropout rate and placement that its family's search
    chose (CHOSEN_BY), in float32; so far the RNN-SPN at d = 2, chosen by
    rnn_spn/dropout_search_cpu
Command: python run_study.py rnn_spn/table1_tuned --data-dir MNIST_DIR
Hardware: AMD EPYC (AVX2), 2 cores, no GPU
Wall time: about 2.3 min per epoch on that CPU (the search's trials), so
    8 to 12 h for a row that early-stops after 200 to 300 epochs

A row's second seed: python train_rnn_spn.py --config table1_tuned:rnn_spn
--seed 1 --data-dir MNIST_DIR --output-dir RUNS/rnn_spn_seed1. The progress
file: python run_study.py rnn_spn/table1_tuned --report --data-dir MNIST_DIR
--runs-dir RUNS. A row joins VARIANTS once its family's search has chosen;
the configuration tests check that every row trains what its search chose.
"""

PROTOCOL = "table1"
SETTINGS = dict(gru_initializer="lasagne", dtype_policy="float32")
VARIANTS = {
    "rnn_spn": dict(
        model="rnn_spn", downsample=2.0, dropout=0.2, dropout_placement="paper"
    ),
}
SEEDS = [0]
DEFAULT_VARIANTS = ["rnn_spn"]
SCHEDULE = {"rnn_spn": 300}
# {row: the search result file whose choice for the row's model it trains}
CHOSEN_BY = {"rnn_spn": "rnn_spn_dropout_search_cpu.json"}
OUTPUT = "benchmarks/results/rnn_spn_table1.json"
FIGURES = {"curves": "assets/rnn_spn_table1_curves.png", "attention": {}}
# Drawn in grey in the curves figure: the same row without dropout.
REFERENCE_RUNS = {
    "RNN-SPN, d = 2, dropout 0 (one GPU)": ["rnn_spn_paper_gpu.json", "rnn_spn"]
}
