"""CRAM inpainting variants over seeds (configurations ``inpaint/...``),
with the classical baselines (OpenCV Telea, OpenCV Navier-Stokes, mean
fill) scored on the same test images and holes: every run with its
pathway diagnostics (``runs[variant][seed]``), mean / min / max over seeds
(``seed_stats``), the seed means (``methods``), and a Fig. 7-style figure
(FIGURES ``inpainting``: ground truth | input with CRAM's glimpses | CRAM
generated | CRAM completed | CNN-encoder completed | Navier-Stokes
completed; needs the variants ``cram`` and ``cnn_encoder``)."""

import csv
import os

import numpy as np

from cram_keras.data.inpainting import dataset_label, evaluation_masks, load_images
from cram_keras.experiments import inpaint
from cram_keras.experiments.inpaint_config import METHOD_NAMES
from cram_keras.experiments.named import recorded_settings
from cram_keras.studies import inpaint_progress
from cram_keras.studies.driver import StudyError, recorded_path, run_grid

CLASSICAL = ("telea", "navier_stokes", "mean_fill")
# Per-run numbers copied from each run's metrics.json.
RUN_KEYS = (
    "epochs", "steps", "warmup_steps", "parameters", "n_train", "n_test",
    "train_images_per_second", "train_wall_seconds", "wall_seconds",
)  # fmt: skip
# Only in the metrics of runs with early stopping (--patience): None else.
EARLY_STOPPING_KEYS = ("best_epoch", "stopped_early", "n_valid")
FIGURE_VARIANTS = ("cram", "cnn_encoder")


def add_arguments(group):
    group.add_argument(
        "--progress",
        action="store_true",
        help="train nothing: write the result file and the gap figure (FIGURES "
        "gap) from the runs as far as they have got (per-epoch validation hole "
        "PSNR against steps, CRAM - CNN encoder)",
    )


def run(study):
    if study.args.progress:
        inpaint_progress.report(study)
        return 0
    figure = study.figure("inpainting")
    if figure and not set(FIGURE_VARIANTS) <= set(study.variants):
        raise StudyError(
            f"the inpainting figure needs the variants {FIGURE_VARIANTS}. "
            f"Received variants: {study.variants}"
        )
    base = study.config()
    classical = {}
    models = {}

    def run_one(config, run_dir, variant, seed):
        metrics = inpaint.train_and_evaluate(config, run_dir)
        for name in CLASSICAL:
            scores = metrics["methods"][name]
            if name in classical:  # Same test images and masks: same scores.
                for key, value in scores.items():
                    assert np.isclose(classical[name][key], value), (name, key)
            else:
                classical[name] = scores
        if seed == study.seeds[0] and variant in FIGURE_VARIANTS:
            models[variant] = os.path.join(run_dir, "model.keras")
        record = {key: metrics[key] for key in RUN_KEYS}
        record.update({key: metrics.get(key) for key in EARLY_STOPPING_KEYS})
        record.update(
            run_dir=recorded_path(run_dir, study.runs_dir),
            scores=metrics["methods"][METHOD_NAMES[config.encoder]],
            pathway_diagnostics=metrics.get("pathway_diagnostics"),
            train_recon_loss=_final_train_recon(run_dir),
        )
        return record

    def summarise(records):
        return results_of(records, classical, base, study)

    _, results = run_grid(study, run_one, summarise)
    if figure:
        from cram_keras.training.checkpoint import load_inpainter

        os.makedirs(os.path.dirname(figure) or ".", exist_ok=True)
        loaded = {
            "cram": load_inpainter(models["cram"]),
            "cnn": load_inpainter(models["cnn_encoder"]),
        }
        budget_figure(loaded, base, figure)
    print_table(results)
    return 0


