"""The sampler tables: our affine sampler against torch's
`grid_sample(affine_grid(theta))`, run by run, the separable path's sweep,
and the candidates that were tried."""

from .cells import ms, num, paragraphs, ratio, table, utc_minute
from .sources import cpu, hardware, has_gpu, load, result_link, source, sourced

SHAPES = {
    "rnn_spn": "RNN-SPN: 64 x 100x100x1 -> 50x50, affine",
    "cram": "CRAM: 64 x 32x32x3 -> 16x16, attention",
}
# Every contender of a run, per call and then ten calls in one graph; the
# default (the compiled kernel) in bold.
CONTENDERS = {
    "layer_native_eager": "`SpatialTransformer`, compiled kernel (the default), "
    "called eagerly",
    "layer_native": "`SpatialTransformer`, compiled kernel (the default), per call",
    "fused_native": "`affine_sample`, compiled kernel, per call",
    "layer": "`SpatialTransformer`, `keras.ops` path, per call",
    "layer_eager": "`SpatialTransformer`, `keras.ops` path, called eagerly",
    "layer_xla": "`SpatialTransformer`, `keras.ops` path, XLA, per call",
    "fused": "`affine_sample`, `keras.ops` path, per call",
    "fused_xla": "`affine_sample`, `keras.ops` path, XLA, per call",
    "ops": "`bilinear_sample(affine_grid(...))`, `keras.ops` path, per call",
    "ops_xla": "`bilinear_sample(affine_grid(...))`, `keras.ops` path, XLA, per call",
    "layer_native_x10_in_graph": "`SpatialTransformer`, compiled kernel, in graph",
    "layer_x10_in_graph": "`SpatialTransformer`, `keras.ops` path, in graph",
}
DEFAULT = ("layer_native_eager", "layer_native", "layer_native_x10_in_graph")
ATTEMPTS = {
    "library": "the library: four leading-axis slices of the gathered corners, lerps",
    "unstack": "`ops.unstack` of the corners instead of four slices",
    "split": "`ops.split` instead of four slices",
    "reduction": "bilinear weights as an outer product (4, N), output as one weighted sum",
    "pairs": "the image as rows of horizontal pixel pairs, two row gathers",
}


def _torch_ms(run, shape):
    """torch's median time per call at ``shape`` in ``run``."""
    return run["shapes"][shape]["times_ms"]["torch"]["median"]


def _ratios(run, shape):
    """Each contender's time / torch's at ``shape`` in ``run``: per call,
    and in graph where the run timed that."""
    timed = run["shapes"][shape]
    graph = (timed.get("in_graph_x10") or {}).get("ratios_to_torch", {})
    return {**timed["ratio_to_torch"], **graph}


def _both(ratios, key):
    """The ratio of ``key`` in each run, 'first / second'."""
    return " / ".join(ratio(r[key]) for r in ratios)


def sampler_speed(base):
    """Per CPU (the newest first), its newest two runs, each cell 'first /
    second': runs of different CPUs are never side by side in one cell."""
    by_cpu = {}
    for run in load("sampler_speed.json")["runs"]:
        if "layer_native" in run["shapes"]["rnn_spn"]["ratio_to_torch"]:
            by_cpu.setdefault(hardware(run), []).append(run)
    newest_first = sorted(
        by_cpu.items(), key=lambda item: item[1][-1]["started_utc"], reverse=True
    )
    rows, dates = [], []
    for machine, runs in newest_first:
        runs = runs[-2:]
        times = " and ".join(utc_minute(r["started_utc"]) for r in runs)
        dates.append(f"{machine}: {times} UTC")
        for shape, label in SHAPES.items():
            ratios = [_ratios(r, shape) for r in runs]
            rows.append(
                [
                    label,
                    machine,
                    " / ".join(num(_torch_ms(r, shape)) for r in runs) + " ms",
                    f"**{_both(ratios, 'layer_native')}**",
                    f"**{_both(ratios, 'layer_native_x10_in_graph')}**",
                    _both(ratios, "layer"),
                    _both(ratios, "layer_xla"),
                    _both(ratios, "layer_x10_in_graph"),
                ]
            )
    header = [
        "shape",
        "CPU",
        "torch per call",
        "layer, compiled kernel",
        "compiled kernel, in graph",
        "layer, `keras.ops`",
        "`keras.ops`, XLA",
        "`keras.ops`, in graph",
    ]
    newest = newest_first[0][1][-1]
    return paragraphs(
        table(header, rows),
        "Ratios are our time / torch's (`grid_sample(affine_grid(theta))`) in the "
        "same run, forward + both gradients, float32; each cell gives the two "
        "newest runs on that CPU (one where it has one), each timing the code of "
        "its day. "
        + source(
            "sampler_speed.json",
            newest,
            base,
            date="; ".join(dates),
            machine=lambda _: "the CPU of each row",
        ),
    )


