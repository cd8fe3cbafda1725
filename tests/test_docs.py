"""The user-facing documents: README.md, docs/*.md, CHANGELOG.md and
benchmarks/README.md.

They cite only files that exist (links, anchors, and repository paths in
the text), hold no machine-local paths, issue numbers or references to a
design file outside the repository, their results tables are those that
`tools/render_docs.py` renders from `benchmarks/results/`, the README stays
a front door, and its Python example runs. Only the example imports
TensorFlow (in a subprocess).
"""

import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [
    REPO / "README.md",
    REPO / "CHANGELOG.md",
    REPO / "benchmarks" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
README_MAX_LINES = 200

# A path inside the repository, as the documents write them in text or code.
REPO_PATH = re.compile(
    r"(?<![\w/.~-])((?:cram_keras|benchmarks|tests|assets|docs|tools|\.ci)/[\w./*-]*"
    r"|train_\w+\.py|pyproject\.toml|requirements\.txt|CHANGELOG\.md)"
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FORBIDDEN = {
    "a machine-local path": re.compile(r"/work/|/root/|/home/|\.\./shared"),
    "a design file outside the repository": re.compile(r"DESIGN\.md"),
    "an issue reference": re.compile(r"\bissues? \d+|(?<![\w/-])#\d+", re.I),
    "a process narrative": re.compile(r"SIGSTOP|\bsession \d+|\bissue-\d+", re.I),
}


def _ids(paths):
    return [str(p.relative_to(REPO)) for p in paths]


def _slug(heading):
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _render_docs():
    """tools/render_docs.py as a module (it makes its package `render`, next
    to it, importable)."""
    spec = importlib.util.spec_from_file_location(
        "render_docs", REPO / "tools" / "render_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", DOCUMENTS, ids=_ids(DOCUMENTS))
def test_links_point_to_existing_files_and_headings(path):
    text = path.read_text(encoding="utf-8")
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            missing.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            missing.append(f"{target} (no such heading)")
    assert not missing, f"{path.name} links to what does not exist: {missing}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=_ids(DOCUMENTS))
def test_cited_repository_paths_exist(path):
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"https?://\S+", "", text)
    missing = []
    for match in REPO_PATH.finditer(text):
        cited = match.group(1).rstrip(".,")
        # From the repository root, or from the document's folder (a
        # benchmark script named in benchmarks/README.md).
        found = [
            hit
            for base in (REPO, path.parent)
            for hit in (
                base.glob(cited) if any(c in cited for c in "*?") else [base / cited]
            )
            if hit.exists()
        ]
        if not found:
            missing.append(cited)
    assert not missing, (
        f"{path.name} cites files that do not exist: {sorted(set(missing))}"
    )


# What the product ships besides the documents: code, scripts, result files.
PRODUCT = sorted(
    [
        *(REPO / "cram_keras").rglob("*.py"),
        *(REPO / "cram_keras").rglob("*.cc"),
        *(REPO / "benchmarks").glob("*.py"),
        *(REPO / "benchmarks").glob("*.sh"),
        *(REPO / "benchmarks" / "results").glob("*.json"),
        *(REPO / "tools").rglob("*.py"),
        *REPO.glob("train_*.py"),
    ]
)
# The renderer names the patterns it removes from recorded commands.
PRODUCT = [p for p in PRODUCT if p != REPO / "tools" / "render" / "sources.py"]


@pytest.mark.parametrize("path", DOCUMENTS + PRODUCT, ids=_ids(DOCUMENTS + PRODUCT))
def test_no_machine_paths_issue_numbers_or_outside_design_file(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    found = [
        f"line {number}: {what}: {line.strip()[:120]}"
        for number, line in enumerate(lines, 1)
        for what, pattern in FORBIDDEN.items()
        if pattern.search(line)
    ]
    assert not found, f"{path.name}:\n" + "\n".join(found)


def test_the_results_tables_are_rendered_from_the_result_files(capsys):
    code = _render_docs().main(["--check"])
    out, err = capsys.readouterr()
    assert code == 0, (
        "a results table differs from benchmarks/results (run "
        f"`python tools/render_docs.py`):\n{out}{err}"
    )


def test_the_render_markers_pair_up_and_name_known_blocks():
    render_docs = _render_docs()
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        opened = re.findall(r"<!-- render:([a-z0-9_]+) -->", text)
        closed = re.findall(r"<!-- /render:([a-z0-9_]+) -->", text)
        assert opened == closed, path.name
        assert set(opened) <= set(render_docs.RENDERERS), path.name
    assert "headline" in re.findall(
        r"<!-- render:([a-z0-9_]+) -->", (REPO / "README.md").read_text()
    )


def test_the_render_check_fails_on_a_hand_edited_table(tmp_path, monkeypatch):
    render_docs = _render_docs()
    sources = importlib.import_module("render.sources")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    edited = re.sub(r"\| 2\.14 % \|", "| 1.50 % |", readme, count=1)
    assert edited != readme
    (tmp_path / "README.md").write_text(edited, encoding="utf-8")
    (tmp_path / "docs").mkdir()
    shutil.copytree(
        REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results"
    )
    monkeypatch.setattr(sources, "REPO", tmp_path)
    monkeypatch.setattr(sources, "RESULTS", tmp_path / "benchmarks" / "results")
    assert render_docs.main(["--check"]) == 1
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == edited
    assert render_docs.main([]) == 0
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == readme


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)
    text = "\n".join(lines)
    # What CI installs and runs (.ci/run runs the README's test command).
    assert "\npython -m pytest\n" in text
    assert "pip install -r requirements.txt" in text
    assert 'pip install -e ".[test]"' in text
    assert "python train_inpaint.py --epochs 50" in text
    assert "@article{sonderby2015recurrent" in text and "@article{chung2018cram" in text


# A measured value in prose: a ratio (1.5x), a percentage or decibels.
MEASURED = re.compile(r"\b\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?\s?(?:x|%|dB)(?![\w])")


def test_the_readme_types_no_measured_value_by_hand():
    """Every result in the README comes from a render block: outside the
    blocks and the code, no ratio, percentage or decibel value."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"<!-- render:(\w+) -->.*?<!-- /render:\1 -->", "", text, flags=re.S)
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)
    assert MEASURED.findall(prose) == []
    # The pattern does find such a value (so the assertion above can fail).
    assert MEASURED.findall("takes 1.2-1.8x the time, 2.31 % error, 14.2 dB") == [
        "1.2-1.8x",
        "2.31 %",
        "14.2 dB",
    ]


# Values in the docs' prose that are settings, thresholds or formulas, not
# measurements (each document, each value as it appears).
PROSE_SETTINGS = {
    "docs/deviations.md": ["4x", "6.25 %"],  # downsampling; the hole's share
    "docs/reproducing.md": ["10 %", "10 %", "90 %"],  # stage gain; the split
    "docs/results.md": ["20 %"],  # the threshold of a table column
    # The --patience validation split (flag table and its section); the
    # test and tuning splits.
    "docs/running.md": ["10 %", "20 %", "10 %", "10 %"],
    "CHANGELOG.md": ["10 %"],  # the --patience validation split
    "docs/speed.md": ["1.3x", "2 x", "2 x"],  # a run's idle test; FLOP formulas
}


def test_the_docs_prose_types_no_measured_value_by_hand():
    """Measured values in docs/, benchmarks/README.md and the changelog come
    from render blocks; prose holds only the settings listed above."""
    found = {}
    for path in [
        *sorted((REPO / "docs").glob("*.md")),
        REPO / "benchmarks" / "README.md",
        REPO / "CHANGELOG.md",
    ]:
        text = path.read_text(encoding="utf-8")
        prose = re.sub(
            r"<!-- render:(\w+) -->.*?<!-- /render:\1 -->", "", text, flags=re.S
        )
        prose = re.sub(r"```.*?```", "", prose, flags=re.S)
        values = MEASURED.findall(prose)
        if values:
            found[path.relative_to(REPO).as_posix()] = values
    assert found == PROSE_SETTINGS


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README has no Python example"
    code = "\n".join(blocks)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each `print(...)  # expected` line of the example prints what it says.
    for expected in re.findall(r"^print\(.*\)\s+#\s*(.+)$", code, re.M):
        assert expected.strip() in proc.stdout, (expected, proc.stdout[-2000:])


@pytest.fixture
def results_copy(tmp_path, monkeypatch):
    """The renderers read a copy of the result files and configurations in
    ``tmp_path`` (which a test may change); the copy's results folder."""
    _render_docs()
    sources = importlib.import_module("render.sources")
    results = tmp_path / "benchmarks" / "results"
    shutil.copytree(REPO / "benchmarks" / "results", results)
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.setattr(sources, "REPO", tmp_path)
    monkeypatch.setattr(sources, "RESULTS", results)
    return results


def test_table1_gives_each_seed_and_the_mean_of_finished_ones(results_copy):
    """A row's run of another seed (``rnn_spn_seed1``) appears beside the
    row's seed 0, the mean is over the seeds whose runs have finished, and
    the headline names the seed in its command."""
    rnn_spn = importlib.import_module("render.rnn_spn")
    overview = importlib.import_module("render.overview")
    results = results_copy
    cpu = json.loads((results / "rnn_spn_paper.json").read_text())
    gpu = json.loads((results / "rnn_spn_paper_gpu.json").read_text())
    seed0 = gpu["models"]["rnn_spn"]["test_per_digit_error_at_best"]
    run = dict(cpu["models"]["rnn_spn_d3"], seed=1, downsample=2.0)
    run.update(test_per_digit_error_at_best=0.0180, finished=True, stopped_early=True)
    cpu["models"]["rnn_spn_seed1"] = run
    (results / "rnn_spn_paper.json").write_text(json.dumps(cpu))
    text = rnn_spn.rnn_spn_table1("docs")
    row = next(line for line in text.splitlines() if "RNN-SPN, d = 2 |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{100 * seed0:.2f} % (seed 0)"
    # The unfinished CPU run of seed 0 is listed, but only finished runs count.
    assert "1.80 % (seed 1)" in cells[3]
    assert cells[4] == f"{(100 * seed0 + 1.80) / 2:.2f} % (seeds 0, 1)"
    run["date"] = "2026-11-30"  # the date of the report that wrote the row
    (results / "rnn_spn_paper.json").write_text(json.dumps(cpu))
    headline = overview.headline("")
    line = next(row for row in headline.splitlines() if "d = 2, seed 1" in row)
    assert "`--model rnn_spn --seed 1`" in line and "| 1.80 % |" in line
    assert "TensorFlow, 2026-11-30 |" in line
    # A run still training is on the results page only, not in the README.
    run.update(finished=False, stopped_early=False, epochs_done=7)
    (results / "rnn_spn_paper.json").write_text(json.dumps(cpu))
    assert "(seed 1) (after 7 epochs; not finished)" in rnn_spn.rnn_spn_table1("docs")
    assert "d = 2, seed 1" not in overview.headline("")


def test_table1_gives_the_rows_trained_with_their_chosen_dropout(results_copy):
    """The rows of the dropout chosen on the validation set get a column of
    their own, with their setting, beside the dropout 0 runs, a block of
    their runs, and headline rows also while they train."""
    rnn_spn = importlib.import_module("render.rnn_spn")
    overview = importlib.import_module("render.overview")
    results = results_copy
    tuned = results / rnn_spn.TUNED
    tuned.unlink(missing_ok=True)
    assert "dropout chosen" not in rnn_spn.rnn_spn_table1("docs")
    assert "dropout chosen" not in overview.headline("")
    cpu = json.loads((results / "rnn_spn_paper.json").read_text())
    run = dict(
        cpu["models"]["rnn_spn_d3"],
        downsample=2.0,
        dropout=0.2,
        dropout_placement="paper",
        finished=False,
        stopped_early=False,
        epochs_done=7,
        best_epoch=6,
        paper_per_digit_error=0.015,
        test_per_digit_error_at_best=0.0251,
    )
    seed1 = dict(run, seed=1, finished=True, stopped_early=True, epochs_done=150)
    seed1["test_per_digit_error_at_best"] = 0.0149
    tuned.write_text(
        json.dumps(dict(cpu, models={"rnn_spn": run, "rnn_spn_seed1": seed1}))
    )
    text = rnn_spn.rnn_spn_table1("docs")
    assert "| ours: dropout chosen on the validation set |" in text
    row = next(line for line in text.splitlines() if "RNN-SPN, d = 2 |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == (
        "2.51 % (dropout 0.2 at the paper's positions) (seed 0) (after 7 epochs; "
        "not finished); 1.49 % (dropout 0.2 at the paper's positions) (seed 1)"
    )
    # The dropout 0 runs keep their own mean, without the tuned runs.
    assert "1.49" not in cells[4]
    d3 = next(line for line in text.splitlines() if "RNN-SPN, d = 3 |" in line)
    assert d3.rstrip().endswith("| not run |")
    headline = [
        row
        for row in overview.headline("").splitlines()
        if "dropout chosen on validation" in row
    ]
    assert len(headline) == 2
    assert "| 1.5 % | 2.51 % |" in headline[0]
    assert "in progress: epoch 7 of up to 300, best 6" in headline[0]
    assert "`--config table1_tuned:rnn_spn`" in headline[0]
    assert "`--config table1_tuned:rnn_spn --seed 1`" in headline[1]
    assert "early-stopped at epoch 150" in headline[1]
    block = rnn_spn.rnn_spn_tuned("docs")
    assert "| dropout 0.2 at the paper's positions |" in block
    assert f"benchmarks/results/{rnn_spn.TUNED}`" in block


def test_the_zoom_verdict_compares_finished_runs_of_each_d(results_copy):
    """Whether the mean window area falls as d grows: over finished runs
    only, a factor's runs averaged, each model on its own."""
    rnn_spn = importlib.import_module("render.rnn_spn")
    results = results_copy
    cpu = json.loads((results / "rnn_spn_paper.json").read_text())
    d3 = cpu["models"]["rnn_spn_d3"]
    d3_means = []
    for name in ("rnn_spn_paper.json", "rnn_spn_paper_bf16.json"):
        runs = json.loads((results / name).read_text())["models"]
        areas = runs["rnn_spn_d3"]["window_area_per_step"]
        d3_means.append(sum(areas) / len(areas))
    d3_mean = sum(d3_means) / 2

    def verdict(models):
        (results / "rnn_spn_paper.json").write_text(
            json.dumps(dict(cpu, models=models))
        )
        return rnn_spn.rnn_spn_zoom("docs").split("\n\n")[1:]

    training = dict(d3, finished=False, stopped_early=False, epochs_done=9)
    d2 = dict(training, downsample=2.0, window_area_per_step=[0.2, 0.3, 0.4])
    text = verdict({"rnn_spn_d3": d3, "rnn_spn_seed1": d2})
    assert text[0].startswith("RNN-SPN: only d = 3 has a finished run")
    assert f"d = 3: {d3_mean:.2f}" in text[0]
    d2.update(finished=True, stopped_early=True, window_area_per_step=[0.1, 0.2])
    text = verdict({"rnn_spn_d3": d3, "rnn_spn_seed1": d2})
    assert f"(d = 2: 0.15; d = 3: {d3_mean:.2f})" in text[0]
    assert "does not fall" in text[0]  # d = 2's windows are the smaller
    d2["window_area_per_step"] = [0.5, 0.6, 0.7]
    d4 = dict(d3, downsample=4.0, window_area_per_step=[0.1, 0.1, 0.1])
    ffn = dict(d3, window_area_per_step=[0.3, 0.3, 0.3])
    models = {"rnn_spn_d3": d3, "rnn_spn_seed1": d2, "rnn_spn_d4": d4}
    text = verdict(dict(models, ffn_spn_d3=ffn))
    assert text[0].startswith("FFN-SPN: only d = 3")
    assert f"(d = 2: 0.60; d = 3: {d3_mean:.2f}; d = 4: 0.10)" in text[1]
    assert "falls at every step of d" in text[1]


def test_the_search_table_lists_every_trial_and_the_choice(results_copy):
    """The CPU dropout search: a row per trial of the grid (done, partly
    trained or not done yet), the command that continues it, and the
    choice only once every trial is done."""
    rnn_spn = importlib.import_module("render.rnn_spn")
    trials = ["p0_d2", "code_p0.1_d2", "paper_p0.1_d2"]

    def record(name, rate, placement, best, epochs_done):
        return dict(
            name=name, dropout=rate, dropout_placement=placement, downsample=2.0,
            epochs_done=epochs_done, best_epoch=3, best_valid_per_digit_error=best,
            train_seconds=5400.0, epoch_seconds=[130.0, 900.0, 120.0, 125.0],
        )  # fmt: skip

    done = [
        record("p0_d2", 0.0, None, 0.0671, 20),
        record("code_p0.1_d2", 0.1, "code", 0.0612, 20),
    ]
    result = dict(
        configuration="rnn_spn/dropout_search_cpu",
        # A file that --report wrote: the rerun that continues has no --report.
        command="python run_study.py rnn_spn/dropout_search_cpu --data-dir /x/mnist "
        "--runs-dir DIR --output FILE --report",
        hardware="CPU A (AVX2), 2 cores, no GPU",
        date="2030-01-01",
        settings=dict(dtype_policy="float32"),
        epochs_per_trial=20,
        grid=dict(rnn_spn=dict(trials=trials)),
        models=dict(rnn_spn=dict(trials=done, complete=False, chosen=None)),
    )
    path = results_copy / "rnn_spn_dropout_search_cpu.json"
    path.write_text(json.dumps(result))
    text = rnn_spn.rnn_spn_search_cpu("docs")
    # The median epoch leaves out an epoch that a pause stretched.
    assert "| p0_d2 | - | 0 | 6.71 % | 20 (3) | 90 min | 128 s | done |" in text
    assert "| code_p0.1_d2 | the released code's | 0.1 | 6.12 % |" in text
    assert (
        "| paper_p0.1_d2 | the paper's | 0.1 | - | - | - | - | not done yet |" in text
    )
    assert (
        "Rerun to continue: `python run_study.py rnn_spn/dropout_search_cpu "
        "--data-dir MNIST_DIR`." in text
    )
    assert "RNN-SPN: 2 of 3 trials done, each 20 epochs under `float32`" in text
    assert "The choice waits for the remaining trials." in text
    assert "CPU A (AVX2), 2 cores, no GPU" in text and "/x/mnist" not in text
    # A trial still training, then every trial done and the choice made.
    done.append(record("paper_p0.1_d2", 0.1, "paper", 0.0650, 7))
    path.write_text(json.dumps(result))
    assert "| 7 (3) | 90 min | 128 s | 7 of 20 epochs |" in rnn_spn.rnn_spn_search_cpu(
        "docs"
    )
    # A record written before trials kept their epochs' times.
    del done[-1]["epoch_seconds"]
    path.write_text(json.dumps(result))
    assert "| 7 (3) | 90 min | - | 7 of 20 epochs |" in rnn_spn.rnn_spn_search_cpu(
        "docs"
    )
    done[-1]["epochs_done"] = 20
    command = "python train_rnn_spn.py --model rnn_spn --downsample 2 --data-dir /x"
    result["models"]["rnn_spn"].update(
        complete=True,
        chosen=dict(
            trial="code_p0.1_d2",
            dropout=0.1,
            dropout_placement="code",
            train_command=command + " --set dropout=0.1",
        ),
    )
    path.write_text(json.dumps(result))
    text = rnn_spn.rnn_spn_search_cpu("docs")
    assert "3 of 3 trials done" in text
    assert (
        "Chosen: code_p0.1_d2 (dropout 0.1 at the released code's positions); the "
        "full protocol: `python train_rnn_spn.py --model rnn_spn --downsample 2 "
        "--data-dir MNIST_DIR --set dropout=0.1`." in text
    )
    assert "Rerun to continue" not in text and "waits" not in text


def test_the_sampler_table_never_puts_two_cpus_in_one_cell(results_copy):
    """Each row gives the newest two runs of its own CPU, the CPU whose
    newest run is the newest first."""
    sampler = importlib.import_module("render.sampler")
    path = results_copy / "sampler_speed.json"
    stored = json.loads(path.read_text())
    template = [r for r in stored["runs"] if "layer_native" in str(r)][-1]

    def run(machine, minute, per_call):
        copy = json.loads(json.dumps(template))
        copy.update(started_utc=f"2030-01-01T10:{minute:02d}:00+00:00")
        copy["machine"]["description"] = machine
        for shape in ("rnn_spn", "cram"):
            copy["shapes"][shape]["ratio_to_torch"]["layer_native"] = per_call
        return copy

    runs = [
        run("CPU A (AVX2), 2 cores, no GPU", 1, 0.11),
        run("CPU B (AVX-512), 2 cores, no GPU", 2, 0.22),
        run("CPU A (AVX2), 2 cores, no GPU", 3, 0.33),
        run("CPU A (AVX2), 2 cores, no GPU", 4, 0.44),
        run("CPU B (AVX-512), 2 cores, no GPU", 5, 0.55),
    ]
    path.write_text(json.dumps(dict(stored, runs=runs)))
    rows = [
        line.split(" | ")
        for line in sampler.sampler_speed("docs").splitlines()
        if line.startswith("| RNN-SPN") or line.startswith("| CRAM")
    ]
    cells = [(row[1], row[3]) for row in rows]
    # B's newest run is the newest; A's older first run is left out.
    assert cells == [
        ("CPU B (AVX-512), 2 cores, no GPU", "**0.22x / 0.55x**"),
        ("CPU B (AVX-512), 2 cores, no GPU", "**0.22x / 0.55x**"),
        ("CPU A (AVX2), 2 cores, no GPU", "**0.33x / 0.44x**"),
        ("CPU A (AVX2), 2 cores, no GPU", "**0.33x / 0.44x**"),
    ]
    # A CPU with one run: its cells hold that run alone.
    path.write_text(json.dumps(dict(stored, runs=runs[:2])))
    text = sampler.sampler_speed("docs")
    assert "| **0.11x** |" in text and "| **0.22x** |" in text


def test_the_bfloat16_paper_run_is_shown_beside_the_float32_row(results_copy):
    speed = importlib.import_module("render.speed")
    results = results_copy
    (results / "rnn_spn_paper_bf16.json").unlink(missing_ok=True)
    assert speed.bf16_paper("docs") == "Not run yet."
    cpu = json.loads((results / "rnn_spn_paper.json").read_text())
    run = dict(cpu["models"]["rnn_spn_d3"], test_per_digit_error_at_best=0.0191)
    run.update(epochs_done=40, best_epoch=38, train_sequences_per_second=812.0)
    run.update(finished=False, stopped_early=False)
    bf16 = dict(cpu, models={"rnn_spn_d3": run}, configuration="rnn_spn/table1_bf16")
    (results / "rnn_spn_paper_bf16.json").write_text(json.dumps(bf16))
    text = speed.bf16_paper("docs")
    float32 = cpu["models"]["rnn_spn_d3"]
    assert (
        f"| float32 | {100 * float32['test_per_digit_error_at_best']:.2f} % |" in text
    )
    assert "| mixed_bfloat16 | 1.91 % |" in text
    assert "| 40 (38), in progress |" in text and "812 sequences/s" in text
    assert "rnn_spn_paper_bf16.json" in text


def test_the_speed_tables_give_a_bfloat16_row_against_its_own_peak(results_copy):
    """A `train_speed.py --bf16` setting is a row of its own beside the
    float32 one, against the PyTorch port and against AMX's bfloat16 peak,
    without a second profiler check."""
    speed = importlib.import_module("render.speed")
    results = results_copy
    timed = json.loads((results / "train_flops.json").read_text())
    float32 = timed["results"]["keras/rnn_spn"]
    torch_eager = timed["results"]["torch_eager/rnn_spn"]["per_second"]
    timed["results"]["keras_mixed_bfloat16/rnn_spn"] = dict(
        float32,
        per_second=3.5 * torch_eager,
        median_step_seconds=0.05,
        gflops_per_second=300.0,
        fraction_of_bfloat16_amx_peak=0.0625,
    )
    (results / "train_flops.json").write_text(json.dumps(timed))
    training = speed.speed_training("docs")
    row = next(r for r in training.splitlines() if "`mixed_bfloat16` |" in r)
    assert row.startswith("| RNN-SPN, d = 2, `mixed_bfloat16` | 100 | 50 ms |")
    assert row.endswith("| 3.50x |")
    flops = speed.speed_flops("docs")
    rows = [r for r in flops.splitlines() if r.startswith("| RNN-SPN, d = 2")]
    assert [r.split("|")[1].strip() for r in rows] == [
        "RNN-SPN, d = 2",
        "RNN-SPN, d = 2, `mixed_bfloat16`",
        "RNN-SPN, d = 2, PyTorch eager port",
    ]
    cells = [c.strip() for c in rows[1].strip("|").split("|")]
    assert cells[4:] == ["50 ms", "300", "6.2 % of the bfloat16 (AMX)", ""]
    # The float32 row keeps its share of the float32 peak and the check.
    assert f"{100 * float32['fraction_of_float32_peak']:.1f} %" in rows[0]
    assert rows[0].rstrip(" |").split("|")[-1].strip() != ""
    # The README's line names it only where the CPU has AMX.
    assert "and 3.50x under `mixed_bfloat16` on AMX" in speed.speed_summary("")
    timed["cpu_flags"] = [f for f in timed["cpu_flags"] if f != "amx_bf16"]
    (results / "train_flops.json").write_text(json.dumps(timed))
    assert "under `mixed_bfloat16` on AMX" not in speed.speed_summary("")


def test_the_speed_line_takes_float32_training_from_the_newest_run(results_copy):
    """Of the training benchmark's files (one per machine), the README's line
    quotes the newest run's float32 ratio and bfloat16 from the run on a CPU
    with AMX, naming each claim's machine once."""
    speed = importlib.import_module("render.speed")
    sources = importlib.import_module("render.sources")
    ratio = importlib.import_module("render.cells").ratio
    xeon = json.loads((results_copy / "train_flops.json").read_text())
    other = json.loads((results_copy / "train_flops_avx2.json").read_text())
    torch_eager = other["results"]["torch_eager/rnn_spn"]["per_second"]
    other["results"]["keras/rnn_spn"]["per_second"] = 4.0 * torch_eager
    other["hardware"], other["cpu_flags"] = "CPU Y, 2 cores, no GPU", ["avx2"]
    for date, newest in (("2999-01-01", True), ("2000-01-01", False)):
        other["date"] = date
        (results_copy / "train_flops_avx2.json").write_text(json.dumps(other))
        line = speed.speed_summary("")
        timed = xeon["results"]
        expected = (
            4.0
            if newest
            else timed["keras/rnn_spn"]["per_second"]
            / timed["torch_eager/rnn_spn"]["per_second"]
        )
        assert f"trains at {ratio(expected)} the PyTorch port's" in line
        machine = sources.cpu(other if newest else xeon)
        assert f"float32 training: {machine}" in line or (
            f"float32 training and `mixed_bfloat16` training: {machine}" in line
        )
        assert "under `mixed_bfloat16` on AMX" in line
        assert f"`mixed_bfloat16` training: {sources.cpu(xeon)}" in line
    # Without the second file: the one run.
    (results_copy / "train_flops_avx2.json").unlink()
    assert "float32 training and `mixed_bfloat16` training" in speed.speed_summary("")


def test_the_speed_line_gives_the_inpainter_against_earlier_code(results_copy):
    """From `speed_vs_commit.json`, where it holds the inpainter: each policy's
    ratio of the medians, the baseline's commit; nothing without the file."""
    speed = importlib.import_module("render.speed")
    path = results_copy / "speed_vs_commit.json"
    against = json.loads(path.read_text())
    entry = against["models"]["cram_inpainter"]
    entry["median_ms"] = {
        "baseline/float32": 500.0,
        "current/float32": 400.0,
        "current/mixed_bfloat16": 250.0,
    }
    entry["ratio"] = {"current/float32": 1.25, "current/mixed_bfloat16": 2.0}
    entry["baseline"]["commit"] = "abcdef0" + "0" * 33
    path.write_text(json.dumps(against))
    line = speed.speed_summary("")
    assert (
        "the inpainter's training step is 1.25x (float32) and 2.00x "
        "(`mixed_bfloat16`) as fast as at commit `abcdef0`" in line
    ), line
    del entry["ratio"]["current/mixed_bfloat16"]
    path.write_text(json.dumps(against))
    assert "step is 1.25x (float32) as fast as at commit" in speed.speed_summary("")
    path.unlink()
    assert "inpainter" not in speed.speed_summary("")


def test_an_attempt_on_another_machine_names_it(results_copy):
    """The attempts file is one machine's; an attempt measured on another
    says where and when in its row, and the source line says that rows may
    name another machine (only then)."""
    speed = importlib.import_module("render.speed")
    path = results_copy / "speed_attempts.json"
    attempts = json.loads(path.read_text())
    attempts["attempts"] = [
        {"area": "a", "what": "here", "effect": "faster", "adopted": True},
        {"area": "b", "what": "there", "effect": "slower", "adopted": False,
         "hardware": "CPU C, 2 cores, no GPU", "cpu_flags": ["avx2", "fma"],
         "date": "2030-01-02"},
    ]  # fmt: skip
    path.write_text(json.dumps(attempts))
    text = speed.speed_attempts("docs")
    rows = [
        r for r in text.splitlines() if r.startswith("| a |") or r.startswith("| b |")
    ]
    assert rows == [
        "| a | here | faster | yes |",
        "| b | there | On CPU C, 2 cores, no GPU (vector extensions: AVX2), 2030-01-02: "
        "slower | no |",
    ]
    assert "no GPU (vector extensions: " in text.splitlines()[-1]
    assert text.splitlines()[-1].count("unless the row names another") == 1
    del attempts["attempts"][1]
    path.write_text(json.dumps(attempts))
    assert "unless the row names another" not in speed.speed_attempts("docs")


def test_the_cram_full_setting_lists_every_run_as_far_as_it_has_got(results_copy):
    """Each clue and seed is a row: a finished run with its test error, a
    training one with its best validation error and epoch, the others not
    started; the published anchors above them."""
    cram_cls = importlib.import_module("render.cram_cls")
    results = results_copy
    (results / "cram_cls_full.json").unlink(missing_ok=True)
    assert cram_cls.cram_cls_full("docs") == "Not run yet."
    budget = json.loads((results / "cram_cls_budget.json").read_text())

    def run(errors, finished, test_error=None):
        best = min(range(len(errors)), key=errors.__getitem__)
        return dict(
            epochs_done=len(errors),
            epochs_planned=50,
            valid_error_per_epoch=errors,
            best_valid_epoch=best + 1,
            best_valid_error=errors[best],
            finished=finished,
            test_error=test_error,
        )

    budget = {k: v for k, v in budget.items() if not k.startswith("saliency")}
    full = dict(
        budget,
        date="2026-12-06",
        configuration="cram_cls/full",
        seeds=[0, 1],
        progress={
            "oracle": {"0": run([0.1, 0.03, 0.04], True, 0.0213)},
            "none": {"1": run([0.3, 0.2], False)},
        },
    )
    (results / "cram_cls_full.json").write_text(json.dumps(full))
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
        for line in cram_cls.cram_cls_full("docs").splitlines()
        if line.startswith("| ")
    }
    assert "| 4.04 % |" in rows[("RAM, 8 glimpses (Mnih et al. 2014, published)", "")]
    oracle = rows[("CRAM, oracle clue (ground-truth digit mask)", "0")]
    assert oracle.endswith("| 2.13 % | 3.00 % | 3 (2) | finished |")
    none = rows[("CRAM, no clue (zeros, clue weight 0)", "1")]
    assert none.endswith("| - | 20.00 % | 2 (2) | training: epoch 2 of 50 |")
    saliency = rows[("CRAM, learned saliency clue (CNN-DecNN)", "0")]
    assert saliency.endswith("| - | - | - | not started |")
    assert len(rows) == 3 + 1 + 6  # anchors, the header, three clues x two seeds
    # The README names the finished runs only, in place of the budget's row
    # of the same clue; the clues without one keep the budget's row.
    overview = importlib.import_module("render.overview")
    headline = overview.headline("").splitlines()
    lines = [r for r in headline if "full setting" in r]
    assert len(lines) == 1 and "oracle clue, full setting" in lines[0]
    classification = [r for r in headline if "| CRAM classification" in r]
    assert [r.split("|")[1].strip() for r in classification] == [
        "CRAM classification, 60x60 cluttered MNIST, oracle clue, full setting",
        "CRAM classification, 60x60 cluttered MNIST, saliency clue",
        "CRAM classification, 60x60 cluttered MNIST, no clue",
    ]
    assert "CPU budget, `--clue saliency`" in classification[1]
    assert "| 2.13 % |" in lines[0]
    assert (
        f"at most {full['protocol']['epochs']} epochs with early stopping" in lines[0]
    )
    assert "seed 0: 2.13 %, 3 epochs, best 2" in lines[0]
    # A clue with two finished seeds: their mean, each seed beside it.
    full["progress"]["oracle"]["1"] = run([0.1, 0.02], True, 0.0187)
    (results / "cram_cls_full.json").write_text(json.dumps(full))
    (line,) = [r for r in overview.headline("").splitlines() if "full setting" in r]
    assert "| 2.00 % (mean of 2 seeds) |" in line
    assert (
        "(seed 0: 2.13 %, 3 epochs, best 2; seed 1: 1.87 %, 2 epochs, best 2)" in line
    )


def test_the_headline_follows_the_inpainting_studies_as_they_finish(results_copy):
    """The search's row appears once the search and the defaults have both
    run; the convergence row gives the best held-out scores while its runs
    train, and the test scores once both have stopped."""
    overview = importlib.import_module("render.overview")
    results = results_copy
    tune = json.loads((results / "inpaint_tune_svhn1083.json").read_text())
    tune.pop("summary", None)
    (results / "inpaint_tune_svhn1083.json").write_text(json.dumps(tune))
    assert "chosen by `--tune`" not in overview.headline("")
    run = dict(values=dict(glimpses=2, learning_rate=2e-4, min_scale=0.27))
    run.update(scores=dict(hole_psnr=21.5), n_train=795)
    tune["runs"] = {
        "search": run,
        "default": dict(
            run,
            values=dict(glimpses=4, learning_rate=1e-4),
            scores=dict(hole_psnr=20.75),
        ),
    }
    tune["summary"] = {"chosen_minus_default_db": 0.75}
    (results / "inpaint_tune_svhn1083.json").write_text(json.dumps(tune))
    row = next(
        line for line in overview.headline("").splitlines() if "`--tune`" in line
    )
    assert (
        "| 21.50 dB with 2 glimpses, Adam 2.0e-04 (defaults, 4 glimpses, Adam "
        "1e-04: 20.75) |" in row
    )
    assert f"{len(tune['trials'])} trials of {tune['epochs']} epochs on 795" in row

    name = "inpaint_converge_svhn1083.json"
    converge = json.loads((results / name).read_text())
    if "methods" not in converge:
        cram = converge["runs"]["cram"]["0"]
        cnn = converge["runs"]["cnn_encoder"]["0"]
        row = next(
            line
            for line in overview.headline("").splitlines()
            if "until validation stops" in line
        )
        assert "best epoch so far" in row
        assert f"| {max(cram['val_hole_psnr']):.2f} dB (CNN encoder " in row
        assert f"CRAM {cram['best_epoch']} of {cram['epochs'][-1]}," in row
        assert f"CNN encoder {cnn['best_epoch']} of {cnn['epochs'][-1]};" in row
    methods = {
        "cram": {"hole_psnr": 22.0},
        "cnn_encoder": {"hole_psnr": 25.0},
        "navier_stokes": {"hole_psnr": 23.25},
    }
    runs = {
        "cram": {"0": {"epochs": 120, "best_epoch": 70}},
        "cnn_encoder": {"0": {"epochs": 150, "best_epoch": 100}},
    }
    (results / name).write_text(json.dumps(dict(converge, methods=methods, runs=runs)))
    row = next(
        line
        for line in overview.headline("").splitlines()
        if "until validation stops" in line
    )
    assert (
        "| hole PSNR | Fig. 7 only | 22.00 dB (CNN encoder 25.00, Navier-Stokes 23.25) |"
        in row
    )
    # The runs' best epochs are 0-based; the row counts from 1.
    assert "epochs (best): CRAM 120 (71), CNN encoder 150 (101)" in row
