"""The trained models shipped in cram_keras/weights: every file matches the
size and SHA-256 its manifest records, the size limits hold (6 MB a weights
file, 20 MB all shipped files), the storage dtype is what the file holds,
and the loaded model reproduces the stored outputs of the fixed batch,
whose images the generator regenerates byte for byte from the bundled
MNIST sample. Also: the generated test set is a function of the data seed
and the test count alone."""

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cram_keras import pretrained
from cram_keras.data.cluttered import load_cluttered_sequences

REPO = pathlib.Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "cram_keras" / "weights"
NAMES = sorted(p.name[: -len(".json")] for p in WEIGHTS.glob("*.json"))
MB = 1_000_000
# Outputs of the loaded model against those stored when it was shipped (the
# same weights): float32 round-off of another machine or backend only.
SAME_WEIGHTS = dict(rtol=1e-3, atol=2e-3)
# Against the trained float32 weights, by storage dtype: float16 rounds each
# weight to 11 significant bits.
BY_STORAGE = {"float32": SAME_WEIGHTS, "float16": dict(rtol=0.02, atol=0.1)}
# An absolute or home-relative path ("/data/mnist", "~/mnist"), not " / ".
LOCAL_PATH = re.compile(r"(?:^|[\s'\"=(:])(?:/|~/)[\w.-]")


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(name):
    return json.loads((WEIGHTS / f"{name}.json").read_text(encoding="utf-8"))


def test_models_are_shipped_and_found_by_the_package():
    assert NAMES, "no trained model is shipped in cram_keras/weights"
    assert pretrained.available() == NAMES
    assert pretrained.weights_dir().resolve() == WEIGHTS.resolve()


def test_all_shipped_files_stay_under_20_mb():
    total = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file())
    assert total <= 20 * MB, f"cram_keras/weights holds {total / MB:.2f} MB"


def test_pyproject_ships_the_weights_as_package_data():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["cram_keras.weights"]
    for path in WEIGHTS.iterdir():
        if path.is_file() and path.suffix != ".py":
            assert any(pathlib.PurePath(path.name).match(p) for p in patterns), path
    assert (WEIGHTS / "__init__.py").is_file()  # A package, found by `find`.


@pytest.mark.parametrize("name", NAMES)
def test_files_match_the_manifest_and_the_limits(name):
    manifest = _manifest(name)
    assert manifest["name"] == name
    for key, suffix in (("weights", ".weights.h5"), ("batch", ".batch.npz")):
        record = manifest["files"][key]
        path = WEIGHTS / f"{name}{suffix}"
        assert record["name"] == path.name
        assert path.stat().st_size == record["bytes"]
        assert _sha256(path) == record["sha256"], f"{path.name} was changed"
    assert manifest["files"]["weights"]["bytes"] <= 6 * MB
    pretrained.verify_files(name)  # The check load_model runs agrees.


@pytest.mark.parametrize("name", NAMES)
def test_the_weights_file_holds_the_storage_dtype(name):
    manifest = _manifest(name)
    dtype = manifest["storage_dtype"]
    floats = []
    with h5py.File(WEIGHTS / f"{name}.weights.h5", "r") as f:
        f.visititems(
            lambda _, item: (
                floats.append(item.dtype)
                if isinstance(item, h5py.Dataset) and item.dtype.kind == "f"
                else None
            )
        )
        has_optimizer = "optimizer" in f  # Model weights only.
    assert floats and set(floats) == {np.dtype(dtype)}
    assert not has_optimizer
    check = manifest["storage_check"]
    if dtype == "float16":
        # Only when float32 does not fit, and after measuring the change.
        assert check["float32_bytes"] > 6 * MB
        change = (
            check["float16_test_per_digit_error"]
            - (check["float32_test_per_digit_error"])
        )
        assert abs(change) <= 0.0002 + 1e-12
        assert manifest["test_per_digit_error"] == check["float16_test_per_digit_error"]


@pytest.mark.parametrize("name", NAMES)
def test_the_manifest_describes_the_run_without_local_paths(name):
    manifest = _manifest(name)
    assert manifest["status"] in ("finished", "in progress")
    assert 1 <= manifest["best_epoch"] <= manifest["epochs_trained"]
    assert manifest["epochs_trained"] <= manifest["max_epochs"]
    assert manifest["model_config"]["downsample_factor"] == manifest["downsample"]
    per_digit, sequence = (
        manifest["test_per_digit_error"],
        manifest["test_sequence_error"],
    )
    # A wrong digit makes its sequence wrong, and a sequence has 3 digits.
    assert 0.0 <= per_digit <= sequence <= min(1.0, 3 * per_digit)
    assert manifest["test_set"]["sequences"] == manifest["n_test"]
    assert len(manifest["test_set"]["sha256"]) == 64
    assert len(manifest["commit"]) == 40
    for key in ("data_seed", "n_train", "n_valid", "backend", "hardware"):
        assert manifest[key] not in (None, "")
    assert manifest["training_command"].startswith("python ")
    strings = []

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            strings.append(value)

    walk(manifest)
    absolute = [s for s in strings if LOCAL_PATH.search(s)]
    assert not absolute, f"local paths in {name}.json: {absolute}"


