"""RNN-SPN's GRU initialisation (configuration ``rnn_spn/init``): per run
(``<initializer>_seed<seed>``) the validation per-digit error of every
epoch, the first epoch below 50 % and 20 %, the test error, and the
machine it trained on. A run already in the result file of the same
configuration and settings is kept, not trained again, also where its run
directory is gone (measured on another machine)."""

import os

from cram_keras.experiments import rnn_spn
from cram_keras.experiments.run_dir import read_log
from cram_keras.studies.driver import run_grid, timed_runs
from cram_keras.utils import read_json


def first_epoch_below(errors, threshold):
    """1-based epoch at which `errors` first drops below `threshold`, or None."""
    for epoch, error in enumerate(errors, start=1):
        if error < threshold:
            return epoch
    return None


def run(study):
    from cram_keras.platform_info import describe

    base = study.config()
    previous = read_json(study.output) if os.path.exists(study.output) else {}
    same = previous.get("configuration") == study.name and (
        previous.get("settings") == study.provenance()["settings"]
    )
    kept = previous.get("runs", {}) if same else {}

    def run_one(config, run_dir, variant, seed):
        key = f"{config.gru_initializer}_seed{seed}"
        if key in kept:
            print(f"{key}: kept from {study.output}")
            return kept[key]
        metrics = rnn_spn.train_and_evaluate(config, run_dir)
        errors = [1.0 - r["val_digit_accuracy"] for r in read_log(run_dir)]
        return {
            "gru_initializer": config.gru_initializer,
            "seed": seed,
            "valid_per_digit_error_per_epoch": errors,
            "first_epoch_below_50": first_epoch_below(errors, 0.5),
            "first_epoch_below_20": first_epoch_below(errors, 0.2),
            "test_per_digit_error": metrics["test_per_digit_error"],
            "train_sequences_per_second": metrics["train_sequences_per_second"],
            "wall_seconds": metrics["wall_seconds"],
            "hardware": describe(),
        }

    def summarise(records):
        runs = {
            f"{r['gru_initializer']}_seed{r['seed']}": r
            for per in records.values()
            for r in per.values()
        }
        return timed_runs(base, "runs", runs)

    run_grid(study, run_one, summarise)
    return 0
