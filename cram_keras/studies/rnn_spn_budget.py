"""Table 1's models for a few epochs on part of the data (configurations
``rnn_spn/budget...``): per model its test and validation errors, epochs,
wall time, throughput and parameters beside the paper's Table 1 error."""

from cram_keras.experiments import rnn_spn
from cram_keras.studies.driver import run_grid, timed_runs

PAPER_TABLE_1 = {"rnn_spn": 0.015, "ffn_spn": 0.020, "conv": 0.029}
KEYS = (
    "test_per_digit_error", "test_sequence_error", "valid_per_digit_error",
    "epochs", "best_epoch", "wall_seconds", "train_sequences_per_second",
    "parameters",
)  # fmt: skip


def run(study):
    base = study.config()

    def run_one(config, run_dir, variant, seed):
        metrics = rnn_spn.train_and_evaluate(config, run_dir)
        return dict(
            {key: metrics[key] for key in KEYS},
            paper_per_digit_error=PAPER_TABLE_1[config.model],
        )

    def summarise(records):
        models = {v: next(iter(per.values())) for v, per in records.items()}
        return timed_runs(base, "models", models)

    run_grid(study, run_one, summarise)
    return 0
