"""Experiment configs: one dataclass per experiment is the single place for
every setting's default, type, check and help text.

A field is declared with `option`::

    epochs: int = option(300, "maximum epochs")
    model: str = option("rnn_spn", "which network", choices=MODEL_NAMES)
    clip_norm: float = option(5.0, "global-norm clip", flag=False)

`cram_keras.experiments.cli` turns every field with ``flag=True`` into a
command-line flag (``--epochs``) whose help text ends with the default, and
every field, flagged or not, can be set with ``--set key=value``, parsed by
the field's annotated type (`parse_value`). After construction, every float
field must be finite (`check_finite_fields`), so ``--set alpha=nan`` is
refused at the command line, before anything runs.
"""

import dataclasses
import json
import math
import types
import typing

from cram_keras.utils import check_choice

_MISSING = dataclasses.MISSING


def option(default=_MISSING, help="", *, flag=True, choices=None, metavar=None):
    """A dataclass field with its help text and command-line settings.

    Args:
        default: the default value; a list default is copied for each config.
        help: one sentence for ``--help`` (the default is appended to it).
        flag: whether the field gets its own ``--flag`` (every field can be
            set with ``--set``).
        choices: the allowed values, checked by argparse and by `parse_value`.
        metavar: the placeholder shown in ``--help``.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar}
    if isinstance(default, list):
        value = list(default)
        return dataclasses.field(default_factory=lambda: list(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


DTYPE_POLICIES = ("float32", "mixed_bfloat16")


def dtype_policy_option():
    """The ``dtype_policy`` setting of the experiments that train on every
    backend; `cram_keras.training.precision.dtype_policy_scope` applies it."""
    return option(
        "float32",
        "Keras dtype policy: float32 (the papers'), or mixed_bfloat16 (bfloat16 "
        "compute, float32 weights; faster on CPUs with AVX512_BF16 or AMX and "
        "on GPUs: docs/results.md; beyond the papers)",
        choices=DTYPE_POLICIES,
    )


def field_help(field):
    return field.metadata.get("help", "") if field.metadata else ""


def field_default(field):
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        return field.default_factory()
    return None


def base_type(annotation):
    """``int | None`` -> (int, True); ``float`` -> (float, False)."""
    if isinstance(annotation, str):  # Postponed annotations are not used here.
        raise TypeError(f"Config annotations must be types. Received: {annotation!r}")
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"Unsupported config annotation {annotation!r}")
        inner, _ = base_type(args[0])
        return inner, optional
    if origin is list:
        return list, False
    return annotation, False


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_value(field, text):
    """Parses ``text`` as a value of ``field``'s type; ValueError if it is not.

    ``none`` gives ``None`` for optional fields; bools take true/false/1/0/
    yes/no/on/off; lists take JSON (``[16,32,64]``) or comma-separated
    numbers (``16,32,64``); floats must be finite.
    """
    kind, optional = base_type(field.type)
    name = field.name
    stripped = text.strip()
    choices = field.metadata.get("choices") if field.metadata else None
    if choices is not None and stripped in choices:  # e.g. --clue none
        return stripped
    if optional and stripped.lower() in ("none", "null"):
        return None
    expected = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        list: "a list such as [16,32,64] or 16,32,64",
    }.get(kind, getattr(kind, "__name__", str(kind)))
    bad = ValueError(
        f"`{name}` must be {expected}{' or none' if optional else ''}. "
        f"Received: {name}={text!r}"
    )
    if kind is bool:
        lowered = stripped.lower()
        if lowered not in _TRUE + _FALSE:
            raise bad
        value = lowered in _TRUE
    elif kind in (int, float, list):
        try:
            if kind is int:
                value = int(stripped)
            elif kind is float:
                value = float(stripped)
            elif stripped.startswith("["):
                value = json.loads(stripped)
            else:
                value = [json.loads(p) for p in stripped.split(",") if p.strip()]
        except ValueError:
            raise bad from None
        if kind is list and not isinstance(value, list):
            raise bad
        if kind is float and not math.isfinite(value):
            raise ValueError(
                f"`{name}` must be a finite number. Received: {name}={text!r}"
            )
    else:
        value = text
    if choices is not None:
        if value not in tuple(choices):
            raise ValueError(
                f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}"
            )
    return value


def add_set_flag(group, help):
    """The repeatable ``--set KEY=VALUE`` flag of a parser (``group``); its
    values, ``args.assignments``, go to `parse_assignments`."""
    group.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help,
    )


def parse_assignments(config_cls, assignments):
    """``["key=value", ...]`` -> ``{key: parsed value}`` for ``config_cls``.

    Unknown keys are an error that lists the valid ones.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    parsed = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(
                f"--set takes key=value. Received: --set {item!r}. "
                f"Valid keys: {', '.join(sorted(fields))}."
            )
        if key not in fields:
            raise ValueError(
                f"--set: {config_cls.__module__.rsplit('.', 1)[-1]} has no setting "
                f"{key!r}. Valid keys: {', '.join(sorted(fields))}."
            )
        parsed[key] = parse_value(fields[key], text)
    return parsed


def check_choices(config):
    """`check_choice` on every field of ``config`` declared with ``choices``
    (`option`); an optional field may also be None."""
    for field in dataclasses.fields(config):
        choices = (field.metadata or {}).get("choices")
        value = getattr(config, field.name)
        if choices and not (value is None and base_type(field.type)[1]):
            check_choice(field.name, value, choices)


def check_fields(config, check, names, **bounds):
    """``check(name, value, **bounds)`` on the fields ``names`` of
    ``config``, e.g. `cram_keras.utils.check_int` with ``low=1``."""
    for name in names:
        check(name, getattr(config, name), **bounds)


def resolve(config, name, value):
    """Sets the field ``name`` of the frozen Config ``config`` (in its
    ``__post_init__``: a default that depends on other fields, or a value
    in its checked form)."""
    object.__setattr__(config, name, value)


def check_finite_fields(config):
    """Every float field (and float in a list field) of ``config`` is finite."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(
                    f"`{f.name}` must be a finite number. Received: {f.name}={value!r}"
                )


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


def config_diff(previous, current):
    """Sorted ``[(key, previous value, current value)]`` where they differ."""
    keys = sorted(set(previous) | set(current))
    return [
        (k, previous.get(k), current.get(k))
        for k in keys
        if previous.get(k) != current.get(k)
    ]
