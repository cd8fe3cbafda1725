"""CRAM classification with each clue at the script's full setting.

Reproduces: the clue ablation of the CRAM paper (Sections III-B1, IV-A,
    V-A) on 60x60 cluttered MNIST at the setting `train_cls.py` trains by
    default: all 55,000 training images, up to 50 epochs, the test error
    at the best validation epoch; oracle, saliency and no clue, two seeds
    each (assets/cram_cls_full_curves.png: the validation curves)
Command: python run_study.py cram_cls/full --data-dir MNIST_DIR
Hardware: made for one GPU with JAX; ran on an Intel Xeon, 2 cores, no
    GPU, TensorFlow (410 to 480 training images/s per run), one run at a
    time
Wall time: 2.0 to 3.7 h per run on the 2-core CPU (cram_cls_full.json:
    wall_seconds_per_seed); on one GPU, minutes per run

One run at a time: python train_cls.py --config cram_cls/full:oracle
--seed 0 --data-dir MNIST_DIR --output-dir runs/studies/cram_cls/full/oracle_seed0.
The runs as far as they have got (no training): add --progress to the
study command (and --commit HASH when the runs train in another checkout).
The saliency clue first trains the saliency network (its own epochs, the
experiment's default); the paper trains it on MSRA10k, which is not
available offline.
"""

PROTOCOL = "cram_cls_budget"
SETTINGS = dict(dataset="cluttered60")
VARIANTS = {
    "oracle": dict(clue="oracle"),
    "saliency": dict(clue="saliency"),
    "none": dict(clue="none"),
}
SEEDS = [0, 1]
OUTPUT = "benchmarks/results/cram_cls_full.json"
FIGURES = {
    "curves": "assets/cram_cls_full_curves.png",
    # The glimpses of this variant's first seed (.png and .gif).
    "glimpses": "assets/cram_cls_full_glimpses",
    "glimpses_variant": "saliency",
}
