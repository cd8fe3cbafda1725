#!/usr/bin/env python
"""Render the results tables of README.md and docs/*.md from the result files.

Every table of measured numbers in the documentation sits between two
markers and is written by this script from `benchmarks/results/*.json`:

    <!-- render:NAME -->
    ... generated, do not edit by hand ...
    <!-- /render:NAME -->

    python tools/render_docs.py            # rewrite every block in place
    python tools/render_docs.py --check    # exit 1 if a block differs
    python tools/render_docs.py --list     # the block names and their files

One block, `shipped_weights`, reads the manifests of the trained models
shipped in `cram_keras/weights/` (`NAME.json`, written by
`tools/ship_weights.py`) instead.

Each results block ends with a source line: the result file, the named
configuration it came from (`configs/`) with the command that runs it (or,
for a speed benchmark, the command that wrote it), the hardware, the
backend and library versions, and the date. Commands are shown as a user runs them: local data folders become
`MNIST_DIR` (the folder with the four official MNIST IDX files), the
1,083-image SVHN subset is the copy bundled in the package, and options
that only named where a run directory or a note went are left out.

The renderers are the package `tools/render/` (one module a results area);
standard library only (no TensorFlow), so the docs test runs it quickly.
"""

import pathlib
import sys

# tools/ is not a package: its package `render` is found from this folder,
# whether this file runs as a script or is loaded by a test.
TOOLS = str(pathlib.Path(__file__).resolve().parent)
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

from render.blocks import RENDERERS, main  # noqa: E402

__all__ = ["RENDERERS", "main"]

if __name__ == "__main__":
    sys.exit(main())
