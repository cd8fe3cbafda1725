"""The CRAM inpainting tables: the budget runs and the study against the
CNN encoder and classical methods, the full-budget runs as far as they have
got, and the inpainter under mixed_bfloat16."""

from .cells import duration, listed, num, paragraphs, ratio, table
from .sources import (
    backend_name,
    clean_command,
    hardware,
    load,
    result_date,
    result_exists,
    result_link,
    source,
    sourced,
)

VARIANT_LABELS = {
    "cram": "CRAM (the paper's shared start)",
    "per_step": "CRAM, per-step starts",
    "spread": "CRAM, spread starts",
    "spread_no_clue": "CRAM, spread starts, clue weight 0",
    "cnn_encoder": "CNN encoder (no attention)",
    "cram_skip": "CRAM + context skip (`cram_skip`, beyond the paper)",
    "navier_stokes": "OpenCV Navier-Stokes",
    "telea": "OpenCV Telea",
    "mean_fill": "mean fill",
}
CLASSICAL = ("navier_stokes", "telea", "mean_fill")
DIAGNOSTICS = [
    ("hole_psnr_glimpses_zeroed", 2),
    ("hole_psnr_context_zeroed", 2),
    ("windows.mean_scale", 3),
    ("windows.mean_pairwise_distance_px", 1),
    ("windows.ring_coverage", 2),
    ("train_recon_loss", 3),
]
INPAINT_FULL_LABELS = {
    "cram": "CRAM",
    "cnn_encoder": "CNN encoder (no attention)",
    "cram_skip": "CRAM + context skip (`cram_skip`)",
}


def _differences(result):
    """What CRAM gains over the CNN encoder and the best classical method,
    and what zeroing its glimpses or its context network costs."""
    summary = result["summary"]
    best_classical = VARIANT_LABELS[summary["best_classical"]].replace("OpenCV ", "")
    cram = result["seed_stats"]["cram"]
    psnr = cram["hole_psnr"]["mean"]
    return (
        f"CRAM minus the CNN encoder: {summary['cram_minus_cnn_encoder_db']:+.2f} dB; CRAM minus "
        f"the best classical method ({best_classical}): "
        f"{summary['cram_minus_best_classical_db']:+.2f} dB; zeroing CRAM's glimpses costs "
        f"{psnr - cram['hole_psnr_glimpses_zeroed']['mean']:.2f} dB, "
        f"zeroing its context network "
        f"{psnr - cram['hole_psnr_context_zeroed']['mean']:.2f} dB."
    )


def _epochs_trained(result, order):
    """ "60 epochs", or for runs with early stopping each variant's epochs
    and best epoch (1-based, as the console and the progress tables count)."""
    runs = result["runs"]
    stopped = [
        (v, seed, r)
        for v in order
        for seed, r in runs.get(v, {}).items()
        if r.get("best_epoch") is not None
    ]
    if not stopped:
        return f"{result['epochs']} epochs"
    seeds = len(result["seeds"]) > 1
    return "trained until the held-out hole PSNR stopped improving: " + ", ".join(
        f"{VARIANT_LABELS[v].split(' (')[0]}{f' seed {seed}' if seeds else ''} "
        f"{r['epochs']} epochs (scored at its best, epoch {r['best_epoch'] + 1})"
        for v, seed, r in stopped
    )


def _facts(result, order):
    """Data, epochs, seeds and the wall time per run of each variant."""
    runs = result["runs"]
    walls = {
        v: sum(r["wall_seconds"] for r in runs[v].values()) / len(runs[v])
        for v in result["variants"]
    }
    wall_text = "; ".join(
        f"{VARIANT_LABELS[v].split(' (')[0]} {duration(walls[v])}"
        for v in order
        if v in walls
    )
    return (
        f"{result['n_train']:,} training images, {result['n_test']:,} test images, "
        f"{_epochs_trained(result, order)}, seed{'s' if len(result['seeds']) > 1 else ''} "
        f"{listed(result['seeds'])}; wall time per run: {wall_text}."
    )


