"""cram_keras.utils: atomic writes keep the old file when the writer fails,
and the argument checks reject what they should with Keras-style messages."""

import json
import math
import os

import numpy as np
import pytest

from cram_keras import utils


def _leftovers(folder):
    return [name for name in os.listdir(folder) if ".tmp" in name]


def test_write_json_roundtrip_and_no_temporary_left(tmp_path):
    path = str(tmp_path / "a.json")
    utils.write_json(path, {"b": 1, "a": [1.5, None]})
    assert utils.read_json(path) == {"a": [1.5, None], "b": 1}
    text = (tmp_path / "a.json").read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    utils.write_json(path, {"c": 2})  # overwrites
    assert utils.read_json(path) == {"c": 2}
    assert _leftovers(tmp_path) == []


def test_write_json_failure_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "a.json")
    utils.write_json(path, {"old": True})
    with pytest.raises(TypeError):
        utils.write_json(path, {"bad": object()})  # not serialisable mid-write
    assert utils.read_json(path) == {"old": True}
    assert _leftovers(tmp_path) == []


def test_atomic_path_keeps_the_old_file_when_the_writer_raises(tmp_path):
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"old")

    with pytest.raises(RuntimeError, match="disk full"):
        with utils.atomic_path(str(path)) as tmp:
            # Libraries that check extensions see the final one.
            assert tmp.endswith(".weights.h5")
            assert os.path.dirname(tmp) == str(tmp_path)
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []

    with utils.atomic_path(str(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_atomic_path_works_with_numpy_savez(tmp_path):
    path = str(tmp_path / "clues.npz")
    with utils.atomic_path(path) as tmp:
        np.savez(tmp, x=np.arange(3))  # would append .npz to another suffix
    with np.load(path) as f:
        np.testing.assert_array_equal(f["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["clues.npz"]


def test_atomic_write_bytes(tmp_path):
    path = str(tmp_path / "blob.bin")
    utils.atomic_write_bytes(path, b"\x00\x01")
    with open(path, "rb") as f:
        assert f.read() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_read_csv_log(tmp_path):
    path = str(tmp_path / "log.csv")
    assert utils.read_csv_log(path) == []
    with open(path, "w") as f:
        f.write("epoch,loss\n0,1.5\n1,0.5\n")
    assert utils.read_csv_log(path) == [
        {"epoch": "0", "loss": "1.5"},
        {"epoch": "1", "loss": "0.5"},
    ]


def test_check_int():
    assert utils.check_int("n", 3, low=1) == 3
    assert utils.check_int("n", np.int64(4), low=0, high=4) == 4
    assert type(utils.check_int("n", np.int64(4))) is int
    with pytest.raises(
        ValueError, match=r"^`n` must be an integer >= 1\. Received: n=0$"
    ):
        utils.check_int("n", 0, low=1)
    with pytest.raises(
        ValueError, match=r"`n` must be an integer in 1\.\.4\. Received: n=5"
    ):
        utils.check_int("n", 5, low=1, high=4)
    with pytest.raises(ValueError, match=r"<= 4\. Received: n=5"):
        utils.check_int("n", 5, high=4)
    for bad in (True, 2.0, 2.5, "3", None):
        with pytest.raises(ValueError, match=f"Received: n={bad!r}"):
            utils.check_int("n", bad)


def test_check_number_rejects_nan_inf_bools_and_non_numbers():
    assert utils.check_number("rate", 1) == 1.0
    assert isinstance(utils.check_number("rate", np.float32(0.5)), float)
    for bad in (float("nan"), float("inf"), -math.inf, np.float64("nan")):
        with pytest.raises(ValueError, match="must be a finite number"):
            utils.check_number("rate", bad)
    assert utils.check_number("rate", math.inf, finite=False) == math.inf
    with pytest.raises(ValueError, match="must be a number"):
        utils.check_number("rate", math.nan, finite=False)  # NaN never passes
    for bad in (True, "0.1", None, [0.1]):
        with pytest.raises(ValueError, match=r"Received: rate="):
            utils.check_number("rate", bad)


def test_check_number_bounds_and_messages():
    with pytest.raises(
        ValueError,
        match=r"^`beta` must be a finite number >= 0\. Received: beta=-1\.0$",
    ):
        utils.check_number("beta", -1.0, low=0)
    assert utils.check_number("beta", 0, low=0) == 0.0
    with pytest.raises(
        ValueError, match=r"must be a finite number > 0\. Received: lr=0"
    ):
        utils.check_number("lr", 0, low=0, low_inclusive=False)
    with pytest.raises(ValueError, match=r"in \(0, 1\)\. Received: t=1"):
        utils.check_number(
            "t", 1, low=0, high=1, low_inclusive=False, high_inclusive=False
        )
    assert utils.check_number("t", 1, low=0, high=1) == 1.0
    with pytest.raises(ValueError, match=r"in \[0, 1\]\. Received: t=1\.5"):
        utils.check_number("t", 1.5, low=0, high=1)


def test_check_choice_and_int_list():
    assert utils.check_choice("mask", "center", ("center", "random")) == "center"
    with pytest.raises(
        ValueError,
        match=r"^`mask` must be one of \('center', 'random'\)\. Received: mask='corner'$",
    ):
        utils.check_choice("mask", "corner", ("center", "random"))
    assert utils.check_int_list("filters", (4, np.int64(8))) == [4, 8]
    for bad in ([], [4, 0], [4, True], "48", None, [2.0]):
        with pytest.raises(
            ValueError,
            match=r"`filters` must be a non-empty list of positive integers\. "
            r"Received: filters=",
        ):
            utils.check_int_list("filters", bad)
    assert utils.check_int_list("sizes", [0, 2], low=0) == [0, 2]


def test_check_range_returns_the_pair_as_a_list_and_names_the_rule():
    assert utils.check_range("r", (1, 8), low=1, integer=True) == [1, 8]
    assert utils.check_range("r", [1e-5, 1e-3], low=0, low_inclusive=False) == [
        1e-5,
        1e-3,
    ]
    with pytest.raises(
        ValueError,
        match=r"^`r` must be \[low, high\], integers with 1 <= low <= high\. "
        r"Received: r=\[0, 3\]$",
    ):
        utils.check_range("r", [0, 3], low=1, integer=True)
    with pytest.raises(
        ValueError,
        match=r"^`s` must be \[low, high\] with 0 < low <= high < top \(0\.5\)\. ",
    ):
        utils.check_range(
            "s", [0.3, 0.5], low=0, high=0.5, low_inclusive=False,
            high_inclusive=False, high_name="top (0.5)",
        )  # fmt: skip
    for bad in ([2, 1], [1], [True, 2], "1,2", [1.5, 2], [float("nan"), 1]):
        with pytest.raises(ValueError, match="with low <= high"):
            utils.check_range("r", bad, integer=isinstance(bad, list) and 1.5 in bad)


def test_layer_argument_checks_take_python_ints_and_bools_only():
    assert utils.check_positive_int("units", 3) == 3
    for bad in (0, -1, True, 2.0, np.int64(2)):
        with pytest.raises(ValueError, match="`units` must be a positive integer"):
            utils.check_positive_int("units", bad)
    assert utils.check_int_tuple("filters", 8) == (8,)
    assert utils.check_int_tuple("filters", [8, 16]) == (8, 16)
    assert utils.check_int_tuple("filters", [], allow_empty=True) == ()
    with pytest.raises(ValueError, match="must be a non-empty tuple"):
        utils.check_int_tuple("filters", [])
    with pytest.raises(ValueError, match="must contain positive integers only"):
        utils.check_int_tuple("filters", [8, 0])
    assert utils.check_bool("flag", False) is False
    with pytest.raises(ValueError, match=r"`flag` must be a bool\. Received: flag=1"):
        utils.check_bool("flag", 1)


def test_epoch_seed_is_deterministic_and_none_keeps_the_seed():
    assert utils.epoch_seed(7) == 7 and utils.epoch_seed(None, 3) is None
    a, b = utils.epoch_seed(7, 3), utils.epoch_seed(7, 3)
    assert a == b and isinstance(a, int) and 0 <= a < 2**32
    assert len({utils.epoch_seed(7, e) for e in range(5)}) == 5


def test_json_files_are_plain_json(tmp_path):
    path = str(tmp_path / "x.json")
    utils.write_json(path, [1, 2])
    with open(path) as f:
        assert json.load(f) == [1, 2]


def test_every_cache_lives_in_the_one_cache_folder(monkeypatch, tmp_path):
    """The data sets, the kernel library and JAX's steps all follow
    ``$CRAM_KERAS_CACHE``, and all default to ``~/.cache/cram_keras``."""
    from cram_keras.ops import native_sampler
    from cram_keras.training import compile_cache

    monkeypatch.setenv("CRAM_KERAS_CACHE", str(tmp_path / "c"))
    assert utils.cache_folder() == str(tmp_path / "c")
    assert str(native_sampler.cache_dir()) == str(tmp_path / "c" / "kernels")
    assert compile_cache.cache_folder() == str(tmp_path / "c" / "jax")
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("CRAM_KERAS_CACHE")
        else:
            monkeypatch.setenv("CRAM_KERAS_CACHE", unset)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        home = os.path.join(str(tmp_path / "home"), ".cache", "cram_keras")
        assert utils.cache_folder() == home
        assert str(native_sampler.cache_dir()) == os.path.join(home, "kernels")
