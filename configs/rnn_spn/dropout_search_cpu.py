"""RNN-SPN Table 1: the dropout of the RNN-SPN at d = 2, searched on a CPU.

Reproduces: the paper's "dropout rates optimized on the validation set" for
    its headline row (RNN-SPN, d = 2) alone: rnn_spn/dropout_search's
    rates and placements, its protocol (20 epochs per trial on the full
    training set) and selection rule, for the one family and d that fit a
    2-core CPU, under mixed_bfloat16 (bfloat16 compute with AMX or
    AVX512_BF16, about twice float32's throughput; the d = 3 row's full
    protocol reached float32's test error that way: rnn_spn_paper_bf16.json)
Command: python run_study.py rnn_spn/dropout_search_cpu --data-dir MNIST_DIR
Hardware: not run yet; made for a CPU with AMX or AVX512_BF16
Wall time: not run yet (11 trials of 20 epochs; about half an hour per trial
    on 2 cores with AMX)

bfloat16 counts here only if float32 agrees: before the chosen setting
trains the full protocol, the chosen trial and the dropout-free one train
again under float32 (`--set dtype_policy=float32 --rates 0,RATE
--placements PLACEMENT`, with their own --runs-dir and --output), and the
choice stands if float32 orders the two the same way.
"""

PROTOCOL = "dropout_search"
SETTINGS = dict(dropout_ramp_epochs=5, dtype_policy="mixed_bfloat16")
GRID = dict(
    models=["rnn_spn"],
    rates=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
    placements=["code", "paper"],
    downsample=[2.0],
)
EPOCHS_PER_TRIAL = 20
OUTPUT = "benchmarks/results/rnn_spn_dropout_search_cpu.json"
