"""Experiment configs: dataclasses with paper defaults, checked overrides, and
a run directory that refuses to mix two different configs."""

import dataclasses
import json
import os


def apply_overrides(config, overrides):
    """Returns ``config`` with ``overrides`` applied; unknown keys are an error.

    ``None`` values in ``overrides`` mean "not given" and are skipped, so that
    argparse namespaces can be passed as they are.
    """
    valid = {f.name for f in dataclasses.fields(config)}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ValueError(
            f"Unknown config keys {unknown} for {type(config).__name__}. "
            f"Valid keys: {sorted(valid)}."
        )
    return dataclasses.replace(config, **given)


def config_to_dict(config):
    return dataclasses.asdict(config)


def prepare_run_dir(output_dir, config):
    """Creates ``output_dir`` and writes ``config.json`` (the resolved config).

    If the directory already holds a ``config.json`` from an interrupted run,
    it must match ``config``: the run then resumes. A different config is an
    error rather than a silent mix of two experiments.
    """
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "config.json")
    current = config_to_dict(config)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        differing = sorted(
            k for k in set(previous) | set(current) if previous.get(k) != current.get(k)
        )
        if differing:
            details = ", ".join(
                f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in differing
            )
            raise ValueError(
                f"{output_dir!r} holds a run with a different config ({details}). "
                "Rerun with the same flags to resume it, or choose another "
                "--output-dir."
            )
    else:
        with open(path, "w") as f:
            json.dump(current, f, indent=2, sort_keys=True)
    return path


def write_json(path, payload):
    """Writes JSON atomically (temporary file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
