"""The saliency stage of a CRAM classification run with ``clue="saliency"``
(Chung & Cho 2018, Section V-A): the `SaliencyNetwork` (CNN-DecNN) trained
on the training split's masks, and the clue of every split thresholded from
its probabilities.

The network trains as a nested run of the same machinery
(`SaliencyStage`, resumable epoch by epoch) into
``<run>/saliency/network/``; the clues and their IoU against the masks are
kept in ``<run>/saliency/`` (`prepare_clues`), so a resumed classification
run neither trains the network nor thresholds again. One process at a
time makes them: the one holding the run directory
(`cram_keras.training.run_lock`).
"""

import dataclasses
import os
import time

import keras

from cram_keras.data.pipelines import as_float, image_dataset
from cram_keras.data.saliency_masks import saliency_targets
from cram_keras.experiments.config import option
from cram_keras.experiments.experiment import Experiment
from cram_keras.experiments.runner import run_experiment
from cram_keras.models.saliency import SaliencyNetwork
from cram_keras.training import run_lock
from cram_keras.training.optimizers import FusedAdam
from cram_keras.training.saliency import (
    load_clues,
    mask_iou,
    saliency_clues,
    save_clues,
)
from cram_keras.utils import read_json, write_json


@dataclasses.dataclass(frozen=True)
class SaliencyConfig:
    """The saliency network's training (a stage of a clue="saliency" run)."""

    filters: list = option([16, 32, 64], "CNN-DecNN filters")
    epochs: int = option(10, "epochs (best epoch by validation loss)")
    batch_size: int = option(64, "batch size")
    learning_rate: float = option(1e-3, "Adam learning rate")
    seed: int = option(0, "seed")
    run_eagerly: bool = option(False, "run eagerly")
    pseudo_masks: bool = option(False, "trained on contrast pseudo-masks (SVHN)")


class SaliencyStage(Experiment):
    """Trains the `SaliencyNetwork` on given images and {0, 1} masks (Adam,
    binary cross-entropy), keeping the best validation-loss epoch; run with
    `run_experiment` into ``<run>/saliency/network/``."""

    name = "saliency"
    Config = SaliencyConfig
    backends = ("tensorflow", "jax")
    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self, arrays):
        self.arrays = arrays  # (images, masks, valid_images, valid_masks)

    @staticmethod
    def config_of(config):
        return SaliencyConfig(
            filters=list(config.saliency_filters),
            epochs=config.saliency_epochs,
            batch_size=config.saliency_batch_size,
            learning_rate=config.saliency_learning_rate,
            seed=config.seed,
            run_eagerly=config.run_eagerly,
            pseudo_masks=config.dataset == "svhn",
        )

    def load_data(self, run):
        return self.arrays

    def train_dataset(self, run, epoch):
        images, masks = run.data[:2]
        return image_dataset(
            images, masks, run.config.batch_size, run.config.seed, epoch
        )

    def valid_dataset(self, run):
        return image_dataset(*run.data[2:], run.config.batch_size)

    def samples_per_epoch(self, run):
        return len(run.data[0])

    def build_model(self, run):
        config = run.config
        net = SaliencyNetwork(filters=config.filters, name="saliency")
        net.compile(
            optimizer=FusedAdam(config.learning_rate),
            loss=keras.losses.BinaryCrossentropy(),
            run_eagerly=config.run_eagerly,
        )
        net(as_float(run.data[0][:2]))
        return net

    def evaluate(self, run):
        return {}


def prepare_clues(config, splits, output_dir):
    """The clue of every split and, for `saliency`, the saliency metrics.

    `config` is a classification Config. Returns `(clues, info)`:
    `clues[split]` is uint8 (N, H, W, 1) in {0, 1}, or `None` for
    `clue="none"` (the datasets then feed zeros); `info` has the saliency
    network's IoU against the masks it learned, per split. For `saliency`,
    the network and the clues are kept in `output_dir/saliency/`, so a
    resumed run does not train it again.
    """
    if config.clue == "none":
        return {s: None for s in splits}, {}
    if config.clue == "oracle":
        return {s: splits[s]["saliency"] for s in splits}, {}

    directory = os.path.join(output_dir, "saliency")
    clues_path = os.path.join(directory, "clues.npz")
    info_path = os.path.join(directory, "metrics.json")
    if os.path.exists(clues_path) and os.path.exists(info_path):
        return load_clues(clues_path, splits), read_json(info_path)
    # One process makes the clues (the run that holds `output_dir` may take
    # it again; the network's own run holds its directory too).
    with run_lock.hold(output_dir):
        return _make_clues(config, splits, directory, clues_path, info_path)


def _make_clues(config, splits, directory, clues_path, info_path):
    if os.path.exists(clues_path) and os.path.exists(info_path):
        return load_clues(clues_path, splits), read_json(info_path)
    os.makedirs(directory, exist_ok=True)
    targets = saliency_targets(splits, pseudo_masks=config.dataset == "svhn")
    start = time.perf_counter()
    if config.saliency_model is not None:
        net = keras.models.load_model(config.saliency_model)
        source = config.saliency_model
    else:
        stage = SaliencyStage(
            (
                splits["train"]["images"],
                targets["train"],
                splits["valid"]["images"],
                targets["valid"],
            )
        )
        network_dir = os.path.join(directory, "network")
        run_experiment(stage, stage.config_of(config), network_dir)
        net = keras.models.load_model(os.path.join(network_dir, "model.keras"))
        source = "trained in this run"
    clues = {
        s: saliency_clues(net, splits[s]["images"], config.saliency_threshold)
        for s in splits
    }
    kind = "pseudo_masks" if config.dataset == "svhn" else "ground_truth"
    info = {
        "saliency_source": source,
        "saliency_targets": kind,
        "saliency_seconds": time.perf_counter() - start,
        "saliency_parameters": int(net.count_params()),
    }
    for s in splits:
        info[f"saliency_{s}_iou"] = mask_iou(clues[s], targets[s])
        info[f"saliency_{s}_fraction"] = float(clues[s].mean())
    save_clues(clues_path, clues)
    write_json(info_path, info)
    return clues, info
