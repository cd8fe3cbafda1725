"""The inpainter's keras-tuner search against the package's defaults
(configurations ``inpaint/tune_*``).

Two variants: ``search`` (``tune=True``: `train_inpaint.py --tune`, every
trial a run in ``trials/<id>`` scored on held-out training images) and
``default`` (an ordinary run of the defaults on the same training images:
its ``n_train`` is set to the number the search's trials trained on, the
first images of the training set). The result file has every
trial (its searched values, held-out hole PSNR, epochs and seconds), the
chosen values, each variant's test scores and pathway diagnostics, and the
chosen setting minus the defaults on the test images, which play no part in
the choice. ``--progress`` writes the trials as far as they have got,
nothing trained.
"""

import csv
import dataclasses
import datetime
import json
import os

from cram_keras.experiments import inpaint
from cram_keras.experiments.inpaint_config import METHOD_NAMES
from cram_keras.experiments.named import recorded_settings
from cram_keras.studies.driver import StudyError, recorded_path, run_grid

SEARCHED = ("glimpses", "learning_rate", "min_scale")
# How far a saved model's held-out score may be from its run's own (float32
# sums in another order).
RESCORE_TOLERANCE_DB = 1e-3
OBJECTIVE = inpaint.SEARCH_OBJECTIVE
VARIANTS = ("search", "default")
# Per-run numbers copied from each run's metrics.json.
RUN_KEYS = ("epochs", "n_train", "n_test", "train_wall_seconds", "wall_seconds")


def add_arguments(group):
    group.add_argument(
        "--progress",
        action="store_true",
        help="train nothing: write the result file from the trials (and the "
        "default run) as far as they have got",
    )


def run(study):
    if tuple(study.variants) != VARIANTS:
        raise StudyError(
            f"{study.name} compares the variants {', '.join(VARIANTS)}, in this "
            f"order. Received: --variants {','.join(study.variants)}"
        )
    if len(study.seeds) != 1:
        raise StudyError(f"{study.name} runs one seed. Received: {study.seeds}")
    seed = study.seeds[0]
    tune = {variant: study.config(variant, seed).tune for variant in VARIANTS}
    if tune != {"search": True, "default": False}:
        raise StudyError(
            f"{study.name} needs tune on for the variant search and off for the "
            f"variant default. Received: {tune} (leave tune out of --set)"
        )
    if study.args.progress:
        results = progress(study)
        study.write(results)
        write_figure(study, results)
        print_trials(results["trials"])
        return 0
    base = study.config()

    trained_on = {}

    def run_one(config, run_dir, variant, seed):
        if variant == "default":
            # The images every trial trained on (run_grid runs the search first).
            config = dataclasses.replace(config, n_train=trained_on["search"])
        metrics = inpaint.train_and_evaluate(config, run_dir)
        trained_on[variant] = metrics["n_train"]
        return finished_record(config, run_dir, metrics, base, study)

    def summarise(records):
        return results_of(
            {variant: per[study.seeds[0]] for variant, per in records.items()}, base
        )

    _, results = run_grid(study, run_one, summarise)
    write_figure(study, results)
    print_trials(results["trials"])
    print(summary_line(results))
    return 0


def finished_record(config, run_dir, metrics, base, study):
    """`record_of` a finished variant, with its held-out score: the
    defaults' computed from their saved model; the search's winner
    rescored from its saved model the same way, which must give the
    score its run recorded, or the two are not comparable."""
    smoke = study.smoke
    record = record_of(config, run_dir, metrics, study.runs_dir)
    if not config.tune:
        record[OBJECTIVE] = held_out_score(base, run_dir, smoke)
        return record
    winner = os.path.join(run_dir, metrics["best_trial_directory"])
    rescored = held_out_score(base, winner, smoke)
    if abs(rescored - record[OBJECTIVE]) > RESCORE_TOLERANCE_DB:
        raise StudyError(
            f"the winning trial's saved model scores {rescored:.4f} dB on the "
            f"held-out images, but its run recorded {record[OBJECTIVE]:.4f} dB; "
            f"{winner}/model.keras is not the model its run scored"
        )
    record["winner_rescored_" + OBJECTIVE] = rescored
    return record


