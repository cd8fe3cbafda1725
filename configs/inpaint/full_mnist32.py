"""CRAM inpainting on the whole of MNIST padded to 32x32: the paper's budget.

Reproduces: the CRAM paper's inpainting comparison (Section VI-B, Fig. 7)
    at its full budget on MNIST 32x32 with a centred 8x8 hole: CRAM, the
    CNN encoder and CRAM with a context skip, each over two seeds, all
    60,000 training and 10,000 test images, 50 epochs, the paper's Adam
    1e-4 (assets/inpaint_full_mnist32_gap.png: the CRAM - CNN-encoder gap
    against training steps)
Command: python run_study.py inpaint/full_mnist32 --data-dir MNIST_DIR
Hardware: Intel Xeon (AVX-512, AVX512_BF16, AMX), 2 cores, no GPU; in
    progress (CRAM and the CNN encoder, seed 0)
Wall time: about 40 min per epoch and model with two runs sharing the two
    cores (26 images/s each), so about 33 h per run to 50 epochs

One run at a time, e.g. to train several in parallel: python
train_inpaint.py --config inpaint/full_mnist32:cram --seed 0 --data-dir
MNIST_DIR --output-dir runs/studies/inpaint/full_mnist32/cram_seed0. The
runs as far as they have got (no training): add --progress to the study
command.

Every setting is the paper's (the experiment's defaults) except the data
set; the first 512 test images give the per-epoch validation PSNR that
the progress report draws.
"""

PROTOCOL = "inpaint_budget"
SETTINGS = dict(dataset="mnist32")
VARIANTS = {
    "cram": dict(encoder="cram"),
    "cnn_encoder": dict(encoder="cnn"),
    "cram_skip": dict(encoder="cram_skip"),
}
SEEDS = [0, 1]
OUTPUT = "benchmarks/results/inpaint_full_mnist32.json"
FIGURES = {
    "inpainting": "assets/inpaint_full_mnist32.png",
    "gap": "assets/inpaint_full_mnist32_gap.png",
}