@pytest.mark.parametrize("name", NAMES)
def test_the_loaded_model_reproduces_the_fixed_batch(name):
    manifest = _manifest(name)
    with np.load(WEIGHTS / f"{name}.batch.npz") as batch:
        stored = {key: batch[key] for key in batch.files}
    # The generator makes the same sequences from the bundled sample.
    regenerated = load_cluttered_sequences(
        bundled=True,
        use_cache=False,
        seed=manifest["data_seed"],
        n_train=0,
        n_valid=0,
        n_test=len(stored["labels"]),
        dtype="uint8",
    )["test"]
    np.testing.assert_array_equal(regenerated.images, stored["images"])
    np.testing.assert_array_equal(regenerated.labels, stored["labels"])

    model = pretrained.load_model(name)
    images = stored["images"].astype("float32") / 255.0
    logits = np.asarray(model(images, training=False))
    assert logits.shape == (len(images), 3, 10)
    np.testing.assert_allclose(logits, stored["logits"], **SAME_WEIGHTS)
    tolerance = BY_STORAGE[manifest["storage_dtype"]]
    np.testing.assert_allclose(logits, stored["logits_float32"], **tolerance)
    np.testing.assert_array_equal(
        logits.argmax(-1), stored["logits_float32"].argmax(-1)
    )


def test_the_generated_test_set_depends_on_the_seed_and_count_alone():
    images, labels, source = pretrained.generated_test_set(1234, 40)
    assert source.origin == "bundled"
    # As the training run loads it: every split at once, through the cache.
    full = load_cluttered_sequences(
        bundled=True, use_cache=False, seed=1234, n_train=64, n_valid=16, n_test=40,
        dtype="uint8",
    )["test"]  # fmt: skip
    np.testing.assert_array_equal(images, full.images)
    np.testing.assert_array_equal(labels, full.labels)
    again = pretrained.generated_test_set(1234, 40)
    assert pretrained.test_set_sha256(*again[:2]) == pretrained.test_set_sha256(
        images, labels
    )
    other = pretrained.generated_test_set(1235, 40)
    assert not np.array_equal(other[0], images)
    digest = hashlib.sha256(images.tobytes() + labels.astype("<i8").tobytes())
    assert pretrained.test_set_sha256(images, labels) == digest.hexdigest()


def test_sequence_errors_count_digits_and_sequences():
    labels = np.array([[1, 2, 3], [4, 5, 6]])
    logits = np.zeros((2, 3, 10), "float32")
    for i, row in enumerate([[1, 2, 3], [4, 0, 0]]):
        for t, digit in enumerate(row):
            logits[i, t, digit] = 1.0
    assert pretrained.sequence_errors(logits, labels) == (2 / 6, 1 / 2)


def test_unknown_names_and_damaged_files_are_refused(tmp_path):
    with pytest.raises(pretrained.PretrainedError, match="No shipped model named"):
        pretrained.read_manifest("no_such_model")
    name = NAMES[0]
    for path in WEIGHTS.glob(f"{name}.*"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    weights = tmp_path / f"{name}.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(pretrained.PretrainedError, match="does not match the SHA-256"):
        pretrained.load_model(name, tmp_path)


@pytest.mark.slow
def test_the_shipped_models_load_on_jax():
    pytest.importorskip("jax")
    code = (
        "import numpy as np, keras\n"
        "from cram_keras import pretrained\n"
        "assert keras.backend.backend() == 'jax'\n"
        "for name in pretrained.available():\n"
        "    path = pretrained.file_paths(name)['batch']\n"
        "    with np.load(path) as b: images, stored = b['images'], b['logits']\n"
        "    model = pretrained.load_model(name)\n"
        "    out = np.asarray(model(images.astype('float32') / 255, training=False))\n"
        "    np.testing.assert_allclose(out, stored, rtol=1e-3, atol=2e-3)\n"
        "    print('ok', name)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True,
        timeout=600, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in NAMES:
        assert f"ok {name}" in proc.stdout


@pytest.mark.slow
def test_the_wheel_contains_the_shipped_models(tmp_path):
    import shutil
    import zipfile

    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "cram_keras",
        source / "cram_keras",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-q", "-w", str(tmp_path / "out"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "out").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.read("cram_keras/weights/README.md")
        for name in NAMES:
            manifest = json.loads(archive.read(f"cram_keras/weights/{name}.json"))
            for record in manifest["files"].values():
                data = archive.read(f"cram_keras/weights/{record['name']}")
                assert hashlib.sha256(data).hexdigest() == record["sha256"]


@pytest.mark.parametrize(
    "output, expected",
    [
        ("{tmp}", "is a folder. Give a file name, e.g."),
        ("{tmp}/fig3", "must end with an image format's extension"),
        ("{tmp}/fig3.txt", "must end with an image format's extension"),
        ("{tmp}/a_file/fig3.png", "'{tmp}/a_file' is a regular file, not a folder"),
    ],
)
def test_an_unusable_figure_path_is_refused_before_anything_loads(
    tmp_path, monkeypatch, capsys, output, expected
):
    (tmp_path / "a_file").write_text("")

    def never(*args, **kwargs):
        raise AssertionError("the model loaded before the path was checked")

    monkeypatch.setattr(pretrained, "load_model", never)
    output = output.format(tmp=tmp_path)
    assert pretrained.main(["figure", NAMES[0], "--output", output]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output") and expected.format(tmp=tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