def results_of(records, classical, base, study):
    runs = {v: {str(s): r for s, r in per.items()} for v, per in records.items()}
    results = {"methods": {}, "seed_stats": {}, "runs": runs}
    for name, per_seed in runs.items():
        results["seed_stats"][name] = summarise(per_seed)
        results["methods"][name] = {
            key: results["seed_stats"][name][key]["mean"]
            for key in classical["mean_fill"]
        }
    results["methods"].update(classical)
    best_classical = max(CLASSICAL, key=lambda n: classical[n]["hole_psnr"])
    psnr = {n: s["hole_psnr"] for n, s in results["methods"].items()}
    first = next(iter(runs.values()))[str(study.seeds[0])]
    summary = {"best_classical": best_classical}
    for name in runs:
        summary[f"{name}_minus_best_classical_db"] = psnr[name] - psnr[best_classical]
        if "cnn_encoder" in runs and name != "cnn_encoder":
            summary[f"{name}_minus_cnn_encoder_db"] = psnr[name] - psnr["cnn_encoder"]
    notes = []
    if base.n_train is not None:
        notes.append(f"Trained on the first {first['n_train']} training images only.")
    if base.n_test is not None:
        notes.append(f"Scored on the first {first['n_test']} test images only.")
    notes.append(
        "methods[variant] is the mean over seeds; seed_stats[variant] has mean / min / "
        "max of every score and pathway diagnostic, runs[variant][seed] each run."
    )
    # The runs' own wall times, which survive interruptions and resumes.
    wall = sum(r["wall_seconds"] for per in runs.values() for r in per.values())
    results.update(
        dataset=base.dataset,
        n_train=first["n_train"],
        n_test=first["n_test"],
        epochs=base.epochs,
        config=recorded_settings(base, drop=("encoder",)),
        wall_seconds=wall,
        training_wall_seconds=wall,
        summary=summary,
        notes=" ".join(notes),
    )
    return results


def budget_figure(models, config, path, examples=8):
    """Fig. 7 of the paper for CRAM, with the CNN encoder's and Navier-Stokes'
    completions as extra columns, on the first `examples` test images."""
    from cram_keras.evaluation.baselines import navier_stokes_inpaint
    from cram_keras.evaluation.inpainting import complete
    from cram_keras.visualization import inpainting_figure

    _, x_test = load_images(config)
    x = x_test[:examples]
    masks = evaluation_masks(config, len(x_test), x_test.shape[1])[:examples]
    extra = {
        "CNN encoder": complete(models["cnn"], x, masks),
        "Navier-Stokes": navier_stokes_inpaint(x, masks),
    }
    inpainting_figure(
        models["cram"],
        x,
        masks,
        path,
        extra=extra,
        title=f"CRAM on {dataset_label(config.dataset)}",
    )


def _final_train_recon(run_dir):
    """The last epoch's mean training hole L1 (log.csv `recon_loss`)."""
    path = os.path.join(run_dir, "log.csv")
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["recon_loss"]) if rows and "recon_loss" in rows[-1] else None


def _mean_and_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


def summarise(per_seed):
    """Mean / min / max over seeds of every scalar score and diagnostic."""
    first = next(iter(per_seed.values()))
    out = {}
    for group in ("scores", "pathway_diagnostics"):
        if first.get(group) is None:
            continue
        keys = [k for k, v in first[group].items() if isinstance(v, (int, float))]
        if group == "pathway_diagnostics" and "windows" in first[group]:
            for key in first[group]["windows"]:
                out[f"windows.{key}"] = _mean_and_spread(
                    [r[group]["windows"][key] for r in per_seed.values()]
                )
        for key in keys:
            out[key] = _mean_and_spread([r[group][key] for r in per_seed.values()])
    out["train_recon_loss"] = _mean_and_spread(
        [r["train_recon_loss"] for r in per_seed.values()]
    )
    return out


def print_table(results):
    """A markdown table of the variants: hole PSNR (mean, seed range), pathway
    diagnostics and the windows' statistics."""
    print(
        "| model | hole PSNR (dB), mean [min, max] | glimpses zeroed | context zeroed "
        "| mean scale | mean pairwise distance (px) | 2-px ring covered | train hole L1 |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def cell(stats, fmt="{:.2f}"):
        if not stats:
            return "-"
        return (fmt + " [" + fmt + ", " + fmt + "]").format(
            stats["mean"], stats["min"], stats["max"]
        )

    for name, stats in results["seed_stats"].items():
        row = [
            name,
            cell(stats.get("hole_psnr")),
            cell(stats.get("hole_psnr_glimpses_zeroed")),
            cell(stats.get("hole_psnr_context_zeroed")),
            cell(stats.get("windows.mean_scale"), "{:.3f}"),
            cell(stats.get("windows.mean_pairwise_distance_px"), "{:.1f}"),
            cell(stats.get("windows.ring_coverage"), "{:.2f}"),
            cell(stats.get("train_recon_loss"), "{:.3f}"),
        ]
        print("| " + " | ".join(row) + " |")
    for name in CLASSICAL:
        print(f"| {name} | {results['methods'][name]['hole_psnr']:.2f} | | | | | | |")
