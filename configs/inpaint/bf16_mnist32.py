"""CRAM inpainting under float32 and mixed_bfloat16, a CPU budget.

Reproduces: beyond the paper: the inpainter's GAN training step with
    bfloat16 compute and float32 weights and losses
    (--dtype-policy mixed_bfloat16) against float32, at the MNIST-32
    budget of inpaint/budget_mnist32 (the CRAM variant), two seeds; the
    step speed of both: benchmarks/inpaint_bf16_speed.py
Command: python run_study.py inpaint/bf16_mnist32 --data-dir MNIST_DIR
Hardware: Intel Xeon (AVX-512 with BF16, AMX), 2 cores, no GPU
Wall time: about 26 min (4 runs of 6 epochs with their test scoring, 2 cores)

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
    encoder="cram",
)
VARIANTS = {
    "float32": dict(dtype_policy="float32"),
    "mixed_bfloat16": dict(dtype_policy="mixed_bfloat16"),
}
SEEDS = [0, 1]
OUTPUT = "benchmarks/results/inpaint_bf16.json"
