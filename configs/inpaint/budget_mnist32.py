"""CRAM inpainting on MNIST padded to 32x32, a CPU budget.

Reproduces: the CRAM paper's inpainting comparison (Section VI-B, Fig. 7)
    on MNIST 32x32 with a centred 8x8 hole: CRAM, the CNN encoder and
    CRAM with a context skip beside the classical fills
    (assets/inpaint_mnist32.png)
Command: python run_study.py inpaint/budget_mnist32 --data-dir MNIST_DIR
Hardware: AMD EPYC, 2 cores, no GPU
Wall time: 53 min (3 runs of 6 epochs)

The budget: the first 8,000 training images, 6 epochs with a 1-epoch
warm-up, Adam 5e-4 instead of the paper's 1e-4.
"""

PROTOCOL = "inpaint_budget"
SETTINGS = dict(
    dataset="mnist32",
    n_train=8000,
    epochs=6,
    learning_rate=5e-4,
    d_learning_rate=5e-4,
    warmup_epochs=1,
)
VARIANTS = {
    "cram": dict(encoder="cram"),
    "cnn_encoder": dict(encoder="cnn"),
    "cram_skip": dict(encoder="cram_skip"),
}
SEEDS = [0]
OUTPUT = "benchmarks/results/inpaint_mnist32.json"
FIGURES = {"inpainting": "assets/inpaint_mnist32.png"}