def inpaint(result, ranges):
    """An inpainting result file: hole PSNR (with the range over seeds where
    ``ranges``) and the diagnostics of each variant, then the classical
    methods."""
    stats = result["seed_stats"]
    variants, methods = result["variants"], result["methods"]
    order = [v for v in VARIANT_LABELS if v in variants] + [
        m for m in CLASSICAL if m in methods
    ]
    best = max(variants, key=lambda v: methods[v]["hole_psnr"])

    def cell(variant, key, digits):
        s = stats.get(variant, {}).get(key)
        if s is None:
            return "-"
        text = num(s["mean"], digits)
        if ranges:
            text += f" [{num(s['min'], digits)}, {num(s['max'], digits)}]"
        return text

    rows = []
    for variant in order:
        if variant in variants:
            psnr = cell(variant, "hole_psnr", 2)
            if variant == best:
                psnr = f"**{psnr}**"
            cells = [psnr, *[cell(variant, key, d) for key, d in DIAGNOSTICS]]
        else:
            cells = [num(methods[variant]["hole_psnr"], 2), *[""] * len(DIAGNOSTICS)]
        rows.append([VARIANT_LABELS[variant], *cells])
    header = [
        "model",
        "hole PSNR (dB), mean [min, max]" if ranges else "hole PSNR (dB)",
        "glimpses zeroed",
        "context zeroed",
        "mean scale",
        "mean pairwise distance (px)",
        "2-px ring covered",
        "train hole L1",
    ]
    return paragraphs(
        table(header, rows),
        _differences(result),
        _facts(result, order),
    )


@sourced("inpaint_study_mnist32.json")
def inpaint_study(result):
    return inpaint(result, ranges=True)


@sourced("inpaint_svhn1083.json")
def inpaint_svhn(result):
    return inpaint(result, ranges=False)


@sourced("inpaint_mnist32.json")
def inpaint_mnist32(result):
    return inpaint(result, ranges=False)


@sourced("inpaint_full_mnist32.json")
def inpaint_full(result):
    """The full-budget inpainting runs as far as they have got."""
    return _progress(result)


CONVERGE = "inpaint_converge_svhn1083.json"


def inpaint_converge(base):
    """The SVHN subset trained until validation stops improving: the final
    table once the study has finished, else its runs as far as they have
    got."""
    if not result_exists(CONVERGE):
        return "Not run yet."
    result = load(CONVERGE)
    if "seed_stats" in result:
        text = inpaint(result, ranges=False)
    else:
        text = _progress(result)
    return paragraphs(text, source(CONVERGE, result, base))


def _progress(result):
    """A study's runs as far as they have got (`run_study.py --progress`)."""
    order = sorted(result["status"], key=list(INPAINT_FULL_LABELS).index)
    rows = []
    for variant in order:
        for seed, state in result["status"][variant].items():
            run = result["runs"].get(variant, {}).get(seed)
            if run is None:
                continue
            psnr = run["val_hole_psnr"]
            rows.append(
                [
                    INPAINT_FULL_LABELS.get(variant, variant),
                    seed,
                    state,
                    f"{run['steps'][-1]:,}",
                    num(psnr[-1]),
                    num(max(psnr)),
                ]
            )
    header = [
        "model",
        "seed",
        "state",
        "steps",
        "validation hole PSNR, last epoch (dB)",
        "best epoch (dB)",
    ]
    parts = [table(header, rows)]
    gaps = [
        f"seed {seed}: {gap['db'][-1]:+.2f} dB after epoch {gap['epochs'][-1]}"
        for seed, gap in result["gap_db"].items()
    ]
    if gaps:
        parts.append("CRAM minus the CNN encoder: " + "; ".join(gaps) + ".")
    waiting = [
        f"{INPAINT_FULL_LABELS.get(v, v)} seed {s}"
        for v in order
        for s, state in result["status"][v].items()
        if state == "not started"
    ]
    if waiting:
        parts.append("Not started yet: " + ", ".join(waiting) + ".")
    return paragraphs(*parts)


def _bf16_row(policy, study, speed, backends):
    """A policy's training step per backend, its hole PSNR per seed (against
    float32's) and its means over the seeds."""
    row = [policy]
    for backend in backends:
        timed = speed["backends"][backend]
        cell = f"{timed[policy]['images_per_second']:.0f} images/s"
        if policy != "float32":
            cell += f" ({ratio(timed['speedup'])})"
        row.append(cell)
    runs = study["runs"]
    for seed in map(str, study["seeds"]):
        psnr = runs[policy][seed]["scores"]["hole_psnr"]
        cell = f"{num(psnr)} dB"
        if policy != "float32":
            reference = runs["float32"][seed]["scores"]["hole_psnr"]
            cell += f" ({psnr - reference:+.2f})"
        row.append(cell)
    stats = study["seed_stats"][policy]
    return row + [
        num(stats["hole_psnr"]["mean"]) + " dB",
        num(stats["hole_l1"]["mean"], 3),
        num(stats["ssim"]["mean"], 3),
        num(stats["train_recon_loss"]["mean"], 3),
    ]


