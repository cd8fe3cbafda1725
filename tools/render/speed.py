"""The speed tables: training steps against the PyTorch port, oneDNN and
XLA, mixed_bfloat16, FLOPs against the machine's peak, the profile of each
step, what was tried for speed, and the GPU measurements."""

from .cells import num, paragraphs, pct, ratio, table, whole
from .sources import (
    cpu,
    hardware,
    has_gpu,
    load,
    result_exists,
    result_link,
    source,
    sourced,
)

# Our settings in table order, with what a row's label adds: float32 and
# Keras' mixed_bfloat16 policy (`train_speed.py --bf16`).
BF16_SETTINGS = (("keras", ""), ("keras_mixed_bfloat16", ", `mixed_bfloat16`"))
# The models timed, in table order: label and what one training example is.
MODELS = {
    "rnn_spn": ("RNN-SPN, d = 2", "sequences"),
    "ffn_spn": ("FFN-SPN, d = 2", "sequences"),
    "conv": ("CNN", "sequences"),
    "cram_classifier": ("CRAM classifier (60x60, 4 glimpses)", "images"),
    "cram_inpainter": ("CRAM inpainter (32x32x3, G + 2 D)", "images"),
}
TRAINING_RATIOS = {
    "rnn_spn: keras_xla / keras (alternating rounds)": (
        "RNN-SPN with XLA (`jit_compile=True`) against the default"
    ),
    "rnn_spn: keras_mixed_bfloat16 / keras": "RNN-SPN in `mixed_bfloat16` against float32",
}
PROFILE_TARGETS = {
    "sampler_rnn_spn": "sampler, RNN-SPN shape",
    "sampler_cram": "sampler, CRAM shape (separable path)",
    "rnn_spn_step": "RNN-SPN training step",
    "cram_cls_step": "CRAM classifier training step",
    "inpaint_step": "CRAM inpainter training step",
}


@sourced("rnn_spn_speed.json")
def rnn_spn_speed(result):
    res = result["results"]
    rows = [
        [MODELS[key][0]]
        + [
            f"{res[f'{key}/onednn={o}/jit_compile={j}']['sequences_per_second']:.0f}"
            for o, j in (("0", "False"), ("1", "False"), ("1", "True"))
        ]
        for key in ("rnn_spn", "ffn_spn", "conv")
    ]
    header = [
        "model (sequences/s)",
        "oneDNN off, XLA off",
        "oneDNN on, XLA off (the default)",
        "oneDNN on, XLA on",
    ]
    return table(header, rows)


@sourced("train_speed.json")
def train_speed(result):
    res, ratios = result["results"], result["ratios"]

    def speed(key):
        return res[key]["per_second"] if key in res else None

    def against_torch(key, setting):
        return [
            ratio(ratios.get(f"{key}: {setting} / torch_{torch}"))
            for torch in ("eager", "compile")
        ]

    rows = []
    for key, (label, _) in MODELS.items():
        unit = res[f"keras/{key}"]["unit"]
        rows.append(
            [
                label,
                f"{speed(f'keras/{key}'):.0f} {unit}",
                whole(speed(f"torch_eager/{key}")),
                whole(speed(f"torch_compile/{key}")),
                *against_torch(key, "keras"),
            ]
        )
        bf16 = f"keras_mixed_bfloat16/{key}"
        if bf16 in res:
            against_float32 = ratio(ratios[f"{key}: keras_mixed_bfloat16 / keras"])
            rows.append(
                [
                    f"{label}, `--dtype-policy mixed_bfloat16`",
                    f"{speed(bf16):.0f} {unit} ({against_float32} float32)",
                    "",
                    "",
                    *against_torch(key, "keras_mixed_bfloat16"),
                ]
            )
    header = [
        "model",
        "ours (Keras, TensorFlow)",
        "torch eager",
        "torch.compile",
        "ours / eager",
        "ours / compile",
    ]
    native_rows = []
    for key in ("rnn_spn", "ffn_spn", "cram_classifier", "cram_inpainter"):
        a, b = f"keras_alternating/{key}", f"keras_native_alternating/{key}"
        if a in res and b in res:
            native_rows.append(
                [
                    MODELS[key][0].split(" (")[0],
                    f"{speed(a):.0f}",
                    f"{speed(b):.0f}",
                    ratio(ratios[f"{key}: keras_native / keras (alternating rounds)"]),
                ]
            )
    native_header = [
        "model (per second)",
        "`keras.ops` sampler",
        "compiled sampler",
        "ratio",
    ]
    return paragraphs(
        table(header, rows),
        "The same models with each sampler, timed in alternating rounds:",
        table(native_header, native_rows),
    )


