"""CRAM classification with each clue, a CPU budget over two seeds.

Reproduces: the clue ablation of the CRAM paper (Sections III-B1, IV-A,
    V-A) on 60x60 cluttered MNIST: oracle, saliency and no clue, the same
    paper-size model, data and epochs; test error at the best validation
    epoch, the validation curves (assets/cram_cls_curves.png) and the
    saliency run's glimpses (assets/cram_cls_glimpses.png)
Command: python run_study.py cram_cls/budget --data-dir MNIST_DIR
Hardware: AMD EPYC (AVX-512 with BF16), 2 cores, no GPU
Wall time: 30 min (6 runs of 3 epochs)

The budget: 20,000 of the 55,000 training images, 3 epochs per run, 2
epochs of the saliency network (the paper trains it on MSRA10k, not
available offline); the paper setting is `train_cls.py` with its defaults.
"""

PROTOCOL = "cram_cls_budget"
SETTINGS = dict(
    dataset="cluttered60",
    n_train=20000,
    n_valid=5000,
    n_test=10000,
    epochs=3,
    saliency_epochs=2,
)
VARIANTS = {
    "oracle": dict(clue="oracle"),
    "saliency": dict(clue="saliency"),
    "none": dict(clue="none"),
}
SEEDS = [0, 1]
OUTPUT = "benchmarks/results/cram_cls_budget.json"
FIGURES = {
    "curves": "assets/cram_cls_curves.png",
    # The glimpses of this variant's first seed (.png and .gif).
    "glimpses": "assets/cram_cls_glimpses",
    "glimpses_variant": "saliency",
}
