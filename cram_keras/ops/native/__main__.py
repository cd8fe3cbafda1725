"""`python -m cram_keras.ops.native`: build the compiled TensorFlow sampler
kernel (`bilinear_sampler.cc`) into the cache and check it against the
`keras.ops` sampler. See `cram_keras.ops.native_sampler`."""

import sys

import keras

from cram_keras.ops.native_sampler import (
    ENV_VAR,
    NativeSamplerError,
    build,
    load,
    native_sampler,
)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m cram_keras.ops.native",
        description="Build the compiled TensorFlow sampler kernel and check it "
        "against the keras.ops sampler.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        path = build(force=args.force, verbose=True)
        load()
    except NativeSamplerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    import numpy as np

    from cram_keras.ops.pixel_sampler import sample_pixels

    rng = np.random.default_rng(0)
    images = rng.random((2, 9, 7, 3), dtype=np.float32)
    x = rng.uniform(-3, 9, (2, 5, 4)).astype(np.float32)
    y = rng.uniform(-3, 11, (2, 5, 4)).astype(np.float32)
    with native_sampler(False):
        reference = keras.ops.convert_to_numpy(sample_pixels(images, x, y, "zeros"))
    with native_sampler(True):
        fused = keras.ops.convert_to_numpy(sample_pixels(images, x, y, "zeros"))
    if not np.array_equal(reference, fused):
        print(
            "error: the compiled sampler differs from the keras.ops sampler",
            file=sys.stderr,
        )
        return 1
    print(
        f"built {path}; it agrees with the keras.ops sampler. It is used by "
        f"default wherever it applies ({ENV_VAR}=0 turns it off)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