@sourced("bf16_check.json")
def bf16(result):
    rows = []
    for policy, curve in result["curves"].items():
        step = f"{result['speed'][policy]['sequences_per_second']:.0f} sequences/s"
        if policy != "float32":
            step += f" ({ratio(result['speed_ratio_bf16_to_float32'])})"
        rows.append(
            [
                policy,
                step,
                f"{curve['train_sequences_per_second']:.0f} sequences/s",
                ", ".join(num(curve["loss"][i], 3) for i in (0, 3, 6, 9)),
                ", ".join(pct(curve["val_digit_error"][i]) for i in (0, 3, 6, 7, 9)),
                pct(curve["test_per_digit_error"]),
            ]
        )
    header = [
        "policy",
        "training step",
        "in the run",
        "loss, epochs 1, 4, 7, 10",
        "validation per-digit error, epochs 1, 4, 7, 8, 10",
        "test per-digit error",
    ]
    return table(header, rows)


# What an ONEDNN_MAX_CPU_ISA limit of `bf16_emulated.py` leaves oneDNN.
ISA_LIMITS = {
    "ALL": "every instruction set of the CPU",
    "AVX512_CORE_VNNI": "AVX-512 without AVX512_BF16 and AMX (bfloat16 emulated)",
    "AVX2": "AVX2 (bfloat16 emulated)",
}


@sourced("bf16_emulated.json", machine=cpu)
def bf16_emulated(result):
    rows = []
    for isa, models in result["runs"].items():
        for model, row in models.items():
            label, unit = MODELS[model]
            rows.append(
                [
                    f"`{isa}`: {ISA_LIMITS.get(isa, isa)}",
                    label,
                    f"{whole(row['float32'])} {unit}/s",
                    f"{whole(row['mixed_bfloat16'])} {unit}/s",
                    ratio(row["mixed_bfloat16_over_float32"]),
                ]
            )
    header = [
        "oneDNN limited to (`ONEDNN_MAX_CPU_ISA`)",
        "training step",
        "float32",
        "mixed_bfloat16",
        "mixed_bfloat16 / float32",
    ]
    return table(header, rows)


BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX"}


@sourced("backend_speed.json", machine=cpu)
def backend_speed(result):
    """Each model's training throughput per backend and dtype policy, with
    its ratio to TensorFlow in float32."""
    settings = []
    for row in result["results"]:
        key = (row["backend"], row["policy"])
        if key not in settings:
            settings.append(key)
    rows = []
    for model in dict.fromkeys(r["model"] for r in result["results"]):
        found = {
            (r["backend"], r["policy"]): r
            for r in result["results"]
            if r["model"] == model
        }
        label, unit = MODELS[model]
        reference = found.get(("tensorflow", "float32"))
        cells = []
        for key in settings:
            row = found.get(key)
            if row is None:
                cells.append("-")
                continue
            cell = whole(row["per_second"])
            if reference is not None and key != ("tensorflow", "float32"):
                cell += f" ({ratio(row['per_second'] / reference['per_second'])})"
            cells.append(cell)
        rows.append([label, unit + "/s", *cells])
    header = [
        "training step",
        "unit",
        *[f"{BACKEND_NAMES.get(b, b)}, {p}" for b, p in settings],
    ]
    return table(header, rows)


BF16_PAPER = "rnn_spn_paper_bf16.json"


