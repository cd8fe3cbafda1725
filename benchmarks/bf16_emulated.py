#!/usr/bin/env python
"""`mixed_bfloat16` on a CPU without bfloat16 instructions.

Times training steps under float32 and Keras' `mixed_bfloat16` (as
`train_speed.py --bf16` does, each setting in a fresh process) with oneDNN
free to use every instruction set of this CPU, then limited to an older one
(`ONEDNN_MAX_CPU_ISA`, by default `AVX512_CORE_VNNI`: AVX-512 without
AVX512_BF16 and AMX, as on CPUs before bfloat16 instructions). On a CPU
with AVX512_BF16 or AMX this measures, on one machine and in one run, what
`mixed_bfloat16` costs where bfloat16 has to be emulated, against what it
gains where it does not.

    python benchmarks/bf16_emulated.py --output benchmarks/results/bf16_emulated.json

Run it on an otherwise idle machine; the file records how busy the CPUs
were before each measurement.
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cram_keras.platform_info import cpu_flags, describe  # noqa: E402
from cram_keras.studies.driver import command_line  # noqa: E402

MODELS = ("rnn_spn", "cram_inpainter")


def measure(isa, models, steps, warmup, threads):
    """``{model: {"float32": per_second, "mixed_bfloat16": ..., ...}}`` of one
    `train_speed.py` process with ``ONEDNN_MAX_CPU_ISA=isa``."""
    only = [f"{kind}/{m}" for m in models for kind in ("keras", "keras_mixed_bfloat16")]
    with tempfile.TemporaryDirectory() as tmp:
        output = pathlib.Path(tmp) / "speed.json"
        command = [
            sys.executable, str(HERE / "train_speed.py"), "--bf16",
            "--no-torch-compile", "--steps", str(steps), "--warmup", str(warmup),
            "--threads", str(threads), "--only", *only, "--output", str(output),
        ]  # fmt: skip
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa)
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        result = json.loads(output.read_text())
    rows = {}
    for model in models:
        f32 = result["results"][f"keras/{model}"]
        bf16 = result["results"][f"keras_mixed_bfloat16/{model}"]
        rows[model] = {
            "unit": f32["unit"],
            "float32": f32["per_second"],
            "mixed_bfloat16": bf16["per_second"],
            "mixed_bfloat16_over_float32": bf16["per_second"] / f32["per_second"],
            "cpu_busy_before": [f32["cpu_busy_before"], bf16["cpu_busy_before"]],
        }
    return rows, result["versions"]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--isa",
        action="append",
        default=None,
        metavar="ISA",
        help="an ONEDNN_MAX_CPU_ISA to limit oneDNN to (repeatable; default: "
        "ALL, then AVX512_CORE_VNNI)",
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    isas = args.isa or ["ALL", "AVX512_CORE_VNNI"]
    runs, versions = {}, None
    for isa in isas:
        print(f"ONEDNN_MAX_CPU_ISA={isa}", flush=True)
        runs[isa], versions = measure(
            isa, args.models, args.steps, args.warmup, args.threads
        )
        for model, row in runs[isa].items():
            print(
                f"  {model}: float32 {row['float32']:.1f}, mixed_bfloat16 "
                f"{row['mixed_bfloat16']:.1f} {row['unit']} "
                f"({row['mixed_bfloat16_over_float32']:.2f}x)",
                flush=True,
            )
    result = {
        "command": command_line("benchmarks/bf16_emulated.py", sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "hardware": describe(),
        "cpu_flags": cpu_flags(),
        "versions": versions,
        "threads": args.threads,
        "protocol": f"median of {args.steps} steps after {args.warmup} untimed, "
        "one train_speed.py process per ISA limit",
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
