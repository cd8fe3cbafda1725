"""CRAM inpainting on the SVHN subset, trained until validation stops improving.

Reproduces: the CRAM paper's Fig. 7 comparison (Section VI-B): SVHN 32x32
    with a centred 8x8 hole, CRAM against the no-attention CNN encoder,
    each trained until its hole PSNR on held-out training images has not
    improved for 50 epochs, then scored at its best epoch on the test
    images beside the classical fills (assets/inpaint_converge_svhn1083.png;
    assets/inpaint_converge_svhn1083_gap.png: the validation curves and the
    CRAM - CNN-encoder gap against training steps)
Command: python run_study.py inpaint/converge_svhn1083
Hardware: Intel Xeon (AVX-512, AVX512_BF16, AMX), 2 cores, no GPU
Wall time: 3.1 h (CRAM, 134 epochs) and 4.0 h (CNN encoder, 139 epochs),
    one TensorFlow thread each, on a machine shared with other runs

The settings of inpaint/budget_svhn1083 (the bundled subset, Adam 5e-4)
with early stopping instead of a fixed 60 epochs: the last 10 % of the 883
training images (88) are held out and never trained on, so each run trains
on 795 images; at most 2,000 epochs. The runs as far as they have got (no
training): add --progress.
"""

PROTOCOL = "inpaint_budget"
SETTINGS = dict(
    dataset="npz:cram_keras/data/bundled/svhn_train_first1083_unlabeled.npz",
    epochs=2000,
    patience=50,
    learning_rate=5e-4,
    d_learning_rate=5e-4,
)
VARIANTS = {
    "cram": dict(encoder="cram"),
    "cnn_encoder": dict(encoder="cnn"),
}
SEEDS = [0]
OUTPUT = "benchmarks/results/inpaint_converge_svhn1083.json"
FIGURES = {
    "inpainting": "assets/inpaint_converge_svhn1083.png",
    "gap": "assets/inpaint_converge_svhn1083_gap.png",
}