def bf16_paper(base):
    """RNN-SPN d = 3 to the paper protocol under mixed_bfloat16, beside the
    float32 row of the same seed, data and initial weights."""
    if not result_exists(BF16_PAPER):
        return "Not run yet."
    result = load(BF16_PAPER)
    float32 = load("rnn_spn_paper.json")["models"].get("rnn_spn_d3")
    rows = []
    for policy, run in (
        ("float32", float32),
        ("mixed_bfloat16", result["models"].get("rnn_spn_d3")),
    ):
        if run is None:
            rows.append([policy, "not run", "", "", "", ""])
            continue
        state = (
            "early-stopped"
            if run["stopped_early"]
            else "finished"
            if run["finished"]
            else "in progress"
        )
        rows.append(
            [
                policy,
                pct(run["test_per_digit_error_at_best"], 2),
                pct(run["test_sequence_error_at_best"], 2),
                f"{run['epochs_done']} ({run['best_epoch']}), {state}",
                pct(min(run["valid_per_digit_error"]), 2),
                f"{run['train_sequences_per_second']:.0f} sequences/s",
            ]
        )
    header = [
        "policy",
        "per-digit test error (best validation epoch)",
        "sequence test error",
        "epochs (best)",
        "best validation per-digit error",
        "training throughput",
    ]
    return paragraphs(
        table(header, rows),
        source(BF16_PAPER, result, base, machine=hardware),
        f"The float32 row: {result_link('rnn_spn_paper.json', base)} (`rnn_spn_d3`).",
    )


def _shares(times, total):
    """Each ``(name, ms)`` of ``times`` as its share of ``total`` ms."""
    return ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in times)


@sourced("profile_steps.json")
def profile_steps(result):
    rows = []
    for key, label in PROFILE_TARGETS.items():
        r = result["results"][key]
        kernel = r["kernel_cpu_ms_per_call"]
        comps = {k: v for k, v in r["by_component_ms"].items() if k != "other"}
        if len(comps) > 1:
            top = sorted(comps.items(), key=lambda kv: -kv[1])[:5]
            where = _shares(top, kernel) + "; "
        else:
            where = ""
        kinds = sorted(r["by_kind_ms"].items(), key=lambda kv: -kv[1])[:3]
        rows.append(
            [
                f"{label} ({r['what']})",
                f"{r['wall_ms_per_call']:.1f} ms",
                f"{kernel:.0f}",
                f"{r['rest_ms_per_call']:.0f}",
                where + _shares(kinds, kernel),
            ]
        )
    header = [
        "target",
        "wall / call",
        "kernels (CPU-ms)",
        "rest (CPU-ms)",
        "where the kernel time goes",
    ]
    return table(header, rows)


# The training benchmark's runs, one file per machine: the Xeon with AMX
# (float32 and bfloat16) and a CPU with AVX2 only (float32).
TRAINING_FILES = ("train_flops.json", "train_flops_avx2.json")


def _training(result):
    """Training steps: ours against the PyTorch port and each setting
    against its own reference, all from one run."""
    res = result["results"]
    rows = []
    for key, (label, unit) in MODELS.items():
        torch_eager = res.get(f"torch_eager/{key}", {}).get("per_second")
        for setting, suffix in BF16_SETTINGS:
            ours = res.get(f"{setting}/{key}")
            if not ours or "per_second" not in ours:
                continue
            rows.append(
                [
                    label + suffix,
                    f"{ours['batch']}",
                    f"{1e3 * ours['median_step_seconds']:.0f} ms",
                    f"{ours['per_second']:.0f} {unit}/s",
                    ratio(ours["per_second"] / torch_eager) if torch_eager else "-",
                ]
            )
    header = [
        "model (float32 unless named)",
        "batch",
        "step",
        "throughput",
        "ours / PyTorch eager port (throughput)",
    ]
    parts = [table(header, rows)]
    ratios = sorted(
        (label, value)
        for label, value in result.get("ratios", {}).items()
        if "torch" not in label
    )
    for alternating, how in (
        (True, "timed in alternating rounds in the same run"),
        (False, "the table's rows, timed one after the other in the same run"),
    ):
        others = [
            f"{TRAINING_RATIOS.get(label, label)}: **{ratio(value)}**"
            for label, value in ratios
            if ("alternating" in label) == alternating
        ]
        if others:
            parts.append(
                f"Each setting against its reference, {how} (throughput "
                "ratios): " + "; ".join(others) + "."
            )
    return paragraphs(*parts)


