#!/usr/bin/env python
"""The inpainter's training step with the package's fused batch norm and
fused Adam update (the default), against Keras' own ops: what does fusing
the small ops buy on the CPU, and do results change?

    python benchmarks/fused_ops.py [--model cram_classifier]
    python benchmarks/fused_ops.py --dtype-policy mixed_bfloat16
    python benchmarks/fused_ops.py --variant "Keras' ops"   # one per process

The profile of the inpainter's training step (`benchmarks/profile_steps.py`)
puts about a quarter of its kernel time in elementwise ops (batch norm's
moments, scaling and their gradients in the two discriminators, the ELU
gradients) and about a tenth in the three Adam optimizers' per-variable
updates. Keras computes both from small ops. The package fuses them on
TensorFlow:

- `cram_keras.layers.batch_normalization.BatchNormalization`: batch
  normalisation in training mode as one `FusedBatchNormV3` op (oneDNN's),
  its gradient one op too;
- `cram_keras.training.optimizers.FusedAdam`: each variable's Adam update
  as one `ResourceApplyAdam` op (the same formula).

Four variants: Keras' ops (both fusions replaced by Keras' own methods while
the step is traced), each fusion alone, and both (the default). Without
`--variant` all four are traced in one process from the same weights; each
trains on the same `--check-steps` batches, and the largest relative
difference of its losses from Keras' ops', step by step, says whether
results change beyond float32 round-off; then the steps are timed in
`--rounds` alternating rounds of `--steps` steps, each step taking the next
batch of the training dataset's iterator, as `fit` does. With `--variant`
only that one is built and timed, for comparisons in alternating processes.
Prints the median step time of each. Run it on an otherwise idle machine.
"""

import argparse
import contextlib
import functools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cram_keras.layers.batch_normalization import (  # noqa: E402
    BatchNormalization as FusedBatchNormalization,
)
from cram_keras.platform_info import busy_fraction, describe  # noqa: E402
from cram_keras.training.optimizers import FusedAdam  # noqa: E402
from cram_keras.training.precision import dtype_policy_scope  # noqa: E402

# Calls of the fusions' checks (made while a step is traced, never while it
# runs): unchanged across the timing means no step was traced again there.
CHECKS = [0]


def _counted(check):
    def fusable(self, *args):
        CHECKS[0] += 1
        return check(self, *args)

    return fusable


for _cls in (FusedBatchNormalization, FusedAdam):
    _cls._fusable = _counted(_cls.__dict__["_fusable"])

# Each fusion: the package's class, its fused method, Keras' method.
FUSIONS = {
    "fused batch norm": (
        FusedBatchNormalization,
        "call",
        keras.layers.BatchNormalization.call,
    ),
    "fused Adam": (FusedAdam, "update_step", keras.optimizers.Adam.update_step),
}
# Each variant: the fusions it keeps (the others run Keras' own method).
VARIANTS = {
    "Keras' ops": (),
    "fused batch norm": ("fused batch norm",),
    "fused Adam": ("fused Adam",),
    "both (the default)": ("fused batch norm", "fused Adam"),
}


@contextlib.contextmanager
def only(kept):
    """While the block runs (while a model's step is traced): the fusions
    not in `kept` run Keras' own method; returns how many layers or
    variables each kept fusion replaced."""
    traced = dict.fromkeys(kept, 0)
    saved = []
    for name, (cls, method, keras_method) in FUSIONS.items():
        saved.append((cls, method, cls.__dict__[method]))
        saved.append((cls, "_fusable", cls.__dict__["_fusable"]))
        if name not in kept:
            setattr(cls, method, keras_method)
            continue

        def fusable(self, *args, _name=name, _check=cls.__dict__["_fusable"]):
            taken = _check(self, *args)
            traced[_name] += bool(taken)
            return taken

        cls._fusable = fusable
    try:
        yield traced
    finally:
        for cls, method, original in saved:
            setattr(cls, method, original)


def inpainter(batch, policy):
    """The inpainter (the training script's defaults, under `policy`) and
    its batches: each (images, mask), random 32x32x3 images."""
    from cram_keras.experiments import inpaint

    config = inpaint.Config(batch_size=batch, dtype_policy=policy)
    with dtype_policy_scope(config):
        model = inpaint.compile_model(
            inpaint.build_model(config, (32, 32, 3), steps_per_epoch=100), config
        )
    images = np.random.default_rng(0).random((batch * 4, 32, 32, 3), "float32")
    return model, inpaint.train_dataset(config, images).repeat()


