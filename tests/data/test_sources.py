"""Tests for cram_keras.data.sources: bundled data, the source decision, the
network guard of tests/conftest.py.

The suite runs with the network blocked (tests/conftest.py) and
`CRAM_KERAS_OFFLINE=1`; the TFDS "prepared locally" check is mocked where a
test needs a definite answer, so the results do not depend on whether this
machine happens to have a `~/tensorflow_datasets`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import scipy.io

from cram_keras.data import cluttered, inpainting, sources, svhn, translated
from cram_keras.data.errors import DatasetError
from cram_keras.data.mnist import MnistData
from cram_keras.data.sources import (
    BUNDLED_MNIST_FILE,
    BUNDLED_SHA256,
    BUNDLED_SVHN_FILE,
    DataSource,
    load_mnist_data,
    load_svhn_images,
    load_svhn_labelled,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
BUNDLED_DIR = REPO / "cram_keras" / "data" / "bundled"


@pytest.fixture
def no_tfds(monkeypatch):
    """TFDS has nothing prepared; probing the network fails the test."""
    monkeypatch.setattr(sources, "tfds_prepared_dir", lambda name: None)


@pytest.fixture
def no_probe(monkeypatch):
    def probe(*args, **kwargs):
        raise AssertionError("the network was probed")

    monkeypatch.setattr(sources, "unreachable_reason", probe)


def _note_lines(captured):
    return [line for line in captured.err.splitlines() if line.strip()]


# === Bundled files ===


def test_bundled_files_are_package_resources_with_the_stated_checksums():
    readme = (BUNDLED_DIR / "README.md").read_text()
    for name, sha256 in BUNDLED_SHA256.items():
        resource = importlib.resources.files("cram_keras.data.bundled") / name
        assert resource.is_file(), name
        data = resource.read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256
        md5 = hashlib.md5(data).hexdigest()
        assert sha256 in readme and md5 in readme and str(len(data)) in readme
    assert (
        importlib.resources.files("cram_keras.data.bundled") / "README.md"
    ).is_file()
    total = sum(os.path.getsize(BUNDLED_DIR / name) for name in BUNDLED_SHA256)
    assert total < 5_000_000  # "a few MB"


def test_bundled_mnist_loads_with_the_stated_sizes():
    mnist, source = load_mnist_data(bundled=True)
    assert mnist.x_train.shape == (5000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (1000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert mnist.y_train.dtype == np.int64 and mnist.y_test.dtype == np.int64
    assert mnist.y_train.shape == (5000,) and mnist.y_test.shape == (1000,)
    # The first digits of the official files (known from LeCun's files).
    assert mnist.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(mnist.y_train).tolist()[:2] == [479, 563]  # As README.md.
    assert source.origin == "bundled" and source.name == "mnist"
    assert (source.n_train, source.n_test) == (5000, 1000)
    assert "5,000 train / 1,000 test" in source.description
    assert source.path.endswith(BUNDLED_MNIST_FILE)


def test_bundled_svhn_loads_split_883_200(capsys):
    x_train, x_test, source = load_svhn_images(bundled=True)
    images = sources.load_bundled_svhn()
    assert images.shape == (1083, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(x_train, images[:883])
    np.testing.assert_array_equal(x_test, images[883:])
    assert (source.origin, source.n_train, source.n_test) == ("bundled", 883, 200)
    assert "883 train / 200 test" in source.description
    assert capsys.readouterr().err == ""  # Asked for: no note.


@pytest.mark.skipif(
    not os.environ.get("CRAM_KERAS_MNIST_DIR"),
    reason="set CRAM_KERAS_MNIST_DIR to a folder of the official MNIST files",
)
def test_bundled_mnist_is_the_first_digits_of_the_official_files():
    from cram_keras.data.mnist import load_mnist

    full = load_mnist(os.environ["CRAM_KERAS_MNIST_DIR"])
    mnist = sources.load_bundled_mnist()
    np.testing.assert_array_equal(mnist.x_train, full.x_train[:5000])
    np.testing.assert_array_equal(mnist.y_train, full.y_train[:5000])
    np.testing.assert_array_equal(mnist.x_test, full.x_test[:1000])
    np.testing.assert_array_equal(mnist.y_test, full.y_test[:1000])


def _svhn_source_file():
    mnist_dir = os.environ.get("CRAM_KERAS_MNIST_DIR")
    if not mnist_dir:
        return None
    path = pathlib.Path(mnist_dir).parent / "svhn" / BUNDLED_SVHN_FILE
    return path if path.is_file() else None


@pytest.mark.skipif(
    _svhn_source_file() is None,
    reason="needs CRAM_KERAS_MNIST_DIR and the SVHN subset in ../svhn beside it",
)
def test_make_bundled_data_rewrites_the_same_bytes(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_bundled_data", REPO / "tools" / "make_bundled_data.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    digests = tool.build(
        os.environ["CRAM_KERAS_MNIST_DIR"], str(_svhn_source_file()), str(tmp_path)
    )
    assert digests == BUNDLED_SHA256
    for name in BUNDLED_SHA256:
        assert (tmp_path / name).read_bytes() == (BUNDLED_DIR / name).read_bytes()


def test_reproducible_npz_writer_ignores_the_clock(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "make_bundled_data", REPO / "tools" / "make_bundled_data.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    arrays = {"a": np.arange(10, dtype=np.uint8), "b": np.ones((2, 3), np.int64)}
    tool.write_npz_reproducibly(tmp_path / "one.npz", arrays)
    monkeypatch.setattr(time, "time", lambda: 2e9)  # Another "now".
    tool.write_npz_reproducibly(tmp_path / "two.npz", arrays)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "one.npz") as npz:
        np.testing.assert_array_equal(npz["b"], arrays["b"])


def test_missing_bundled_file_says_to_reinstall_or_pass_data_dir(monkeypatch):
    monkeypatch.setattr(
        sources, "bundled_file", lambda name: pathlib.Path("/nonexistent") / name
    )
    with pytest.raises(DatasetError, match="missing.*Reinstall.*--data-dir DIR"):
        sources.load_bundled_mnist()


# === The wheel ===


def test_pyproject_ships_the_bundled_files_as_package_data():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["cram_keras.data.bundled"]
    for name in (*BUNDLED_SHA256, "README.md"):
        assert any(pathlib.PurePath(name).match(p) for p in patterns), name
    assert (BUNDLED_DIR / "__init__.py").is_file()  # A package, found by `find`.


def test_the_wheel_contains_the_bundled_files(tmp_path):
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
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "out").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in (*BUNDLED_SHA256, "README.md"):
            data = archive.read(f"cram_keras/data/bundled/{name}")
            if name in BUNDLED_SHA256:
                assert hashlib.sha256(data).hexdigest() == BUNDLED_SHA256[name]
        # The compiled sampler's source, built on first use after install.
        source_code = archive.read("cram_keras/ops/native/bilinear_sampler.cc")
        assert b'REGISTER_OP("CramSampleAtPixels")' in source_code


# === DataSource ===


def test_data_source_to_dict_is_json_and_origin_is_checked():
    _, source = load_mnist_data(bundled=True)
    record = json.loads(json.dumps(source.to_dict()))
    assert record["origin"] == "bundled" and record["n_train"] == 5000
    assert set(record) == {
        "name",
        "origin",
        "path",
        "n_train",
        "n_test",
        "description",
        "pools",
    }
    with pytest.raises(ValueError, match="origin"):
        DataSource("mnist", "ftp", None, 1, 1, "x")


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "ten", True])
def test_network_timeout_must_be_a_positive_number(timeout):
    with pytest.raises(ValueError, match="network_timeout"):
        load_mnist_data(network_timeout=timeout)


# === The decision ===


def test_offline_fallback_is_instant_and_prints_one_line(no_tfds, capsys):
    assert os.environ["CRAM_KERAS_OFFLINE"] == "1"  # Set by tests/conftest.py.
    start = time.perf_counter()
    mnist, source = load_mnist_data()
    elapsed = time.perf_counter() - start
    assert elapsed < 10
    assert source.origin == "bundled" and len(mnist.x_train) == 5000
    (line,) = _note_lines(capsys.readouterr())
    assert line.startswith("note: TFDS 'mnist' is not prepared locally")
    assert "storage.googleapis.com is not reachable" in line
    assert "CRAM_KERAS_OFFLINE=1" in line
    assert "5,000 train / 1,000 test" in line
    assert "--data-dir DIR" in line and "data_dir" not in line


def test_blocked_network_fallback_takes_under_10_s(no_tfds, monkeypatch, capsys):
    # The real probe, stopped by the socket guard of tests/conftest.py.
    monkeypatch.delenv("CRAM_KERAS_OFFLINE")
    start = time.perf_counter()
    _, source = load_mnist_data()
    assert time.perf_counter() - start < 10
    assert source.origin == "bundled"
    (line,) = _note_lines(capsys.readouterr())
    assert "storage.googleapis.com is not reachable (" in line
    assert "blocks network access" in line  # The guard's reason, passed on.
    assert "--data-dir DIR" in line


def test_a_hanging_host_gives_up_after_the_timeout(no_tfds, monkeypatch, capsys):
    monkeypatch.delenv("CRAM_KERAS_OFFLINE")

    def hang(address, timeout=None):
        time.sleep(5)  # Like a DNS lookup that never answers.
        raise OSError("too late")

    monkeypatch.setattr(sources.socket, "create_connection", hang)
    start = time.perf_counter()
    _, _, source = load_svhn_images(network_timeout=0.3)
    assert time.perf_counter() - start < 2
    assert source.origin == "bundled"
    (line,) = _note_lines(capsys.readouterr())
    assert "ufldl.stanford.edu is not reachable (timed out after 0.3 s)" in line
    assert "883 train / 200 test" in line
    assert "--dataset svhn --data-dir DIR" in line and "data_dir" not in line


def test_reachable_host_is_one_connection(monkeypatch):
    monkeypatch.delenv("CRAM_KERAS_OFFLINE")
    calls = []

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def connect(address, timeout=None):
        calls.append((address, timeout))
        return Connection()

    monkeypatch.setattr(sources.socket, "create_connection", connect)
    assert sources.unreachable_reason("example.org", 443, 2.5) is None
    assert calls == [(("example.org", 443), 2.5)]


def test_offline_svhn_falls_back_to_the_bundled_images(no_tfds, capsys):
    x_train, x_test, source = load_svhn_images()
    assert x_train.shape == (883, 32, 32, 3) and x_test.shape == (200, 32, 32, 3)
    assert source.origin == "bundled"
    (line,) = _note_lines(capsys.readouterr())
    assert line.startswith("note: TFDS 'svhn_cropped' is not prepared locally")
    assert "1,083 real training images" in line


def test_labelled_svhn_has_no_fallback(no_tfds, capsys):
    start = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        load_svhn_labelled()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "no labels" in message
    assert "--dataset svhn --data-dir DIR" in message
    assert "train_32x32.mat" in message and "data_dir" not in message
    assert capsys.readouterr().err == ""


def test_data_dir_wins_over_bundled_and_tfds(mnist_dir, no_probe, monkeypatch, capsys):
    def prepared(name):
        raise AssertionError("TFDS was consulted although data_dir was given")

    monkeypatch.setattr(sources, "tfds_prepared_dir", prepared)
    folder, arrays, _ = mnist_dir
    mnist, source = load_mnist_data(folder, bundled=True)
    np.testing.assert_array_equal(mnist.x_train, arrays["x_train"])
    assert source.origin == "idx" and source.path == str(folder)
    assert (source.n_train, source.n_test) == (7, 3)
    assert capsys.readouterr().err == ""


def test_svhn_data_dir_wins(tmp_path, no_probe, monkeypatch):
    monkeypatch.setattr(sources, "tfds_prepared_dir", lambda name: "/never/used")
    rng = np.random.default_rng(0)
    for split, (name, _, _) in svhn.SVHN_FILES.items():
        monkeypatch.setitem(svhn.SVHN_FILES, split, (name, 0, 4))
        images = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
        scipy.io.savemat(tmp_path / name, {"X": images, "y": np.ones((4, 1))})
    x_train, x_test, source = load_svhn_images(tmp_path, bundled=True)
    assert x_train.shape == (4, 32, 32, 3) and source.origin == "mat"
    data, labelled = load_svhn_labelled(tmp_path)
    assert labelled.origin == "mat" and data["test"][1].tolist() == [1, 1, 1, 1]


def test_bad_data_dir_is_an_error_naming_the_flag(tmp_path, no_probe):
    with pytest.raises(DatasetError) as info:
        load_mnist_data(tmp_path / "nonexistent")
    assert "--data-dir DIR" in str(info.value) and "data_dir=" not in str(info.value)
    with pytest.raises(DatasetError) as info:
        load_svhn_images(tmp_path)  # An empty folder.
    assert "--data-dir" in str(info.value) and "data_dir=" not in str(info.value)


def test_tfds_prepared_locally_picks_tfds(no_probe, monkeypatch, capsys):
    fake = MnistData(
        x_train=np.zeros((6, 28, 28), np.uint8),
        y_train=np.arange(6),
        x_test=np.zeros((2, 28, 28), np.uint8),
        y_test=np.arange(2),
    )
    monkeypatch.setattr(sources, "tfds_prepared_dir", lambda name: f"/tfds/{name}/3")
    monkeypatch.setattr(
        sources.mnist_lib,
        "load_mnist",
        lambda data_dir=None: fake if data_dir is None else None,
    )
    mnist, source = load_mnist_data()
    assert mnist is fake
    assert source.origin == "tfds" and source.path == "/tfds/mnist/3"
    assert "prepared in /tfds/mnist/3" in source.description
    assert capsys.readouterr().err == ""


def test_tfds_mock_data_counts_as_prepared(no_probe, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=7):
        mnist, source = load_mnist_data()
        x_train, x_test, svhn_source = load_svhn_images()
    assert source.origin == "tfds" and mnist.x_train.shape == (7, 28, 28)
    assert svhn_source.origin == "tfds" and x_train.shape == (7, 32, 32, 3)
    assert capsys.readouterr().err == ""


def test_reachable_svhn_downloads_train_and_test_only(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(sources, "tfds_prepared_dir", lambda name: None)
    monkeypatch.setattr(sources, "unreachable_reason", lambda *args: None)
    requested = []

    class FakeDownloadManager:
        def __init__(self, *, download_dir, url_infos, dataset_name):
            assert dataset_name == "svhn_cropped"
            assert set(url_infos) >= {svhn.URL + "train_32x32.mat"}
            self.download_dir = pathlib.Path(download_dir)

        def download(self, urls):
            requested.extend(urls.values())
            paths = {}
            for split, url in urls.items():
                path = tmp_path / url.rsplit("/", 1)[-1]
                images = np.zeros((32, 32, 3, 3), np.uint8)
                scipy.io.savemat(path, {"X": images, "y": np.full((3, 1), 10)})
                paths[split] = path
            return paths

    monkeypatch.setattr(tfds.download, "DownloadManager", FakeDownloadManager)
    monkeypatch.setitem(svhn.SVHN_FILES, "train", ("train_32x32.mat", 0, 3))
    monkeypatch.setitem(svhn.SVHN_FILES, "test", ("test_32x32.mat", 0, 3))
    x_train, x_test, source = load_svhn_images()
    assert sorted(requested) == [
        svhn.URL + "test_32x32.mat",
        svhn.URL + "train_32x32.mat",
    ]  # Never extra_32x32.mat.
    assert x_train.shape == (3, 32, 32, 3) and source.origin == "mat"
    assert "downloaded from ufldl.stanford.edu" in source.description


# === The generators take the bundled digits ===


def test_cluttered_sequences_from_the_bundled_digits(tmp_path, no_probe):
    splits, source = cluttered.load_cluttered_sequences(
        bundled=True,
        cache_dir=tmp_path,
        n_train=12,
        n_valid=900,  # More sequences than the 833 validation digits.
        n_test=6,
        dtype="uint8",
        return_source=True,
    )
    assert source.origin == "bundled"
    assert source.pools == {"train": 4167, "valid": 833, "test": 1000}
    assert "digit pools: 4,167 train / 833 valid / 1,000 test" in source.description
    assert splits["train"].digit_indices.max() < 4167
    assert splits["valid"].digit_indices.min() >= 4167
    assert splits["valid"].digit_indices.max() < 5000
    assert len(splits["valid"]) == 900
    mnist = sources.load_bundled_mnist()
    np.testing.assert_array_equal(
        splits["valid"].labels, mnist.y_train[splits["valid"].digit_indices]
    )


def test_translated_and_mnist32_from_the_bundled_digits(tmp_path, no_probe):
    splits, source = translated.load_cluttered_translated(
        bundled=True,
        cache_dir=tmp_path,
        n_train=10,
        n_valid=500,  # More images than the 417 validation digits.
        n_test=5,
        dtype="uint8",
        return_source=True,
    )
    assert source.pools == {"train": 4583, "valid": 417, "test": 1000}
    valid = splits["valid"].digit_indices
    assert valid.min() >= 4583 and valid.max() < 5000 and len(valid) == 500
    x_train, x_test, source = inpainting.load_inpainting_dataset(
        "mnist32", bundled=True, return_source=True
    )
    assert x_train.shape == (5000, 32, 32, 1) and x_test.shape == (1000, 32, 32, 1)
    assert source.name == "mnist32" and source.origin == "bundled"
    assert inpainting.load_inpainting_dataset("svhn", bundled=True)[0].shape == (
        883,
        32,
        32,
        3,
    )


def test_generators_fall_back_to_the_bundled_digits_offline(tmp_path, no_tfds, capsys):
    splits, source = cluttered.load_cluttered_sequences(
        cache_dir=tmp_path, n_train=4, n_valid=4, n_test=4, return_source=True
    )
    assert source.origin == "bundled" and len(splits["test"]) == 4
    assert len(_note_lines(capsys.readouterr())) == 1


def test_cache_keys_differ_between_bundled_and_full_digits(
    tmp_path, traceable_mnist, no_probe
):
    small = dict(cache_dir=tmp_path, n_train=3, n_valid=3, n_test=3, num_clutter=0)
    cluttered.load_cluttered_sequences(bundled=True, **small)
    cluttered.load_cluttered_sequences(mnist=traceable_mnist.mnist, **small)
    files = sorted(tmp_path.glob("cluttered_sequences-*.npz"))
    assert len(files) == 2
    origins = set()
    for path in files:
        with np.load(path) as npz:
            origins.add(json.loads(str(npz["__params__"]))["mnist_origin"])
    assert origins == {"bundled", "arrays"}
    translated.load_cluttered_translated(bundled=True, **small)
    translated.load_cluttered_translated(mnist=traceable_mnist.mnist, **small)
    assert len(list(tmp_path.glob("cluttered_translated-*.npz"))) == 2


def test_small_non_bundled_training_sets_still_refuse(mnist_dir, tmp_path):
    folder, _, _ = mnist_dir  # 7 training digits, from --data-dir.
    with pytest.raises(DatasetError, match="7 digits.*Check --data-dir"):
        cluttered.load_cluttered_sequences(folder, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="do not pass `data_dir` or `bundled`"):
        cluttered.load_cluttered_sequences(
            bundled=True, mnist=sources.load_bundled_mnist(), cache_dir=tmp_path
        )


def test_inpainting_npz_reports_its_source(tmp_path):
    np.savez(tmp_path / "x.npz", X=np.zeros((10, 32, 32, 3), np.uint8))
    x_train, x_test, source = inpainting.load_inpainting_dataset(
        "npz:x.npz", tmp_path, return_source=True
    )
    assert (len(x_train), len(x_test)) == (8, 2)
    assert source.origin == "npz" and source.path == str(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="bundled"):
        inpainting.load_inpainting_dataset("npz:x.npz", tmp_path, bundled=True)


# === The network guard (tests/conftest.py) ===


def test_guard_blocks_an_outside_connection():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError, match=r"blocks network access.*8\.8\.8\.8.*53"):
            sock.connect(("8.8.8.8", 53))
    with pytest.raises(OSError, match="blocks network access.*example.com"):
        socket.create_connection(("example.com", 80), timeout=1)


def test_guard_allows_loopback_and_unix_sockets():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        with socket.create_connection(("localhost", port), timeout=5):
            pass
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"


def test_subprocesses_inherit_the_offline_switch():
    code = "import os; print(os.environ.get('CRAM_KERAS_OFFLINE'))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "1"
