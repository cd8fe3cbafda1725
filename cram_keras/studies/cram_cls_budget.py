"""CRAM classification with each clue over seeds (configuration
``cram_cls/budget``): per clue the test error at the best validation epoch,
the epochs, wall time and validation error per epoch, as means over the
seeds with every seed's values beside them; the saliency network's test
IoU; the validation curves and the glimpses of one variant's first seed
(its FIGURES).

``--progress`` trains nothing: it writes the result file from the run
directories as far as they have got (``runs`` and the rest as the study
writes them for the runs that have finished, ``progress`` and ``status``
for every run) and the validation curves."""

import csv
import datetime
import json
import os
import shutil

import numpy as np

from cram_keras.data.translated import VALID_START
from cram_keras.experiments import cram_cls
from cram_keras.experiments.run_dir import LOG_FILE, METRICS_FILE
from cram_keras.studies.driver import lost_runs, run_grid, runs_so_far

# The training split of the cluttered MNIST datasets: digits 0..54,999.
TRAIN_IMAGES = VALID_START
CLUE_COLORS = {"oracle": "tab:green", "saliency": "tab:blue", "none": "tab:red"}


def add_arguments(group):
    group.add_argument(
        "--progress",
        action="store_true",
        help="train nothing: write the result file and the validation curves "
        "(FIGURES curves) from the runs as far as they have got (per-epoch "
        "validation error, best validation epoch; a finished run's test error)",
    )


def run(study):
    if study.args.progress:
        report_progress(study)
        return 0
    base = study.config()
    glimpses = study.figure("glimpses")
    # Whose glimpses the figure shows: a variant's name, not a path.
    glimpses_variant = study.named.figures.get("glimpses_variant")
    first_seed = study.seeds[0]

    def run_one(config, run_dir, variant, seed):
        metrics = cram_cls.train_and_evaluate(config, run_dir)
        if glimpses and variant == glimpses_variant and seed == first_seed:
            os.makedirs(os.path.dirname(glimpses) or ".", exist_ok=True)
            for ext in ("png", "gif"):
                shutil.copyfile(
                    os.path.join(run_dir, f"glimpses.{ext}"), f"{glimpses}.{ext}"
                )
        return dict(metrics, seed=seed)

    def summarise(records):
        return results_of(records, base, study.seeds)

    _, results = run_grid(study, run_one, summarise)
    _curves_figure(study, results["runs"], base)
    return 0


def _curves_figure(study, runs, base):
    curves = study.figure("curves")
    if curves:
        os.makedirs(os.path.dirname(curves) or ".", exist_ok=True)
        plot_curves(
            runs,
            curves,
            f"CRAM, cluttered MNIST 60x60, {base.n_train:,} training images, "
            f"{len(study.seeds)} seed(s)",
        )


