"""Named configurations: the settings behind every committed result.

A named configuration is a Python module ``configs/<experiment>/<name>.py``
of the repository (``<experiment>`` is ``rnn_spn``, ``cram_cls`` or
``inpaint``); its name is ``<experiment>/<name>``. Its docstring is the
header: a title line, then one line each (continued by indented lines)::

    Reproduces: the paper's table or figure it stands beside
    Command: the command that runs it
    Hardware: the machine its committed result ran on
    Wall time: how long that took

and its upper-case names are the configuration:

* ``SETTINGS``: the experiment's Config fields that differ from their
  defaults (the papers' settings), e.g. ``dict(epochs=3, n_train=20000)``;
* a study also names ``VARIANTS`` (``{name: {field: value}}``, each on top
  of ``SETTINGS``), ``SEEDS`` (each variant runs once per seed), the
  ``PROTOCOL`` that runs and summarises it (a module of
  `cram_keras.studies`), the ``OUTPUT`` result file and its ``FIGURES``;
  any other upper-case name is protocol-specific (e.g. a schedule).

The training scripts take ``--config NAME`` (``NAME:VARIANT`` for one
variant of a study); ``run_study.py NAME`` runs a study. Every result file
written from a configuration records ``configuration`` (the name),
``settings`` (the resolved Config, without the folders of data and cache,
which say where the data is, not which) and ``commit``.
"""

import ast
import dataclasses
import importlib
import importlib.util
import os
import re
import subprocess

from cram_keras.experiments.config import check_finite_fields

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS_DIR = os.path.join(REPO, "configs")
# Each experiment and the training script that runs it.
SCRIPTS = {
    "rnn_spn": "train_rnn_spn.py",
    "cram_cls": "train_cls.py",
    "inpaint": "train_inpaint.py",
}
EXPERIMENTS = tuple(SCRIPTS)
HEADER_FIELDS = ("Reproduces", "Command", "Hardware", "Wall time")
# Config fields that say where files are, not what runs: never part of a
# configuration, set by each machine's flags.
LOCATION_FIELDS = ("data_dir", "cache_dir")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ConfigurationError(ValueError):
    """A configuration that does not exist or does not resolve."""


def names(configs_dir=None):
    """Every configuration's name, sorted (``rnn_spn/table1``, ...)."""
    root = configs_dir or CONFIGS_DIR
    found = []
    for experiment in EXPERIMENTS:
        folder = os.path.join(root, experiment)
        if os.path.isdir(folder):
            found += [
                f"{experiment}/{f[:-3]}"
                for f in os.listdir(folder)
                if f.endswith(".py") and _NAME.match(f[:-3])
            ]
    return sorted(found)


def parse_header(docstring):
    """``{"title": ..., "Reproduces": ..., ...}`` from a docstring."""
    lines = (docstring or "").strip().splitlines()
    header = {"title": lines[0].strip() if lines else ""}
    key = None
    for line in lines[1:]:
        match = re.match(r"^([A-Z][a-z ]+):\s*(.*)$", line)
        if match and match.group(1) in HEADER_FIELDS:
            key = match.group(1)
            header[key] = match.group(2).strip()
        elif key and line.startswith((" ", "\t")) and line.strip():
            header[key] += " " + line.strip()
        else:
            key = None
    return header


def read_header(name, configs_dir=None):
    """The header of configuration ``name``, without importing it."""
    path = _path(name, configs_dir)
    with open(path, encoding="utf-8") as f:
        return parse_header(ast.get_docstring(ast.parse(f.read())))


