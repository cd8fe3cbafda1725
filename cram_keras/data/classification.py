"""The splits of CRAM classification (`cram_keras.experiments.cram_cls`):
cluttered translated MNIST (`cram_keras.data.translated`) with its
ground-truth saliency, or SVHN 32x32 digits, each split a dict of uint8
NHWC ``images``, ``labels``, ``saliency`` masks and digit ``boxes`` (the
last two `None` for SVHN, which has neither)."""

SPLITS = ("train", "valid", "test")


def load_classification_splits(
    dataset,
    data_dir=None,
    *,
    n_train,
    n_valid,
    n_test,
    cache_dir=None,
    seed=1234,
    bundled=False,
):
    """``({split: {"images", "labels", "saliency", "boxes"}}, DataSource)``.

    Args:
        dataset: "cluttered60" or "cluttered100" (`translated.PRESETS`), or
            "svhn", whose validation split is the last ``n_valid`` training
            images.
        data_dir: the official files (MNIST IDX .gz, or SVHN .mat); without
            it, TFDS or the bundled samples (`cram_keras.data.sources`).
        n_train, n_valid, n_test: examples per split.
        cache_dir: where generated cluttered sets are cached.
        seed: seed of the cluttered image generator.
        bundled: the cluttered sets are generated from the bundled MNIST
            sample when no ``data_dir`` is given (the smoke runs).
    """
    if dataset == "svhn":
        from cram_keras.data.sources import load_svhn_labelled

        data, source = load_svhn_labelled(data_dir)
        x_train, y_train = data["train"]
        x_test, y_test = data["test"]
        valid = slice(len(x_train) - n_valid, len(x_train))
        splits = {
            "train": (x_train[:n_train], y_train[:n_train]),
            "valid": (x_train[valid], y_train[valid]),
            "test": (x_test[:n_test], y_test[:n_test]),
        }
        return {
            split: {"images": x, "labels": y, "saliency": None, "boxes": None}
            for split, (x, y) in splits.items()
        }, source
    from cram_keras.data.translated import load_cluttered_translated

    data, source = load_cluttered_translated(
        data_dir,
        preset=dataset,
        cache_dir=cache_dir,
        seed=seed,
        n_train=n_train,
        n_valid=n_valid,
        n_test=n_test,
        dtype="uint8",
        bundled=bundled,
        return_source=True,
    )
    return {
        split: {
            "images": data[split].images,
            "labels": data[split].labels,
            "saliency": data[split].saliency,
            "boxes": data[split].boxes,
        }
        for split in SPLITS
    }, source
