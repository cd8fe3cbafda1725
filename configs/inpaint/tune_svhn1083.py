"""CRAM inpainting on the SVHN subset: the glimpse count searched with keras-tuner.

Reproduces: CRAM's main inpainting knob, the number of glimpses (the paper
    uses 4 and does not search it), chosen on held-out training images
    with `train_inpaint.py --tune`, and the chosen setting against the
    package's defaults on the test images
Command: python run_study.py inpaint/tune_svhn1083
Hardware: Intel Xeon (AVX-512, AVX512_BF16, AMX), 2 cores, no GPU
Wall time: 1 h (the search 56 min, the defaults 3 min; one TensorFlow
    thread for the search, on a machine shared with other runs)

The search is the documented command `python train_inpaint.py --tune
--max-trials 16 --epochs 10` on the bundled subset: 16 trials of keras-tuner's
random search (seed 0) over the glimpse count (1 to 8), the encoder +
generator Adam rate (3e-5 to 3e-4, log scale) and the smallest glimpse
window (0.25 to 0.45 of the image side), each trial 10 epochs on the first
795 training images and scored on the last 88 (hole PSNR after the
batch-norm recalibration). The `default` variant trains the package's
defaults (4 glimpses, Adam 1e-4, windows of at least 0.375) for the same
10 epochs on the same 795 images; both are scored on the 200 test images,
which play no part in the choice. The defaults' model is also scored on the
88 held-out images, as the trials are (assets/inpaint_tune_svhn1083.png:
every trial's held-out score against its glimpse count).
"""

PROTOCOL = "inpaint_tune"
SETTINGS = dict(
    dataset="npz:cram_keras/data/bundled/svhn_train_first1083_unlabeled.npz",
    epochs=10,
)
VARIANTS = {
    "search": dict(tune=True, max_trials=16),
    # The study trains it on the images every trial trained on: the first
    # 795 (the last 10 % of the 883 are the search's held-out images).
    "default": dict(),
}
SEEDS = [0]
OUTPUT = "benchmarks/results/inpaint_tune_svhn1083.json"
FIGURES = {"trials": "assets/inpaint_tune_svhn1083.png"}