def sampler_runs(base):
    """Every run in the file: the spread between runs is part of the result."""
    rows = []
    for run in load("sampler_speed.json")["runs"]:
        row = [utc_minute(run["started_utc"]), hardware(run)]
        for shape in SHAPES:
            ratios = _ratios(run, shape)
            row += [
                ms(_torch_ms(run, shape)),
                ratio(ratios["layer"]),
                ratio(ratios.get("layer_x10_in_graph")),
                ratio(ratios.get("layer_native")),
                ratio(ratios.get("layer_native_x10_in_graph")),
            ]
        rows.append(row)
    header = ["started (UTC)", "CPU"]
    for shape in ("RNN-SPN", "CRAM"):
        header += [
            f"{shape}: torch",
            f"{shape}: `keras.ops`",
            f"{shape}: `keras.ops` in graph",
            f"{shape}: compiled",
            f"{shape}: compiled in graph",
        ]
    return paragraphs(
        table(header, rows),
        "Each run measured the code of its date; '-' where the run had no such "
        f"contender. Source: {result_link('sampler_speed.json', base, full=True)}, "
        "written by `python benchmarks/sampler.py --append --output "
        "benchmarks/results/sampler_speed.json`; TensorFlow 2.21.0, torch 2.13.0 (CPU).",
    )


def separable_sweep(base):
    run = load("sampler_speed.json")["runs"][0]
    rows = []
    for item in run["separable_sweep"]:
        b, h, w, c, oh, ow = item["shape"]
        rows.append(
            [
                f"{b} x {h}x{w}x{c} -> {oh}x{ow}",
                f"{item['cost_per_output']:.0f}",
                ms(item["separable_ms"]),
                ms(item["gather_ms"]),
            ]
        )
    header = ["B x H x W x C -> h x w", "cost per output", "separable", "gather"]
    return paragraphs(
        table(header, rows),
        source("sampler_speed.json", run, base, date=run["started_utc"][:10]),
    )


@sourced("sampler_attempts.json")
def sampler_attempts(result):
    shapes = result["shapes"]
    rows = []
    for key, label in ATTEMPTS.items():
        if key == "library":
            cells = [ms(shapes[s]["times_ms"][key]["median"]) for s in SHAPES]
        else:
            cells = [ratio(shapes[s]["ratio_to_library"][key]) for s in SHAPES]
        rows.append([f"`{key}`", label, *cells])
    header = [
        "candidate",
        "what changed",
        "RNN-SPN shape (64 x 100x100x1 -> 50x50)",
        "CRAM images (64 x 32x32x3 -> 16x16)",
    ]
    return table(header, rows)


@sourced("fused_crop_attempt.json")
def fused_crop(result):
    t = result["times_ms"]
    agree = result["agreement_with_library"]
    rows = [
        [
            "library (separable matmuls)",
            ms(t["library"]["median"]),
            "1.00x",
            ms(t["library_forward"]["median"]),
            "1.00x",
            "exact",
        ],
        [
            "`crop_and_resize`, exact gradients",
            ms(t["fused_exact"]["median"]),
            ratio(t["fused_exact"]["ratio_to_library"]),
            ms(t["fused_exact_forward"]["median"]),
            ratio(t["fused_exact_forward"]["ratio_to_library"]),
            f"exact ({agree['fused_exact/pixel_centres']['grad_params']:.0e})",
        ],
        [
            "`crop_and_resize`, TensorFlow's own gradients",
            ms(t["fused_tf_gradient"]["median"]),
            ratio(t["fused_tf_gradient"]["ratio_to_library"]),
            "(the same forward)",
            "",
            f"**wrong** (relative error {agree['fused_tf_gradient/pixel_centres']['grad_params']:.1f})",
        ],
    ]
    header = [
        "path",
        "fwd + bwd",
        "ratio",
        "forward alone",
        "ratio",
        "params gradient at pixel centres",
    ]
    return table(header, rows)


def newest_cpu_ratios():
    """The newest CPU run of the sampler benchmark, and its ratios to torch
    at each shape (in SHAPES' order)."""
    run = [r for r in load("sampler_speed.json")["runs"] if not has_gpu(r)][-1]
    return run, [_ratios(run, shape) for shape in SHAPES]


def speed_sampler(base):
    """The newest sampler run: every contender against torch, per call and
    in graph, at both shapes."""
    run, ratios = newest_cpu_ratios()
    rows = [
        [
            "torch `grid_sample(affine_grid(theta))` (the reference), per call",
            *[ms(_torch_ms(run, shape)) for shape in SHAPES],
        ]
    ]
    for key, label in CONTENDERS.items():
        if all(key in r for r in ratios):
            cells = [ratio(r[key]) for r in ratios]
            if key in DEFAULT:
                cells = [f"**{c}**" for c in cells]
            rows.append([label, *cells])
    header = ["contender (time / torch's)", *SHAPES.values()]
    return paragraphs(
        table(header, rows),
        "One run, every ratio against torch measured in it: forward + both "
        "gradients, float32, median over alternating rounds; in graph: ten calls "
        "in one `tf.function` against ten torch calls. "
        + source(
            "sampler_speed.json",
            run,
            base,
            date=utc_minute(run["started_utc"]) + " UTC",
            machine=cpu,
        ),
    )