def _flops_row(label, count, timed, keras, profiler_check=True):
    """A training step's FLOPs by kind, its time and rate against the peak,
    and (for ours, once per model) the profiler's count against ours."""
    kinds = count["by_kind"]
    other = kinds.get("other arithmetic", 0) + kinds.get("sampler", 0)
    check = count.get("tensorflow_profiler_check", {}).get(
        "forward convolutions and matmuls", {}
    )
    return [
        label if keras else f"{label}, PyTorch eager port",
        f"{count['batch']}",
        f"{count['flops_per_step'] / 1e9:.1f}",
        f"{kinds.get('convolution', 0) / 1e9:.1f} / "
        f"{kinds.get('matmul', 0) / 1e9:.1f} / {other / 1e9:.2f}",
        f"{1e3 * timed['median_step_seconds']:.0f} ms",
        f"{timed['gflops_per_second']:.0f}",
        (
            f"{pct(timed['fraction_of_bfloat16_amx_peak'])} of the bfloat16 (AMX)"
            if "fraction_of_bfloat16_amx_peak" in timed
            else pct(timed.get("fraction_of_float32_peak"))
        ),
        (
            f"{check['tensorflow_profiler'] / 1e9:.2f} / {check['ours'] / 1e9:.2f}"
            if check and keras and profiler_check
            else ""
        ),
    ]


def _peak(peak):
    """How the float32 (and bfloat16 AMX) peak follows from the machine."""
    clock = f"{peak['ghz']:.2f} GHz"
    derived = (
        f"Peak: {peak['float32_derivation'].replace('clock', clock)}"
        f" = **{peak['float32_gflops']:.0f} GFLOP/s** float32"
    )
    if peak.get("bfloat16_amx_gflops"):
        derived += (
            f"; bfloat16 on AMX: {peak['cores']} cores x {clock} x "
            f"{peak['bfloat16_amx_flops_per_cycle_per_core']} FLOPs per cycle = "
            f"{peak['bfloat16_amx_gflops']:.0f} GFLOP/s"
        )
    return derived + "."


def _flops(result):
    """FLOPs per training step and what the step achieves against the peak."""
    rows = []
    for key, (label, _) in MODELS.items():
        count = result["flops"].get(key)
        if not count:
            continue
        for setting in ("keras", "keras_mixed_bfloat16", "torch_eager"):
            timed = result["results"].get(f"{setting}/{key}", {})
            if "gflops_per_second" in timed:
                row_label = label + dict(BF16_SETTINGS).get(setting, "")
                rows.append(
                    _flops_row(
                        row_label,
                        count,
                        timed,
                        keras=setting != "torch_eager",
                        profiler_check=setting == "keras",
                    )
                )
    header = [
        "training step (float32 unless named)",
        "batch",
        "GFLOP per step",
        "convolutions / matmuls / other (GFLOP)",
        "step",
        "GFLOP/s",
        "of the float32 peak (unless named)",
        "TensorFlow's profiler / ours, forward convolutions and matmuls (GFLOP)",
    ]
    return paragraphs(table(header, rows), _peak(result["peak"]))


speed_training = sourced(TRAINING_FILES[0], machine=cpu)(_training)
speed_flops = sourced(TRAINING_FILES[0], machine=cpu)(_flops)
speed_training_avx2 = sourced(TRAINING_FILES[1], machine=cpu)(_training)
speed_flops_avx2 = sourced(TRAINING_FILES[1], machine=cpu)(_flops)


def _attempts_machine(result):
    """The file's machine; attempts measured on another name theirs."""
    others = any("hardware" in a for a in result["attempts"])
    return cpu(result) + (", unless the row names another" if others else "")


@sourced("speed_attempts.json", machine=_attempts_machine)
def speed_attempts(result):
    """What was tried for speed, with its measured effect (an attempt
    measured on another machine than the file's records its `hardware`,
    `cpu_flags` and `date`, and its row says so)."""
    rows = []
    for a in result["attempts"]:
        effect = a["effect"]
        if "hardware" in a:
            effect = f"On {cpu(a)}, {a['date']}: {effect}"
        rows.append([a["area"], a["what"], effect, "yes" if a["adopted"] else "no"])
    header = ["where", "what was tried", "measured effect", "kept"]
    return table(header, rows)


def _entry_machine(result, entry):
    """The machine a model's entry was timed on (entries written before
    they recorded it were timed on the file's)."""
    return cpu(entry if "hardware" in entry else result)


def _vs_commit_machines(result):
    """The one machine of all entries, or each model's with its date."""
    entries = result["models"]
    machines = {_entry_machine(result, e) for e in entries.values()}
    if len(machines) == 1:
        return machines.pop()
    return "per model: " + "; ".join(
        f"{MODELS.get(name, (name,))[0]} on {_entry_machine(result, e)}, "
        f"{e.get('date', result['date'])}"
        for name, e in entries.items()
    )