def held_out_score(search_config, run_dir, smoke=False):
    """The hole PSNR of the model saved in ``run_dir`` on the search's
    held-out images (the last ``tune_valid_fraction`` of the training
    images the search loads), scored as the search scores its trials: the
    evaluation holes, the saved batch-norm statistics (recalibrated after
    training, as for the final scores)."""
    from cram_keras.data.inpainting import evaluation_masks, load_images
    from cram_keras.evaluation.baselines import evaluate_inpainting
    from cram_keras.evaluation.inpainting import complete
    from cram_keras.experiments.search import held_out
    from cram_keras.training.checkpoint import load_inpainter

    x_train, _ = load_images(search_config, bundled=smoke)
    _, x_valid = held_out(x_train, search_config.tune_valid_fraction)
    masks = evaluation_masks(search_config, len(x_valid), x_valid.shape[1])
    model = load_inpainter(run_dir)
    completed = complete(model, x_valid, masks, search_config.eval_batch_size)
    return float(evaluate_inpainting(x_valid, completed, masks)["hole_psnr"])


def record_of(config, run_dir, metrics, runs_dir=None):
    """One variant's record: its values of the searched settings (the
    chosen ones for the search), test scores, diagnostics and times; the
    search's also its trials, winning trial and held-out score."""
    record = {key: metrics.get(key) for key in RUN_KEYS}
    record.update(
        run_dir=recorded_path(run_dir, runs_dir),
        values={name: metrics.get(name, getattr(config, name)) for name in SEARCHED},
        scores=metrics["methods"][METHOD_NAMES[config.encoder]],
        pathway_diagnostics=metrics.get("pathway_diagnostics"),
    )
    if config.tune:
        with open(os.path.join(run_dir, "trials.json")) as f:
            record["trials"] = json.load(f)["trials"]
        record.update(
            best_trial=metrics["best_trial"], **{OBJECTIVE: metrics[OBJECTIVE]}
        )
    return record


def results_of(runs, base):
    """The result file's body from ``runs[variant]`` (`record_of`); a
    variant that has not run yet is missing."""
    results = {
        "runs": runs,
        "dataset": base.dataset,
        "epochs": base.epochs,
        "max_trials": base.max_trials,
        "searched": {
            "glimpses": list(base.glimpse_range),
            "learning_rate": list(base.learning_rate_range),
            "min_scale": list(base.min_scale_range),
        },
        "tune_valid_fraction": base.tune_valid_fraction,
        "config": recorded_settings(base, drop=("tune", "max_trials", "n_train")),
        "trials": (runs.get("search") or {}).get("trials", []),
        "wall_seconds": sum(r["wall_seconds"] or 0.0 for r in runs.values()),
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
    }
    if set(VARIANTS) <= set(runs):
        search, default = runs["search"], runs["default"]
        results["summary"] = {
            "chosen": search["values"],
            "default": default["values"],
            "chosen_minus_default_db": search["scores"]["hole_psnr"]
            - default["scores"]["hole_psnr"],
            "chosen_minus_default_held_out_db": search[OBJECTIVE] - default[OBJECTIVE],
        }
    return results