def _bf16_speed_line(name, speed, backends, base):
    """The speed file's source line: how it timed, the commands, the machine
    and libraries."""
    timed = speed["backends"][backends[0]]
    commands = " and ".join(
        f"`{clean_command(speed['backends'][b]['command'])}`" for b in backends
    )
    libraries = ", ".join(
        f"{backend_name(key)} {version}"
        for b in backends
        for key, version in speed["backends"][b]["versions"].items()
        if key != "keras"
    )
    return (
        f"Speed: {result_link(name, base, full=True)}, batch "
        f"{timed['batch_size']}, {timed['rounds']} alternating rounds of "
        f"{timed['steps_per_round']} steps per policy (the "
        f"{timed['step_statistic']} of each), written by {commands}; "
        f"{hardware(speed)}; {libraries}, Keras {timed['versions']['keras']}; "
        f"{result_date(name, speed)}."
    )


def inpaint_bf16(base):
    """The inpainter under float32 and mixed_bfloat16: the training step of
    each (alternating rounds, per backend timed) and the hole scores of the
    same budget runs under each, per seed."""
    study_name, speed_name = "inpaint_bf16.json", "inpaint_bf16_speed.json"
    study, speed = load(study_name), load(speed_name)
    backends = [b for b in ("tensorflow", "jax") if b in speed["backends"]]
    rows = [
        _bf16_row(policy, study, speed, backends)
        for policy in ("float32", "mixed_bfloat16")
    ]
    header = (
        ["policy"]
        + [f"training step, {backend_name(b)}" for b in backends]
        + [f"hole PSNR, seed {seed}" for seed in study["seeds"]]
        + ["mean", "hole L1", "SSIM", "training hole L1, last epoch"]
    )
    return paragraphs(
        table(header, rows),
        # The study file records no date of its own: the speed file's, which
        # was measured on the same machine and day.
        source(study_name, study, base, date=study.get("date", speed["date"])),
        _bf16_speed_line(speed_name, speed, backends, base),
    )


TUNE = "inpaint_tune_svhn1083.json"


def inpaint_tune(base):
    """The keras-tuner search of the inpainter: every trial, then the chosen
    setting against the defaults on the test images once both have run."""
    if not result_exists(TUNE):
        return "Not run yet."
    result = load(TUNE)
    trials = result["trials"]
    scored = [t for t in trials if t["valid_hole_psnr"] is not None]
    best = max(scored, key=lambda t: t["valid_hole_psnr"]) if scored else None
    rows = []
    for t in trials:
        score = t["valid_hole_psnr"]
        cell = "-" if score is None else num(score)
        if t is best:
            cell = f"**{cell}**"
        state = "" if t["status"] == "COMPLETED" else f" ({t['status'].lower()})"
        rows.append(
            [
                t["trial_id"] + state,
                str(t["glimpses"]),
                f"{t['learning_rate']:.1e}",
                num(t["min_scale"], 3),
                cell,
                str(t["epochs"]),
                duration(t["seconds"]) if t["seconds"] else "-",
            ]
        )
    header = [
        "trial",
        "glimpses",
        "Adam rate",
        "smallest window",
        "held-out hole PSNR (dB)",
        "epochs",
        "training time",
    ]
    parts = [table(header, rows)]
    if "status" in result:
        parts.append(f"In progress: {result['status']}.")
    if "summary" in result:
        parts.append(_tune_versus_default(result))
    return paragraphs(*parts, source(TUNE, result, base))


def _tune_versus_default(result):
    """The chosen setting and the defaults on the test images."""
    rows = []
    for variant, label in (("search", "chosen by the search"), ("default", "defaults")):
        run = result["runs"][variant]
        values, scores = run["values"], run["scores"]
        diagnostics = run.get("pathway_diagnostics") or {}
        rows.append(
            [
                label,
                str(values["glimpses"]),
                f"{values['learning_rate']:.1e}",
                num(values["min_scale"], 3),
                num(run.get("valid_hole_psnr")),
                num(scores["hole_psnr"]),
                num(scores["hole_l1"], 3),
                num(scores["ssim"], 3),
                num(diagnostics.get("hole_psnr_glimpses_zeroed")),
            ]
        )
    header = [
        "setting",
        "glimpses",
        "Adam rate",
        "smallest window",
        "held-out hole PSNR (dB)",
        "test hole PSNR (dB)",
        "hole L1",
        "SSIM",
        "glimpses zeroed (dB)",
    ]
    summary = result["summary"]
    return paragraphs(
        table(header, rows),
        f"Chosen minus defaults: {summary['chosen_minus_default_db']:+.2f} dB on "
        f"the test images, {summary['chosen_minus_default_held_out_db']:+.2f} dB on "
        "the held-out images.",
    )
