"""Described dataclass fields: default, help and allowed values in one table that generates CLI
flags, the app's widgets and validation (EditParams and every method's options use it)."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from engine.errors import InputError


def described(default, help: str, *, range=None, choices=None, label: str | None = None,
              flag: str | None = None, zero: str | None = None, auto: str | None = None):
    """A dataclass field carrying its user-facing description and allowed values.

    ``range`` (low, high) for numbers, ``choices`` for text; ``label`` is the short name a widget
    shows (default: from the field name); ``flag`` the CLI flag when it is not ``--field-name``;
    ``zero`` says what 0 means when 0 is allowed outside ``range`` (e.g. "the model's native size");
    ``auto`` what AUTO (-1) means when it is allowed (e.g. "scales with the photo").
    """
    return field(default=default, metadata={"help": help, "range": range, "choices": choices,
                                            "label": label, "flag": flag, "zero": zero,
                                            "auto": auto})


AUTO = -1  # the value of a field with an ``auto`` description: chosen per photo at run time


def kind(f: dataclasses.Field) -> type:
    """The field's value type (bool, int, float or str), also under ``from __future__ import
    annotations``, where ``f.type`` is a string."""
    return {"bool": bool, "int": int, "float": float, "str": str}.get(
        getattr(f.type, "__name__", f.type), str)


def label(f: dataclasses.Field) -> str:
    return f.metadata.get("label") or f.name.replace("_", " ").capitalize()


def flag(f: dataclasses.Field) -> str:
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


def check(f: dataclasses.Field, value) -> None:
    """Raise InputError naming the field when ``value`` is of the wrong type or out of range."""
    name, low_high, choices = f.name, f.metadata.get("range"), f.metadata.get("choices")
    expected = kind(f)
    if expected is bool:
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}", field=name)
        return
    if expected is str:
        if not isinstance(value, str):
            raise InputError(f"{name} must be text, got {value!r}", field=name)
        if choices is not None and value not in choices:
            raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}", field=name)
        return
    if not isinstance(value, bool) and ((value == 0 and f.metadata.get("zero"))
                                        or (value == AUTO and f.metadata.get("auto"))):
        return
    low, high = low_high
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {value!r}", field=name)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
        raise InputError(f"{name} must be a number from {low} to {high}, got {value!r}", field=name)
    if not low <= value <= high:
        auto = f" (or {AUTO}: {f.metadata['auto']})" if f.metadata.get("auto") else ""
        raise InputError(f"{name} must be from {low} to {high}{auto}, got {value}", field=name)


def validate(obj) -> None:
    """Check every described field of the dataclass instance ``obj`` (the first bad one raises)."""
    for f in dataclasses.fields(obj):
        if "help" in f.metadata:
            check(f, getattr(obj, f.name))


def from_dict(cls, data: dict | None):
    """Build ``cls`` from a (possibly partial) dict, refusing unknown keys by name; validated."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; this method takes "
                         f"{', '.join(sorted(known)) or 'none'}")
    built = cls(**data)
    validate(built)
    return built
