"""cram_keras.ops against PyTorch's affine_grid + grid_sample (golden file).

`tests/fixtures/grid_sample_golden.npz` holds torch's values and gradients for
zoom, crop, rotation, shear and out-of-range cases, both `align_corners`, both
paddings, 1 and 3 channels; `tests/fixtures/make_grid_sample_golden.py` made
it. Torch is not needed to run these tests.

The `kink_*` cases put sampling points exactly on pixel centres and borders,
where bilinear interpolation has kinks. Fed torch's own grid, the one-sided
gradients wrt the grid must match torch's choice. Through theta they are not
compared: there both implementations round the grid on their own, and a last
bit decides which side of a kink a point falls.
"""

import pathlib

import numpy as np
import pytest
from testing import to_numpy, vjp

from cram_keras.ops import affine_grid, affine_sample, bilinear_sample

# Every test runs with the keras.ops sampler and the compiled kernel.
pytestmark = pytest.mark.usefixtures("sampler_kernel")

GOLDEN = pathlib.Path(__file__).parents[1] / "fixtures" / "grid_sample_golden.npz"


def load_cases():
    with np.load(GOLDEN) as data:
        names = sorted({key.split("/")[0] for key in data.files if "/" in key})
        return {
            name: {
                key.split("/")[1]: data[key]
                for key in data.files
                if key.startswith(name + "/")
            }
            for name in names
        }


CASES = load_cases()


def is_kink(name):
    return name.startswith("kink_")


def group_key(name):
    """Cases that differ only in theta share one call: 'rotation-ac1-border-c3'
    -> ('ac1', 'border', 'c3', False)."""
    _, ac, padding, channels = name.split("-")
    return ac, padding, channels, is_kink(name)


GROUPS = {}
for _name in sorted(CASES):
    GROUPS.setdefault(group_key(_name), []).append(_name)


def stacked(names, key):
    return np.concatenate([CASES[name][key] for name in names])


def assert_close(actual, names, key, tolerance=1e-5):
    """Compares `actual` (cases stacked on the batch axis) case by case."""
    batch = len(actual) // len(names)
    for k, name in enumerate(names):
        expected = CASES[name][key]
        # Gradients wrt the grid and theta scale with the image size: compare
        # relative to the largest reference entry.
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(
            actual[k * batch : (k + 1) * batch],
            expected,
            rtol=tolerance,
            atol=tolerance * scale,
            err_msg=f"{name}: {key}",
        )


def test_golden_file_covers_the_cases():
    kinds = {name.split("-")[0] for name in CASES}
    assert kinds == {
        "zoom_in",
        "zoom_out",
        "crop",
        "rotation",
        "shear",
        "out_of_range",
        "kink_identity",
        "kink_shift",
    }
    assert len(CASES) == 8 * 2 * 2 * 2
    assert len(GROUPS) == 2 * 2 * 2 * 2


def group_ids():
    return [
        "-".join(str(part) for part in key)
        .replace("True", "kink")
        .replace("-False", "")
        for key in GROUPS
    ]


@pytest.mark.parametrize("key", list(GROUPS), ids=group_ids())
def test_affine_grid_and_bilinear_sample_match_torch(key):
    names = GROUPS[key]
    align_corners, padding = key[0] == "ac1", key[1]
    out_size = CASES[names[0]]["output"].shape[1:3]
    theta, cotangent = stacked(names, "theta"), stacked(names, "cotangent")
    images = stacked(names, "images")

    grid = to_numpy(affine_grid(theta, out_size, align_corners))
    assert_close(grid, names, "grid", 1e-6)

    def composed(images, theta):
        grid = affine_grid(theta, out_size, align_corners)
        return bilinear_sample(images, grid, padding, align_corners)

    output, (grad_images, grad_theta) = vjp(composed, [images, theta], cotangent)
    assert_close(output, names, "output")
    assert_close(grad_images, names, "grad_images")
    if not key[3]:
        assert_close(grad_theta, names, "grad_theta")

    # Sampling at torch's own grid: values and gradients wrt images and grid.
    output, (grad_images, grad_grid) = vjp(
        lambda images, grid: bilinear_sample(images, grid, padding, align_corners),
        [images, stacked(names, "grid")],
        cotangent,
    )
    assert_close(output, names, "output")
    assert_close(grad_images, names, "grad_images")
    assert_close(grad_grid, names, "grad_grid")


@pytest.mark.parametrize("key", list(GROUPS), ids=group_ids())
def test_affine_sample_matches_torch(key):
    names = GROUPS[key]
    align_corners, padding = key[0] == "ac1", key[1]
    out_size = CASES[names[0]]["output"].shape[1:3]
    output, (grad_images, grad_theta) = vjp(
        lambda images, theta: affine_sample(
            images, theta, out_size, padding, align_corners
        ),
        [stacked(names, "images"), stacked(names, "theta")],
        stacked(names, "cotangent"),
    )
    assert_close(output, names, "output")
    assert_close(grad_images, names, "grad_images")
    if not key[3]:
        assert_close(grad_theta, names, "grad_theta")
