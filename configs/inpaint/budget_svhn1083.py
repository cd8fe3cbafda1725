"""CRAM inpainting on the 1,083-image SVHN subset, a CPU budget.

Reproduces: the CRAM paper's Fig. 7 (Section VI-B): SVHN 32x32 with a
    centred 8x8 hole, CRAM against the no-attention CNN encoder and
    CRAM with a context skip, beside the classical fills, on the same
    test images and holes (assets/inpaint_svhn1083.png)
Command: python run_study.py inpaint/budget_svhn1083
Hardware: AMD EPYC, 2 cores, no GPU
Wall time: 2.5 h (3 runs of 60 epochs)

The budget: the bundled subset (883 training, 200 test images) for 60
epochs at Adam 5e-4 instead of the paper's 1e-4, since the budget is a few
hundred steps.
"""

PROTOCOL = "inpaint_budget"
SETTINGS = dict(
    dataset="npz:cram_keras/data/bundled/svhn_train_first1083_unlabeled.npz",
    epochs=60,
    learning_rate=5e-4,
    d_learning_rate=5e-4,
)
VARIANTS = {
    "cram": dict(encoder="cram"),
    "cnn_encoder": dict(encoder="cnn"),
    "cram_skip": dict(encoder="cram_skip"),
}
SEEDS = [0]
OUTPUT = "benchmarks/results/inpaint_svhn1083.json"
FIGURES = {"inpainting": "assets/inpaint_svhn1083.png"}