def read_run(run_dir):
    """One run as far as it has got: ``epochs_done``, ``epochs_planned``,
    ``valid_error_per_epoch`` (log.csv), ``best_valid_epoch`` (1-based, the
    first epoch of the lowest validation error, as early stopping picks it),
    ``best_valid_error``, ``finished`` and, for a finished run, ``test_error``
    (metrics.json: at the best validation epoch) and ``metrics`` (all of
    metrics.json). None when the run has not finished an epoch."""
    log = os.path.join(run_dir, LOG_FILE)
    if not os.path.exists(log):
        return None
    with open(log, newline="") as f:
        rows = [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]
    if not rows:
        return None
    with open(os.path.join(run_dir, "config.json")) as f:
        planned = json.load(f)["epochs"]
    errors = cram_cls.EXPERIMENT.summarize_log(rows)["valid_error_per_epoch"]
    best = min(range(len(errors)), key=errors.__getitem__)
    entry = {
        "epochs_done": len(rows),
        "epochs_planned": planned,
        "valid_error_per_epoch": errors,
        "best_valid_epoch": best + 1,
        "best_valid_error": errors[best],
        "finished": False,
        "test_error": None,
        "metrics": None,
    }
    path = os.path.join(run_dir, METRICS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            metrics = json.load(f)
        entry.update(finished=True, test_error=metrics["test_error"], metrics=metrics)
    return entry


def progress(study):
    """The result file's contents from the run directories: ``results_of``
    over the finished runs, ``progress[clue][seed]`` (``read_run`` less its
    metrics) and ``status[clue][seed]`` for every run."""
    runs, status = runs_so_far(
        study,
        read_run,
        lambda entry: (
            "finished"
            if entry["finished"]
            else f"epoch {entry['epochs_done']} of {entry['epochs_planned']}"
        ),
    )
    seeds = {str(seed): seed for seed in study.seeds}
    finished = {}
    for clue, per_seed in runs.items():
        for key, entry in per_seed.items():
            metrics = entry.pop("metrics")
            if metrics is not None:
                finished.setdefault(clue, {})[seeds[key]] = dict(
                    metrics, seed=seeds[key]
                )
    results = results_of(finished, study.config(), study.seeds)
    results.update(progress=runs, status=status)
    return results


def report_progress(study):
    """Writes the result file (and the validation curves) from the runs as
    they are; returns the results."""
    results = progress(study)
    results["lost_runs"] = lost_runs(
        study.output, results["progress"], "progress", lambda run: run["epochs_done"]
    )
    results["date"] = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    results["notes"] = (
        "In progress: runs[clue] summarises the finished runs only, as the "
        "finished study records them; progress[clue][seed] is every run so "
        "far (validation error per epoch, best validation epoch, 1-based, and "
        "error; a finished run's test error at its best validation epoch); "
        "lost_runs: runs whose directory was restarted, as far as they had got."
    )
    study.write(results)
    curves = {
        clue: {
            "valid_error_per_epoch": _mean_curve(
                [run["valid_error_per_epoch"] for run in per_seed.values()]
            ),
            "valid_error_per_epoch_per_seed": [
                run["valid_error_per_epoch"] for run in per_seed.values()
            ],
        }
        for clue, per_seed in results["progress"].items()
    }
    for clue, run in results["runs"].items():
        if len(run["seeds"]) == len(curves[clue]["valid_error_per_epoch_per_seed"]):
            curves[clue]["test_error"] = run["test_error"]
    _curves_figure(study, curves, study.config())
    for clue, per_seed in results["status"].items():
        for seed, text in per_seed.items():
            run = results["progress"].get(clue, {}).get(seed)
            best = (
                ""
                if run is None
                else f"; best validation error {100 * run['best_valid_error']:.2f} % "
                f"(epoch {run['best_valid_epoch']})"
            )
            print(f"{clue} seed {seed}: {text}{best}")
    return results


def results_of(records, base, seeds):
    """The result file's numbers from ``records[clue][seed]`` (metrics)."""
    results = {"runs": {}}
    for clue, per_seed in records.items():
        per_seed = list(per_seed.values())
        results["runs"][clue] = summarize(per_seed)
        if clue == "saliency":
            for key in ("saliency_test_iou", "saliency_valid_iou", "saliency_seconds"):
                results[key] = _mean([m[key] for m in per_seed])
            results["saliency_test_iou_per_seed"] = [
                m["saliency_test_iou"] for m in per_seed
            ]
    results.update(
        protocol={
            "dataset": base.dataset,
            "n_train": base.n_train,
            "n_valid": base.n_valid,
            "n_test": base.n_test,
            "epochs": base.epochs,
            "saliency_epochs": base.saliency_epochs,
            "seeds": list(seeds),
            "budget": (
                f"{_training_set(base)}, at most {base.epochs} epochs per clue "
                f"and seed (early stopping after {base.patience} epochs without "
                "a better validation accuracy), the same for every clue; "
                "paper-size model, Adam 1e-4, batch 64; test error at the best "
                f"validation epoch; values are means over the training seeds "
                f"{list(seeds)} (one generated dataset), per-seed values alongside"
            ),
        },
        anchors=dict(
            cram_cls.ANCHORS,
            note=(
                "published test errors, not run here: RAM 8 glimpses and its "
                "conv net (Mnih et al. 2014) on 60x60 cluttered MNIST; ST-CNN "
                "(Jaderberg et al. 2015) on its 60x60 translated+cluttered MNIST"
            ),
        ),
        # The sum of the runs' own wall times (saliency training included),
        # which survive interruptions and resumed invocations.
        total_wall_seconds=sum(
            sum(r["wall_seconds_per_seed"]) for r in results["runs"].values()
        ),
    )
    return results


def _training_set(base):
    """What the runs train on: the whole training split (the script's full
    setting) or the budget's first images of it."""
    if base.n_train is None or base.n_train >= TRAIN_IMAGES:
        return f"the script's full setting: all {TRAIN_IMAGES:,} training images"
    return f"CPU budget: {base.n_train:,} of the {TRAIN_IMAGES:,} training images"


def _mean(values):
    return float(np.mean(values))


def summarize(per_seed):
    """One clue's entry: means over seeds, and every seed's own values."""
    curves = [m["valid_error_per_epoch"] for m in per_seed]
    shortest = min(len(c) for c in curves)
    return {
        "test_error": _mean([m["test_error"] for m in per_seed]),
        "valid_error": _mean([m["valid_error"] for m in per_seed]),
        "epochs": per_seed[0]["epochs"],
        "wall_seconds": _mean([m["wall_seconds"] for m in per_seed]),
        "valid_error_per_epoch": _mean_curve(curves),
        "train_error_per_epoch": [
            _mean([m["train_error_per_epoch"][e] for m in per_seed])
            for e in range(shortest)
        ],
        "glimpse_in_digit_box": _mean([m["glimpse_in_digit_box"] for m in per_seed]),
        "glimpse_scale": _mean([m["glimpse_scale"] for m in per_seed]),
        "beta": per_seed[0]["beta"],
        "parameters": per_seed[0]["parameters"],
        "train_samples_per_second": _mean(
            [m["train_samples_per_second"] for m in per_seed]
        ),
        "seeds": [m["seed"] for m in per_seed],
        "test_error_per_seed": [m["test_error"] for m in per_seed],
        "wall_seconds_per_seed": [m["wall_seconds"] for m in per_seed],
        "best_epoch_per_seed": [m["best_epoch"] for m in per_seed],
        "valid_error_per_epoch_per_seed": curves,
    }


def _mean_curve(curves):
    """The mean over seeds of per-epoch values, as far as the shortest goes."""
    return [_mean([c[e] for c in curves]) for e in range(min(len(c) for c in curves))]


def plot_curves(runs, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for clue, run in runs.items():
        color = CLUE_COLORS.get(clue)
        for errors in run.get("valid_error_per_epoch_per_seed", []):
            epochs = range(1, len(errors) + 1)
            ax.plot(epochs, [100 * e for e in errors], color=color, lw=0.7, alpha=0.4)
        errors = run["valid_error_per_epoch"]
        ax.plot(
            range(1, len(errors) + 1),
            [100 * e for e in errors],
            marker="o",
            color=color,
            label=f"clue: {clue} (test {100 * run['test_error']:.1f} %)"
            if "test_error" in run
            else f"clue: {clue} (in progress)",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_title(title, fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