@dataclasses.dataclass(frozen=True)
class NamedConfig:
    """One configuration module: see the module docstring."""

    name: str
    experiment: str
    path: str
    header: dict
    settings: dict
    variants: dict
    seeds: tuple
    protocol: str | None
    output: str | None
    figures: dict
    extra: dict

    @property
    def is_study(self):
        return self.protocol is not None

    def module(self):
        """The experiment's module (`cram_keras.experiments.<experiment>`)."""
        return importlib.import_module(f"cram_keras.experiments.{self.experiment}")

    def overrides(self, variant=None, seed=None):
        """``SETTINGS``, then the variant's, then the seed, as one dict."""
        values = dict(self.settings)
        if variant is not None:
            if variant not in self.variants:
                raise ConfigurationError(
                    f"{self.name} has no variant {variant!r}. Its variants: "
                    f"{', '.join(self.variants) or 'none'}."
                )
            values.update(self.variants[variant])
        if seed is not None:
            values["seed"] = seed
        return values

    def resolve(self, variant=None, seed=None, changes=None, smoke=False):
        """The experiment's Config: the defaults, this configuration
        (``variant`` and ``seed`` for one run of a study), then ``changes``
        (``{field: value}``: ``--set``, and the folders of data and cache);
        ConfigurationError if it does not resolve."""
        module = self.module()
        values = self.overrides(variant, seed)
        if smoke:  # The smoke sizes over the configuration's.
            values = without_smoke_sizes(values, module)
        values.update(changes or {})
        fields = {f.name for f in dataclasses.fields(module.Config)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigurationError(
                f"{self.name}: {self.experiment} has no setting(s) {unknown}. "
                f"Valid keys: {', '.join(sorted(fields))}."
            )
        try:
            if smoke:
                config = module.smoke_config(**values)
            else:
                config = module.Config(**values)
            check_finite_fields(config)
        except (TypeError, ValueError) as err:
            raise ConfigurationError(f"{self.name}: {err}") from None
        return config


def _path(name, configs_dir=None):
    experiment, _, short = name.partition("/")
    if experiment not in EXPERIMENTS or not _NAME.match(short or "-"):
        raise ConfigurationError(
            f"a configuration is named <experiment>/<name> with an experiment of "
            f"{', '.join(EXPERIMENTS)}. Received: {name!r}"
        )
    path = os.path.join(configs_dir or CONFIGS_DIR, experiment, short + ".py")
    if not os.path.isfile(path):
        known = [n for n in names(configs_dir) if n.startswith(experiment + "/")]
        raise ConfigurationError(
            f"no configuration {name!r} (configs/{experiment}/{short}.py). Known: "
            f"{', '.join(known) or 'none'}."
        )
    return path


def full_name(name, experiment=None):
    """``table1`` -> ``rnn_spn/table1`` for ``experiment`` ``rnn_spn``."""
    if "/" not in name and experiment:
        return f"{experiment}/{name}"
    return name


def load(name, experiment=None, configs_dir=None):
    """``(NamedConfig, variant or None)`` of ``[EXPERIMENT/]NAME[:VARIANT]``.

    ``experiment``: the script's own; a name of another experiment's
    configuration is refused.
    """
    name, _, variant = name.partition(":")
    name = full_name(name.strip(), experiment)
    path = _path(name, configs_dir)
    if experiment and not name.startswith(experiment + "/"):
        raise ConfigurationError(
            f"{name} configures {name.split('/')[0]}, not {experiment}."
        )
    spec = importlib.util.spec_from_file_location(
        "cram_keras_config_" + name.replace("/", "_"), path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = {k: v for k, v in vars(module).items() if k.isupper()}
    named = NamedConfig(
        name=name,
        experiment=name.split("/")[0],
        path=path,
        header=parse_header(module.__doc__),
        settings=dict(values.pop("SETTINGS", {})),
        variants={k: dict(v) for k, v in values.pop("VARIANTS", {}).items()},
        seeds=tuple(values.pop("SEEDS", ())),
        protocol=values.pop("PROTOCOL", None),
        output=values.pop("OUTPUT", None),
        figures=dict(values.pop("FIGURES", {})),
        extra=values,
    )
    for key in LOCATION_FIELDS:
        if key in named.settings or any(key in v for v in named.variants.values()):
            raise ConfigurationError(
                f"{name}: {key} is not part of a configuration (it says where the "
                "files are on one machine); give it with its flag."
            )
    return named, (variant.strip() or None)


def script_overrides(name, experiment):
    """The ``{field: value}`` that ``--config NAME[:VARIANT]`` of a training
    script sets: a run configuration's settings, or one variant of a study
    (with its first seed)."""
    named, variant = load(name, experiment)
    if named.is_study and variant is None:
        raise ConfigurationError(
            f"{named.name} is a study (python run_study.py {named.name}); a training "
            "script runs one of its variants, --config "
            f"{named.name.split('/')[1]}:VARIANT with a VARIANT of "
            f"{', '.join(named.variants) or 'none'}."
        )
    seed = named.seeds[0] if variant is not None and named.seeds else None
    return named.overrides(variant, seed)


def without_smoke_sizes(values, module):
    """``values`` less the fields that ``--smoke`` sets (the sizes and
    epochs of a seconds-long run): with ``--smoke`` a configuration keeps
    what it runs, not how long."""
    smoke = module.EXPERIMENT.smoke_overrides
    return {k: v for k, v in values.items() if k not in smoke}


def recorded_settings(config, drop=()):
    """A Config as a result file records it: every field but the folders
    of data and cache (and ``drop``)."""
    return {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in LOCATION_FIELDS + tuple(drop)
    }


def commit():
    """The repository's current commit, or None outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
