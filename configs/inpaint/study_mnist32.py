"""The inpainting study: where CRAM's glimpses start, and whether they help.

Reproduces: beyond the paper: six variants of the CRAM inpainter on MNIST
    32x32 (Section VI-B's setting), each over two seeds, with the pathway
    diagnostics (the hole PSNR with the glimpses or the context zeroed)
    and the windows' statistics
Command: python run_study.py inpaint/study_mnist32 --data-dir MNIST_DIR
Hardware: AMD EPYC, 2 cores, no GPU
Wall time: 58 min (12 runs of 3 epochs)

The budget: the first 4,000 training and 2,000 test images, 3 epochs with
a 1-epoch warm-up, Adam 5e-4.
"""

PROTOCOL = "inpaint_budget"
SETTINGS = dict(
    dataset="mnist32",
    n_train=4000,
    n_test=2000,
    epochs=3,
    learning_rate=5e-4,
    d_learning_rate=5e-4,
    warmup_epochs=1,
)
VARIANTS = {
    "cram": dict(encoder="cram"),
    "spread": dict(encoder="cram", glimpse_start="spread"),
    "cnn_encoder": dict(encoder="cnn"),
    "per_step": dict(encoder="cram", glimpse_start="per_step"),
    "spread_no_clue": dict(encoder="cram", glimpse_start="spread", clue_weight=0.0),
    "cram_skip": dict(encoder="cram_skip"),
}
SEEDS = [0, 1]
OUTPUT = "benchmarks/results/inpaint_study_mnist32.json"
