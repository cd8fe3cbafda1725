"""The renderers behind `tools/render_docs.py`, one module a job.

- `cells`: table assembly and the formatting of numbers, times and dates;
- `sources`: the result files and where each came from (links, hardware,
  versions, dates, commands, the source line under a table);
- `rnn_spn`, `cram_cls`, `inpainting`, `speed`, `sampler`: the tables of
  each results area; `overview`: those of the README and the reproducing page;
- `blocks`: which renderer writes each `<!-- render:NAME -->` block, and the
  rewriting and `--check` of the documents.
"""