def progress(study):
    """The study as far as it has got, nothing trained: the trials (read
    from their run directories until the search has finished), and each
    variant's record once its run has finished (as `run` records it)."""
    seed = study.seeds[0]
    search_dir = study.run_dir("search", seed)
    trials_dir = os.path.join(search_dir, "trials")
    if not os.path.isdir(trials_dir) or not os.listdir(trials_dir):
        raise StudyError(
            f"no trial of {study.name} has started under {search_dir} (--runs-dir "
            "names the folder of its run directories)"
        )
    base = study.config()
    runs = {}
    for variant in VARIANTS:
        run_dir = study.run_dir(variant, seed)
        path = os.path.join(run_dir, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                metrics = json.load(f)
            config = study.config(variant, seed)
            if variant == "default":
                config = dataclasses.replace(config, n_train=metrics["n_train"])
            runs[variant] = finished_record(config, run_dir, metrics, base, study)
    results = results_of(runs, base)
    if "search" not in runs:
        results["trials"] = [
            trial_so_far(os.path.join(trials_dir, name), name)
            for name in sorted(os.listdir(trials_dir))
        ]
    if "summary" not in results:
        done = sum(t["status"] == "COMPLETED" for t in results["trials"])
        finished = (
            " (the defaults' run: not finished)" if done == base.max_trials else ""
        )
        results["status"] = f"{done} of {base.max_trials} trials finished{finished}"
    return results


def trial_so_far(trial_dir, trial_id):
    """A trial's row as `train_inpaint.py --tune` writes it to trials.json,
    from its run directory: its values, its held-out hole PSNR once
    finished, the epochs done and its training seconds."""
    with open(os.path.join(trial_dir, "config.json")) as f:
        config = json.load(f)
    row = {"trial_id": trial_id, "status": "RUNNING"}
    row.update({name: config[name] for name in SEARCHED})
    row[OBJECTIVE], row["epochs"], row["seconds"] = None, 0, None
    log = os.path.join(trial_dir, "log.csv")
    if os.path.exists(log):
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        row["epochs"] = len(rows)
        row["seconds"] = sum(float(r.get("train_seconds") or 0) for r in rows)
    metrics = os.path.join(trial_dir, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics) as f:
            finished = json.load(f)
        row.update(
            status="COMPLETED",
            epochs=finished["epochs"],
            seconds=finished["wall_seconds"],
            **{OBJECTIVE: finished[OBJECTIVE]},
        )
    return row


def print_trials(trials):
    print(
        "| trial | glimpses | learning rate | min_scale | held-out hole PSNR | epochs |"
    )
    print("|---|---|---|---|---|---|")
    for t in trials:
        score = "-" if t[OBJECTIVE] is None else f"{t[OBJECTIVE]:.2f}"
        print(
            f"| {t['trial_id']} | {t['glimpses']} | {t['learning_rate']:.2e} | "
            f"{t['min_scale']:.3f} | {score} | {t['epochs']} |"
        )


def summary_line(results):
    summary = results["summary"]
    chosen = ", ".join(f"{k}={v:.4g}" for k, v in summary["chosen"].items())
    return (
        f"chosen {chosen}: test hole PSNR {summary['chosen_minus_default_db']:+.2f} dB "
        "against the defaults"
    )


def write_figure(study, results):
    """The configuration's trials figure (FIGURES ``trials``), once a trial
    has a score."""
    figure = study.figure("trials")
    if figure and any(t[OBJECTIVE] is not None for t in results["trials"]):
        trials_figure(results, figure)


def trials_figure(results, path):
    """Each trial's held-out hole PSNR against its glimpse count (colour:
    its Adam rate; the chosen trial circled), and the defaults'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    trials = [t for t in results["trials"] if t[OBJECTIVE] is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    points = ax.scatter(
        [t["glimpses"] for t in trials],
        [t[OBJECTIVE] for t in trials],
        c=np.log10([t["learning_rate"] for t in trials]),
        cmap="viridis",
        s=50,
        label="trials",
    )
    fig.colorbar(points, ax=ax, label="log10 Adam rate")
    best = max(trials, key=lambda t: t[OBJECTIVE])
    ax.scatter(
        [best["glimpses"]], [best[OBJECTIVE]], s=180, facecolors="none",
        edgecolors="red", linewidths=1.5, label="chosen",
    )  # fmt: skip
    default = results["runs"].get("default")
    if default is not None and default.get(OBJECTIVE) is not None:
        ax.scatter(
            [default["values"]["glimpses"]], [default[OBJECTIVE]], marker="x",
            s=80, color="black", label="defaults",
        )  # fmt: skip
    ax.set_xlabel("glimpses")
    ax.set_ylabel("held-out hole PSNR (dB)")
    ax.set_xticks(range(1, 1 + max(t["glimpses"] for t in trials)))
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(f"{len(trials)} trials of {results['epochs']} epochs")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