def cram_classifier(batch, policy):
    """The CRAM classifier (the training script's defaults, under `policy`)
    and its batches: each ((images, clue), labels), random 60x60 images and
    clues."""
    from cram_keras.experiments import cram_cls

    config = cram_cls.Config(batch_size=batch, dtype_policy=policy)
    with dtype_policy_scope(config):
        model = cram_cls.compile_model(cram_cls.build_model(config), config)
    rng = np.random.default_rng(0)
    images = rng.random((batch * 4, 60, 60, 1), "float32")
    clue = (rng.random((batch * 4, 60, 60, 1)) > 0.8).astype("float32")
    labels = rng.integers(0, 10, batch * 4).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices(((images, clue), labels))
    return model, dataset.batch(batch, drop_remainder=True).repeat()


MODELS = {"inpainter": inpainter, "cram_classifier": cram_classifier}


def traced_step(make, batch, names, weights=None):
    """`make(batch)`'s model (`make`: a model maker with its policy bound)
    with its training step traced with the fusions
    `names`, its weights (and zeroed optimizer state) set to `weights` when
    given; `(model, train, dataset)`: `train(iterator)` trains on the next
    batch of an iterator over `dataset`, the model's training batches."""
    model, dataset = make(batch)
    with only(names) as traced:
        model.make_train_function()
        train = model.train_function
        train(iter(dataset))  # traces while only `names` are fused
    for name, count in traced.items():
        if not count:
            raise RuntimeError(f"{name} replaced nothing in the traced step")
    print(f"  traced with {traced or 'no fusion'}")
    if weights is not None:
        model.set_weights(weights)  # after the tracing step, which builds
        for optimizer in getattr(model.optimizer, "optimizers", [model.optimizer]):
            for variable in optimizer.variables:
                variable.assign(tf.zeros_like(variable))
        model.reset_metrics()
    return model, train, dataset


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=sorted(MODELS), default="inpainter")
    p.add_argument(
        "--variant", choices=list(VARIANTS), help="build and time only this one"
    )
    p.add_argument("--batch", type=int, default=64, help="images per step")
    p.add_argument("--check-steps", type=int, default=20, help="steps compared")
    p.add_argument("--steps", type=int, default=8, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow threads")
    p.add_argument(
        "--dtype-policy",
        choices=("float32", "mixed_bfloat16"),
        default="float32",
        help="the models' Keras dtype policy (as the scripts' --dtype-policy)",
    )
    args = p.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"{describe()}; CPU busy before: {busy_fraction():.0%}")
    make = functools.partial(MODELS[args.model], policy=args.dtype_policy)
    variants = {args.variant: VARIANTS[args.variant]} if args.variant else VARIANTS
    trains, datasets = {}, {}
    if args.variant:
        _, trains[args.variant], datasets[args.variant] = traced_step(
            make, args.batch, variants[args.variant]
        )
    else:
        keras.utils.set_random_seed(0)
        first, _, dataset = traced_step(make, args.batch, ())
        weights = first.get_weights()
        # The same batches for every variant: the first ones, kept.
        check = dataset.take(args.check_steps).cache()
        for _ in check:
            pass
        losses = {}
        for label, names in variants.items():
            _, trains[label], datasets[label] = traced_step(
                make, args.batch, names, weights
            )
            iterator = iter(check)
            losses[label] = np.array(
                [
                    [
                        float(v)
                        for k, v in sorted(trains[label](iterator).items())
                        if "loss" in k
                    ]
                    for _ in range(args.check_steps)
                ]
            )
        reference = losses["Keras' ops"]
        for label in variants:
            difference = np.abs(losses[label] - reference) / np.maximum(
                np.abs(reference), 1e-12
            )
            print(
                f"  {label:18s} losses over {args.check_steps} steps within "
                f"{difference.max():.1e} of Keras' ops' (relative)"
            )
    checks = CHECKS[0]
    iterators = {label: iter(datasets[label]) for label in trains}
    times = {label: [] for label in trains}
    for r in range(args.rounds):
        order = list(trains) if r % 2 == 0 else list(trains)[::-1]
        for label in order:
            trains[label](iterators[label])
            for _ in range(args.steps):
                start = time.perf_counter()
                trains[label](iterators[label])
                times[label].append(time.perf_counter() - start)
    if CHECKS[0] != checks:
        raise RuntimeError("a step was traced again while timed (its fusions lost)")
    print(f"\n{args.model} training step, batch {args.batch}, {args.dtype_policy}:")
    first = next(iter(times))
    reference = np.median(times[first])
    for label, values in times.items():
        median = np.median(values)
        print(
            f"  {label:18s} {1e3 * median:7.1f} ms  "
            f"{reference / median:5.2f}x the speed of {first}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
