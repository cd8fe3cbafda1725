"""RNN-SPN Table 1: the dropout of the RNN-SPN at d = 2, searched on a CPU.

Reproduces: the paper's "dropout rates optimized on the validation set" for
    its headline row (RNN-SPN, d = 2) alone: rnn_spn/dropout_search's
    rates and placements, its protocol (20 epochs per trial on the full
    training set) and selection rule, for the one family and d that fit a
    2-core CPU, under mixed_bfloat16 (bfloat16 compute with AMX or
    AVX512_BF16, about twice float32's throughput; the d = 3 row's full
    protocol reached float32's test error that way: rnn_spn_paper_bf16.json)
Command: python run_study.py rnn_spn/dropout_search_cpu --data-dir MNIST_DIR
Hardware: AMD EPYC (AVX2), 2 cores, no GPU, in float32 (all 11 trials);
    made for a CPU with AMX or AVX512_BF16
Wall time: about 70 min of training per 20-epoch trial in float32 on that
    CPU (the first trial's training time in the result file), so about
    13 h for the 11 trials; estimated at about half an hour each under
    mixed_bfloat16 with AMX (then the check's 2 trials under float32)

On a CPU without AMX or AVX512_BF16, bfloat16 is slower than float32:
there the search runs in float32 (--set dtype_policy=float32, which the
result file records; no check then), one policy for the whole search.

bfloat16 counts here only if float32 agrees (DTYPE_CHECK): once the 11
trials are done, the two best train again under float32, and the result
file says whether the selection rule picks the same one of the two there
(dtype_check). Only then does the chosen setting train the full protocol,
in float32 (the result file's train_command).
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
DTYPE_CHECK = "float32"
OUTPUT = "benchmarks/results/rnn_spn_dropout_search_cpu.json"
