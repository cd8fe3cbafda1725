"""The `<!-- render:NAME -->` blocks of README.md and docs/*.md: which
renderer writes each, rewriting them in place, and `--check`."""

import argparse
import difflib
import re
import sys

from . import cram_cls, inpainting, overview, rnn_spn, sampler, sources, speed

DESCRIPTION = (
    "Render the results tables of README.md and docs/*.md from the result files."
)

BLOCK = re.compile(
    r"(<!-- render:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /render:(?P=name) -->)",
    re.S,
)

RENDERERS = {
    "commands": overview.commands,
    "configurations": overview.configurations,
    "headline": overview.headline,
    "rnn_spn_table1": rnn_spn.rnn_spn_table1,
    "rnn_spn_gpu": rnn_spn.rnn_spn_gpu,
    "rnn_spn_cpu": rnn_spn.rnn_spn_cpu,
    "rnn_spn_tuned": rnn_spn.rnn_spn_tuned,
    "rnn_spn_zoom": rnn_spn.rnn_spn_zoom,
    "rnn_spn_search_cpu": rnn_spn.rnn_spn_search_cpu,
    "rnn_spn_init": rnn_spn.rnn_spn_init,
    "rnn_spn_speed": speed.rnn_spn_speed,
    "train_speed": speed.train_speed,
    "bf16": speed.bf16,
    "bf16_emulated": speed.bf16_emulated,
    "backend_speed": speed.backend_speed,
    "bf16_paper": speed.bf16_paper,
    "inpaint_bf16": inpainting.inpaint_bf16,
    "cram_cls": cram_cls.cram_cls,
    "cram_cls_curves": cram_cls.cram_cls_curves,
    "cram_cls_full": cram_cls.cram_cls_full,
    "inpaint_study": inpainting.inpaint_study,
    "inpaint_svhn": inpainting.inpaint_svhn,
    "inpaint_mnist32": inpainting.inpaint_mnist32,
    "inpaint_full": inpainting.inpaint_full,
    "inpaint_converge": inpainting.inpaint_converge,
    "inpaint_tune": inpainting.inpaint_tune,
    "sampler_speed": sampler.sampler_speed,
    "sampler_runs": sampler.sampler_runs,
    "separable_sweep": sampler.separable_sweep,
    "sampler_attempts": sampler.sampler_attempts,
    "fused_crop": sampler.fused_crop,
    "profile_steps": speed.profile_steps,
    "wall_times": overview.wall_times,
    "shipped_weights": rnn_spn.shipped_weights,
    "speed_sampler": sampler.speed_sampler,
    "speed_training": speed.speed_training,
    "speed_flops": speed.speed_flops,
    "speed_training_avx2": speed.speed_training_avx2,
    "speed_flops_avx2": speed.speed_flops_avx2,
    "speed_attempts": speed.speed_attempts,
    "speed_vs_commit": speed.speed_vs_commit,
    "speed_gpu": speed.speed_gpu,
    "speed_summary": speed.speed_summary,
}


class RenderError(Exception):
    """A block that cannot be rendered (unknown name, or a result file that
    lacks what its renderer reads)."""


def document_paths():
    paths = [sources.REPO / "README.md"] + sorted((sources.REPO / "docs").glob("*.md"))
    return [p for p in paths if p.is_file()]


def render_text(text, base):
    """Returns (new text, names of the blocks found)."""
    names = []

    def replace(match):
        name = match.group("name")
        if name not in RENDERERS:
            raise RenderError(
                f"unknown render block {name!r} (known: {', '.join(RENDERERS)})"
            )
        names.append(name)
        try:
            body = RENDERERS[name](base).rstrip()
        except (KeyError, IndexError, TypeError, ValueError, OSError) as error:
            raise RenderError(
                f"block {name!r}: the result files do not hold what it shows "
                f"({type(error).__name__}: {error}); update its function in "
                f"tools/render/{RENDERERS[name].__module__.rpartition('.')[2]}.py"
            ) from error
        return f"{match.group(1)}{body}\n{match.group(4)}"

    return BLOCK.sub(replace, text), names


def main(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if any block differs from the result files",
    )
    parser.add_argument("--list", action="store_true", help="print the blocks per file")
    args = parser.parse_args(argv)
    repo = sources.REPO
    stale = []
    for path in document_paths():
        text = path.read_text(encoding="utf-8")
        base = path.parent.relative_to(repo)
        opened = re.findall(r"<!-- render:([a-z0-9_]+) -->", text)
        try:
            new, names = render_text(text, base)
        except RenderError as error:
            print(f"{path.relative_to(repo)}: {error}", file=sys.stderr)
            return 2
        if len(names) != len(opened):
            unclosed = sorted(set(opened) - set(names))
            print(
                f"{path.relative_to(repo)}: render block(s) without a closing marker: "
                f"{', '.join(unclosed)}",
                file=sys.stderr,
            )
            return 2
        if args.list:
            for name in names:
                print(f"{path.relative_to(repo)}: {name}")
        if new != text:
            stale.append(path)
            if args.check:
                diff = difflib.unified_diff(
                    text.splitlines(),
                    new.splitlines(),
                    str(path.relative_to(repo)),
                    "rendered from benchmarks/results",
                    lineterm="",
                    n=1,
                )
                print("\n".join(list(diff)[:60]))
            else:
                path.write_text(new, encoding="utf-8")
                print(f"rendered {path.relative_to(repo)}")
    if args.check and stale:
        print(
            f"\n{len(stale)} file(s) differ from benchmarks/results; run "
            "`python tools/render_docs.py`.",
            file=sys.stderr,
        )
        return 1
    return 0
