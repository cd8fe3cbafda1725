"""Inpainting studies as far as their runs have got (``run_study.py
inpaint/... --progress``): each run's per-epoch validation hole PSNR
(``log.csv``: the first ``monitor_examples`` test images, or with
``patience`` the held-out training images; batch-norm statistics
recalibrated as in the final scoring) against optimizer steps, its best
epoch so far,
the CRAM - CNN-encoder gap at every epoch both runs have finished, and a
figure of both. Nothing trains and nothing is scored: a run that has
finished also carries its final test scores (``metrics.json``).

Steps are counted as the runner counts them: ``n_train // batch_size``
per epoch, ``n_train`` being the run's training images (its data source
when no ``n_train`` is set), less the images held out for validation
when the run has ``patience``.
"""

import csv
import datetime
import json
import os

from cram_keras.experiments.search import held_out_count
from cram_keras.studies.driver import StudyError, lost_runs, runs_so_far

CURVE_KEYS = ("val_hole_psnr", "val_ssim", "val_hole_l1", "recon_loss")
GAP = ("cram", "cnn_encoder")  # The gap: first minus second.


def read_run(run_dir):
    """One run's curves: ``epochs`` (1-based), ``steps`` and the CURVE_KEYS
    per finished epoch, ``train_seconds``, ``best_epoch`` (1-based: the
    first epoch of the highest validation hole PSNR, the epoch a run with
    ``patience`` scores), ``patience``, and ``final`` (the finished run's
    test scores, else None). None when the run has not finished an epoch."""
    log = os.path.join(run_dir, "log.csv")
    if not os.path.exists(log):
        return None
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    available = (config.get("data_source") or {}).get("n_train")
    n_train = config["n_train"] if config.get("n_train") is not None else available
    if n_train is None:
        raise StudyError(f"{run_dir}: config.json says neither n_train nor its data")
    n_train = min(n_train, available or n_train)
    patience = config.get("patience")
    if patience is not None:
        n_train -= held_out_count(n_train, config["valid_fraction"])
    per_epoch = n_train // config["batch_size"]
    epochs = [int(row["epoch"]) + 1 for row in rows]
    curves = {
        "epochs": epochs,
        "steps": [e * per_epoch for e in epochs],
        "train_seconds": sum(float(row.get("train_seconds") or 0) for row in rows),
        "steps_per_epoch": per_epoch,
        "epochs_planned": config["epochs"],
        "patience": patience,
    }
    for key in CURVE_KEYS:
        if key in rows[0]:
            curves[key] = [float(row[key]) for row in rows]
    psnr = curves.get("val_hole_psnr")
    curves["best_epoch"] = epochs[psnr.index(max(psnr))] if psnr else None
    metrics = os.path.join(run_dir, "metrics.json")
    curves["final"] = None
    if os.path.exists(metrics):
        with open(metrics) as f:
            curves["final"] = json.load(f).get("methods")
    return curves


def gaps(runs):
    """{seed: {"steps": [...], "db": [...]}}: CRAM's validation hole PSNR
    minus the CNN encoder's at every epoch both runs of a seed finished."""
    out = {}
    first, second = (runs.get(name) or {} for name in GAP)
    for seed in sorted(set(first) & set(second)):
        a, b = first[seed], second[seed]
        common = sorted(set(a["epochs"]) & set(b["epochs"]))
        if not common:
            continue
        pa = dict(zip(a["epochs"], a["val_hole_psnr"], strict=True))
        pb = dict(zip(b["epochs"], b["val_hole_psnr"], strict=True))
        steps = dict(zip(a["epochs"], a["steps"], strict=True))
        out[seed] = {
            "epochs": common,
            "steps": [steps[e] for e in common],
            "db": [pa[e] - pb[e] for e in common],
        }
    return out


def progress(study):
    """The result file's contents: every run of the study that has finished
    an epoch, its status, and the gaps."""
    runs, status = runs_so_far(
        study,
        read_run,
        _status,
    )
    return {"runs": runs, "status": status, "gap_db": gaps(runs)}


def _status(curves):
    done = curves["epochs"][-1]
    best = f"best epoch {curves['best_epoch']}"
    if curves["final"] is not None:
        return f"finished after {done} epoch{'' if done == 1 else 's'}, {best}"
    if curves["patience"] is not None:
        return (
            f"epoch {done} of at most {curves['epochs_planned']}, {best} "
            f"(stops {curves['patience']} epochs after its best)"
        )
    return f"epoch {done} of {curves['epochs_planned']}, {best}"


def gap_figure(results, path, title):
    """Left: each run's validation hole PSNR against steps; right: CRAM
    minus the CNN encoder per seed, with the zero line."""
    from cram_keras.visualization import plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {"cram": "C0", "cnn_encoder": "C1", "cram_skip": "C2"}
    for variant, per_seed in results["runs"].items():
        for seed, curves in per_seed.items():
            left.plot(
                curves["steps"],
                curves["val_hole_psnr"],
                marker="o",
                markersize=3,
                color=styles.get(variant),
                linestyle="-" if seed == "0" else "--",
                label=f"{variant}, seed {seed}",
            )
    left.set_xlabel("optimizer steps")
    left.set_ylabel("validation hole PSNR (dB)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    for seed, gap in results["gap_db"].items():
        right.plot(
            gap["steps"], gap["db"], marker="o", markersize=3, label=f"seed {seed}"
        )
    right.axhline(0.0, color="k", linewidth=0.8)
    right.set_xlabel("optimizer steps")
    right.set_ylabel("CRAM - CNN encoder (dB)")
    right.grid(alpha=0.3)
    if results["gap_db"]:
        right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(study):
    """Writes the result file (and the gap figure) from the runs as they
    are; returns the results."""
    results = progress(study)
    results["lost_runs"] = lost_runs(
        study.output, results["runs"], "runs", lambda run: run["epochs"][-1]
    )
    results["date"] = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    base = study.config()
    if base.patience is not None:
        validation = (
            f"the last {base.valid_fraction:.0%} of its training images (held out; "
            f"early stopping after {base.patience} epochs without improvement)"
        )
    else:
        validation = f"the first {base.monitor_examples} test images"
    results["notes"] = (
        f"In progress: each run's per-epoch validation hole PSNR on {validation} "
        "against optimizer steps; best_epoch is 1-based; "
        "gap_db[seed] is CRAM minus the CNN encoder at the epochs both finished. "
        "Final test scores appear in runs[variant][seed].final once a run ends; "
        "lost_runs: runs whose directory was restarted, as far as they had got."
    )
    study.write(results)
    figure = study.figure("gap")
    if figure:
        gap_figure(results, figure, f"{study.name}: CRAM against the CNN encoder")
    for variant, per_seed in results["status"].items():
        for seed, text in per_seed.items():
            print(f"{variant} seed {seed}: {text}")
    for seed, gap in results["gap_db"].items():
        print(
            f"CRAM - CNN encoder, seed {seed}, epoch {gap['epochs'][-1]}: "
            f"{gap['db'][-1]:+.2f} dB"
        )
    return results