@sourced("speed_vs_commit.json", machine=_vs_commit_machines)
def speed_vs_commit(result):
    """`benchmarks/speed_vs_commit.py`: a training step of the current code
    against an earlier commit's, in alternating processes."""
    rows = []
    for name, entry in result["models"].items():
        label = MODELS.get(name, (name,))[0]
        base = entry["baseline"]
        for key, median in entry["median_ms"].items():
            code, policy = key.split("/")
            if code == "baseline":
                what = f"`{base['commit'][:7]}` (baseline)"
            else:
                what = f"`{entry['current']['commit'][:7]}` (current)"
            losses = entry["losses"]["against_baseline_float32"].get(key)
            agree = "-"
            if losses:
                worst = max(v["max_rel"] for v in losses.values())
                steps = entry["losses"]["steps"]
                agree = f"within {worst:.1e} (relative), {steps} steps"
            rounds = " / ".join(num(r["ms"][key], 1) for r in entry["rounds"])
            rows.append(
                [
                    label,
                    what,
                    f"`{policy}`",
                    rounds,
                    num(median, 1),
                    f"{whole(entry['per_second'][key])} {entry['unit']}/s",
                    f"**{ratio(entry['ratio'][key])}**" if code != "baseline" else "-",
                    " / ".join(ratio(x) for x in entry["round_ratios"].get(key, []))
                    or "-",
                    agree,
                ]
            )
    header = [
        "model",
        "code",
        "dtype policy",
        "ms per step, by round",
        "median ms",
        "throughput",
        "speed-up",
        "speed-up by round",
        "losses against the baseline's float32",
    ]
    return table(header, rows)


GPU_SPEED = "gpu_speed.json"
SAMPLER_SHAPES = {
    "rnn_spn": "RNN-SPN shape",
    "cram": "CRAM shape",
    "large": "large",
}


def gpu_speed(result):
    """`benchmarks/gpu_speed.py`'s table: the sampler per shape and the
    RNN-SPN training step, ours on JAX against torch on the same device."""
    rows = []
    for name, row in result["sampler"].items():
        shape = row["shape"]
        h, w, c = shape["input"]
        oh, ow = shape["output"]
        rows.append(
            [
                f"sampler, {SAMPLER_SHAPES.get(name, name)}: {shape['batch']} x "
                f"{h}x{w}x{c} -> {oh}x{ow}, {shape['transform']}",
                f"{row['ms']['ours']:.3f} ms",
                f"{row['ms']['torch']:.3f} ms",
                f"**{ratio(row['ratio'])}**",
                f"{ratio(row['forward_ratio'])} / {ratio(row['backward_ratio'])}",
                f"{max(row['agreement'].values()):.1e}",
            ]
        )
    for name, row in result.get("training", {}).items():
        label = MODELS.get(name, (name,))[0]
        rows.append(
            [
                f"{label} training step, batch {row['batch']}",
                f"{row['ms']['ours']:.1f} ms",
                f"{row['ms']['torch']:.1f} ms",
                f"**{ratio(row['ratio'])}**",
                "",
                "",
            ]
        )
    header = [
        "what",
        "ours (JAX)",
        "torch",
        "ours / torch (time)",
        "forward / backward alone",
        "largest difference from torch (relative)",
    ]
    return paragraphs(
        table(header, rows),
        f"Device: {result.get('gpu') or 'no GPU'} ({result['hardware']}); "
        f"{result['protocol']}.",
    )


def speed_gpu(base):
    """The GPU section: the speed result files measured on a GPU machine."""
    parts = []
    if result_exists(GPU_SPEED):
        result = load(GPU_SPEED)
        if result.get("gpu") and not result.get("smoke"):
            parts.append(sourced(GPU_SPEED)(gpu_speed)(base))
    found = []
    for name in ("sampler_speed.json", "train_flops.json"):
        if not result_exists(name):
            continue
        result = load(name)
        runs = result["runs"] if isinstance(result.get("runs"), list) else [result]
        found += [(name, run) for run in runs if has_gpu(run)]
    if found:
        rows = [
            [
                f"`{name}`",
                cpu(run),
                (run.get("started_utc") or run.get("date", ""))[:10],
            ]
            for name, run in found
        ]
        parts.append(table(["result file", "machine", "date"], rows))
    if not parts:
        return (
            "Not measured yet: no speed result file was written on a machine "
            "with a GPU."
        )
    return paragraphs(*parts)


