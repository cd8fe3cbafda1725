"""The CRAM classification tables: the budget runs and the script's full
setting on 60x60 cluttered MNIST against the published anchors, and the
budget runs' learning curves."""

from .cells import in_order, listed, paragraphs, pct, table
from .sources import load, result_exists, sourced

CLUE_SHORT = {"oracle": "oracle clue", "saliency": "saliency clue", "none": "no clue"}
CLUES = {
    "oracle": "CRAM, oracle clue (ground-truth digit mask)",
    "saliency": "CRAM, learned saliency clue (CNN-DecNN, test IoU {iou:.2f})",
    "none": "CRAM, no clue (zeros, clue weight 0)",
}
# The published results on the same task: (label, key in `anchors`, digits).
ANCHORS = (
    ("RAM, 8 glimpses (Mnih et al. 2014, published)", "ram_8_glimpses_cluttered60", 2),
    ("RAM's conv net (published)", "ram_convnet_cluttered60", 2),
    (
        "ST-CNN (Jaderberg et al. 2015, published, its own 60x60 variant)",
        "stn_st_cnn_cluttered60",
        1,
    ),
)


def clue_runs(result):
    """``(clue, run)`` of each clue run, in the order of CLUES."""
    return [(clue, result["runs"][clue]) for clue in in_order(result["runs"], CLUES)]


@sourced("cram_cls_budget.json")
def cram_cls(result):
    rows = [
        [label, pct(result["anchors"][key], digits), "", ""]
        for label, key, digits in ANCHORS
    ]
    for clue, run in clue_runs(result):
        per_seed = ", ".join(
            pct(v).replace(" %", "") for v in run["test_error_per_seed"]
        )
        wall = f"{run['wall_seconds']:.0f} s"
        if clue == "saliency":
            wall += f" (with {result['saliency_seconds']:.0f} s of saliency training)"
        rows.append(
            [
                CLUES[clue].format(iou=result["saliency_test_iou"]),
                f"{pct(run['test_error'])} ({per_seed})",
                run["epochs"],
                wall,
            ]
        )
    header = ["model", "test error (per seed)", "epochs", "wall time per run"]
    return table(header, rows)


def cram_cls_curves(base):
    result = load("cram_cls_budget.json")
    rows = [
        [
            clue,
            *[pct(v) for v in run["valid_error_per_epoch"]],
            *[pct(v) for v in run["train_error_per_epoch"]],
        ]
        for clue, run in clue_runs(result)
    ]
    epochs = range(1, result["protocol"]["epochs"] + 1)
    header = [
        "clue",
        *[f"validation, epoch {e}" for e in epochs],
        *[f"training, epoch {e}" for e in epochs],
    ]
    return paragraphs(
        table(header, rows),
        f"Mean of seeds {listed(result['protocol']['seeds'])}; same source as above.",
    )


def _full_run_cells(run):
    """A run of the full setting as it stands: its test error (finished) or
    "-", its best validation error and epoch, its state."""
    if run is None:
        return ["-", "-", "-", "not started"]
    state = (
        "finished"
        if run["finished"]
        else f"training: epoch {run['epochs_done']} of {run['epochs_planned']}"
    )
    return [
        pct(run["test_error"], 2) if run["finished"] else "-",
        pct(run["best_valid_error"], 2),
        f"{run['epochs_done']} ({run['best_valid_epoch']})",
        state,
    ]


def cram_cls_full(base):
    """The script's full setting, one row per clue and seed, finished or not,
    beside the published anchors."""
    if not result_exists("cram_cls_full.json"):
        return "Not run yet."
    return _cram_cls_full(base)


@sourced("cram_cls_full.json")
def _cram_cls_full(result):
    rows = [
        [label, "", pct(result["anchors"][key], digits), "", "", ""]
        for label, key, digits in ANCHORS
    ]
    progress = result.get("progress", {})
    for clue in CLUES:
        for seed in result["seeds"]:
            run = progress.get(clue, {}).get(str(seed))
            label = (
                "CRAM, learned saliency clue (CNN-DecNN)"
                if clue == "saliency" and "saliency_test_iou" not in result
                else CLUES[clue].format(iou=result.get("saliency_test_iou"))
            )
            rows.append([label, f"{seed}", *_full_run_cells(run)])
    header = [
        "model",
        "seed",
        "test error (best validation epoch)",
        "best validation error",
        "epochs (best)",
        "state",
    ]
    return table(header, rows)