def _rnn_spn_ratio(result, setting):
    """RNN-SPN's throughput under `setting` over the PyTorch eager port's,
    from one run of the training benchmark (None where it lacks either)."""
    timed = result["results"]
    ours = timed.get(f"{setting}/rnn_spn", {}).get("per_second")
    torch_eager = timed.get("torch_eager/rnn_spn", {}).get("per_second")
    return ours / torch_eager if ours and torch_eager else None


def _machines(claims):
    """The machines of `claims` ((what, machine) pairs) for the README's
    line: "(all on M)", or each machine once with what it measured."""
    by_machine = {}
    for what, machine in claims:
        by_machine.setdefault(machine, []).append(what)
    if len(by_machine) == 1:
        return f" (all on {next(iter(by_machine))})"
    return (
        " (" + "; ".join(f"{' and '.join(w)}: {m}" for m, w in by_machine.items()) + ")"
    )


def speed_summary(base):
    """The README's line on speed: the default sampler against torch (the
    newest CPU run of the sampler benchmark) and the RNN-SPN training step
    against the PyTorch port, each with its machine."""
    from .sampler import newest_cpu_ratios

    run, (rnn_spn, cram) = newest_cpu_ratios()
    runs = [load(name) for name in TRAINING_FILES if result_exists(name)]
    # float32: the newest run that has the ratio; bfloat16: the newest run
    # with it on a CPU with AMX.
    newest = max(
        (r for r in runs if _rnn_spn_ratio(r, "keras")), key=lambda r: r["date"]
    )
    float32 = _rnn_spn_ratio(newest, "keras")
    with_amx = sorted(
        (
            r
            for r in runs
            if "amx_bf16" in r.get("cpu_flags", [])
            and _rnn_spn_ratio(r, "keras_mixed_bfloat16")
        ),
        key=lambda r: r["date"],
    )
    bf16 = _rnn_spn_ratio(with_amx[-1], "keras_mixed_bfloat16") if with_amx else None
    claims = [("sampler", cpu(run)), ("float32 training", cpu(newest))]
    if bf16 is not None:
        claims.append(("`mixed_bfloat16` training", cpu(with_amx[-1])))
    bf16 = f" and {ratio(bf16)} under `mixed_bfloat16` on AMX" if bf16 else ""
    machines = _machines(claims)
    training_machine = cpu(newest)
    inpainter = ""
    entry = None
    if result_exists("speed_vs_commit.json"):
        against = load("speed_vs_commit.json")
        entry = against["models"].get("cram_inpainter")
    if entry:
        ratios = entry["ratio"]
        parts = [f"{ratio(ratios['current/float32'])} (float32)"]
        if "current/mixed_bfloat16" in ratios:
            bf = ratios["current/mixed_bfloat16"]
            parts.append(f"{ratio(bf)} (`mixed_bfloat16`)")
        inpainter_machine = _entry_machine(against, entry)
        where = (
            "" if inpainter_machine == training_machine else f" on {inpainter_machine}"
        )
        inpainter = (
            "; the inpainter's training step is "
            + " and ".join(parts)
            + f" as fast as at commit `{entry['baseline']['commit'][:7]}`, before "
            "the fused batch norm and Adam ([against earlier code]"
            f"(docs/speed.md#against-earlier-code)){where}"
        )
    return (
        "* **Speed**: the default compiled kernel takes "
        f"{ratio(rnn_spn['layer_native'])} (RNN-SPN shape) and "
        f"{ratio(cram['layer_native'])} (CRAM shape) of torch's `grid_sample` "
        "time per call, "
        f"{ratio(rnn_spn['layer_native_x10_in_graph'])} and "
        f"{ratio(cram['layer_native_x10_in_graph'])} in graph; RNN-SPN "
        f"trains at {ratio(float32)} the PyTorch port's throughput "
        f"in float32{bf16}{machines}{inpainter}. [docs/speed.md](docs/speed.md) has "
        "every ratio."
    )
