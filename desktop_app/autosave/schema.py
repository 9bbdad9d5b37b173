"""The autosave manifest's versioned schema: a session as plain values, checked field by field on read."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from desktop_app.history_entry import HistoryEntry
from desktop_app.mask_layers import MaskLayers, PaintLayer, Segment
from engine.imaging import Photo
from engine.methods import METHODS
from engine.fields import AUTO
from engine.params import EditParams

# Format 1 (until this package) named the classes to rebuild by module path; format 2 holds only
# plain values in fixed places, so no file decides what code runs and classes can move freely.
FORMAT = 2
MAX_DEPTH = 24  # plain values (metadata, stats, options) nest a few levels; deeper is not ours
LAST_TIME = 253402300799  # 9999-12-31: later "saved" times are not dates the dialog can show
MASK_OPS = {"invert": 0, "grow": 1, "shrink": 1, "feather": 1}  # operation -> its arguments


class AutosaveError(Exception):
    """An autosave that cannot be read; the message says what is wrong, for the user."""


def _described(value) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (int, float)):
        return f"the number {value:g}" if isinstance(value, float) else f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a group of fields"
    return "empty"


def _wrong(where: str, value, what: str) -> AutosaveError:
    return AutosaveError(f"its field {where} is {_described(value)} where {what} belongs")


class ArrayRef:
    """An array in the manifest: its file name, known now or filled in by the writer thread."""

    __slots__ = ("array", "name")

    def __init__(self, array: np.ndarray | None, name: str | None):
        self.array, self.name = array, name


# ============================================================================ kinds of field
# Each kind turns a value into plain JSON values (``write``) and checks and rebuilds it (``read``,
# which gets the field's place for messages and ``load(name, where)`` for array files).


class Scalar:
    def __init__(self, types, what: str, low=None, high=None):
        self.types, self.what, self.low, self.high = types, what, low, high

    def write(self, value, ref):
        return value.item() if isinstance(value, np.generic) else value

    def read(self, value, where, load):
        if isinstance(value, bool) != (self.types == (bool,)) or not isinstance(value, self.types):
            raise _wrong(where, value, self.what)
        if isinstance(value, float) and not math.isfinite(value):
            raise _wrong(where, value, self.what)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise _wrong(where, value, f"{self.what} from {self.low} to {self.high}")
        return value


TEXT = Scalar((str,), "text")
FLAG = Scalar((bool,), "true or false")
INT = Scalar((int,), "a whole number", 0, 2**63 - 1)
NUMBER = Scalar((int, float), "a number", -1e12, 1e12)
TIME = Scalar((int, float), "a time", 0, LAST_TIME)


class Optional:
    def __init__(self, kind):
        self.kind = kind

    def write(self, value, ref):
        return None if value is None else self.kind.write(value, ref)

    def read(self, value, where, load):
        return None if value is None else self.kind.read(value, where, load)


class ListOf:
    def __init__(self, kind, container=list):
        self.kind, self.container = kind, container

    def write(self, value, ref):
        return [self.kind.write(v, ref) for v in value]

    def read(self, value, where, load):
        if not isinstance(value, list):
            raise _wrong(where, value, "a list")
        return self.container(self.kind.read(v, f"{where}[{i}]", load) for i, v in enumerate(value))


class Array:
    """A picture or mask kept in its own file; the manifest holds the file's name."""

    def __init__(self, what: str, dtypes: tuple, channels: int | None):
        self.what, self.dtypes, self.channels = what, dtypes, channels

    def write(self, value, ref):
        return ref(value)

    def read(self, value, where, load):
        if not isinstance(value, str):
            raise _wrong(where, value, "the name of an array file")
        array = load(value, where)
        shape_ok = array.ndim == 2 if self.channels is None else (array.ndim == 3 and array.shape[2] == self.channels)
        if array.dtype not in self.dtypes or not shape_ok or 0 in array.shape:
            raise AutosaveError(f"its field {where} is not {self.what} (it holds a {array.dtype} array "
                                f"of shape {array.shape})")
        return array


RGB = Array("an RGB picture", (np.uint8,), 3)
GREY = Array("a one-channel picture", (np.uint8,), None)
MASK = Array("a mask", (np.float32,), None)
NATIVE = Array("an RGB picture", (np.uint8, np.uint16), 3)


class Bytes:
    def write(self, value, ref):
        return base64.b64encode(bytes(value)).decode("ascii")

    def read(self, value, where, load):
        try:
            return base64.b64decode(TEXT.read(value, where, load), validate=True)
        except binascii.Error:
            raise AutosaveError(f"its field {where} is not base64 text") from None


class FilePath:
    def write(self, value, ref):
        return os.fspath(value)

    def read(self, value, where, load):
        return Path(TEXT.read(value, where, load))


class Plain:
    """Metadata, statistics and options: JSON values, text keys, a few levels deep."""

    def write(self, value, ref):
        if isinstance(value, dict):
            return {str(k): self.write(v, ref) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.write(v, ref) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return value

    def read(self, value, where, load, depth=0):
        if depth > MAX_DEPTH:
            raise AutosaveError(f"its field {where} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            return {k: self.read(v, where, load, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.read(v, where, load, depth + 1) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            raise _wrong(where, value, "a finite number")
        return value


class Method:
    def write(self, value, ref):
        return value

    def read(self, value, where, load):
        if TEXT.read(value, where, load) not in METHODS:
            raise AutosaveError(f"its field {where} names the method {value!r}, which this version does not have")
        return value


class MaskOp:
    """A mask operation, ("grow", 3) in the document, ["grow", 3] in the file."""

    def write(self, value, ref):
        return list(value)

    def read(self, value, where, load):
        if not (isinstance(value, list) and value and isinstance(value[0], str)
                and MASK_OPS.get(value[0]) == len(value) - 1):
            raise AutosaveError(f"its field {where} is not a mask operation")
        return (value[0], *(NUMBER.read(v, where, load) for v in value[1:]))


class Record:
    """A group of named fields, rebuilt as ``build(**fields)`` (a dict without ``build``).

    A field the file lacks takes the dataclass default where there is one; fields it has and
    this version does not know are ignored (a newer version may add some)."""

    def __init__(self, fields: dict, build=None):
        self.fields, self.build = fields, build
        defaults = {f.name for f in dataclasses.fields(build)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                    } if dataclasses.is_dataclass(build) else set()
        self.optional = defaults | {name for name, kind in fields.items() if isinstance(kind, Optional)}

    def write(self, value, ref):
        get = value.get if isinstance(value, dict) else lambda name: getattr(value, name)
        return {name: kind.write(get(name), ref) for name, kind in self.fields.items()}

    def read(self, value, where, load):
        if not isinstance(value, dict):
            raise _wrong(where, value, "a group of fields")
        prefix = f"{where}." if where else ""
        missing = [n for n in self.fields if n not in value and n not in self.optional]
        if missing:
            raise AutosaveError(f"it lacks {', '.join(prefix + n for n in missing)}")
        fields = {n: kind.read(value[n], prefix + n, load) for n, kind in self.fields.items() if n in value}
        return fields if self.build is None else self.build(**fields)


# ============================================================================ the records
# A new field of the document, a result or the panel is saved by adding it to its record here;
# files written before it get the dataclass default (or None where the field is Optional).


def _params_record() -> Record:
    kinds = {bool: FLAG, int: INT, float: NUMBER, str: TEXT}
    auto = Scalar((int,), "a whole number", AUTO, INT.high)  # e.g. the feather: AUTO or px
    return Record({f.name: auto if f.metadata.get("auto") else kinds[type(f.default)]
                   for f in dataclasses.fields(EditParams)}, EditParams)


PARAMS = _params_record()
PHOTO = Record({"rgb": RGB, "alpha": Optional(GREY), "path": Optional(FilePath()),
                "exif": Optional(Bytes()), "icc_profile": Optional(Bytes()), "format": Optional(TEXT),
                "warnings": ListOf(TEXT), "native": Optional(NATIVE), "colour_converted": FLAG,
                "xmp": Optional(Bytes()), "dpi": Optional(ListOf(NUMBER))}, Photo)
SEGMENT = Record({"op": Optional(MaskOp()), "added": Optional(MASK), "erased": Optional(MASK)}, Segment)
MASK_LAYERS = Record({"heatmap": Optional(MASK), "segments": ListOf(SEGMENT)}, MaskLayers)
PAINT = Record({"rgb": RGB, "coverage": MASK}, PaintLayer)
class ResultRecord(Record):
    """A history entry. Files written before entries were the engine's EditResult kept its
    metadata text instead of the model's name and LoRAs: those are read back from it."""

    def read(self, value, where, load):
        if isinstance(value, dict) and "model_name" not in value:
            saved = _saved_record(value.get("metadata"))
            model, loras = saved.get("model"), saved.get("loras")
            value = {**value, "model_name": model if isinstance(model, str) else "",
                     "loras": loras if isinstance(loras, list) else []}
        return super().read(value, where, load)


def _saved_record(metadata) -> dict:
    """The "diffedit" JSON of an old entry's metadata, or {} when there is none to read."""
    try:
        record = json.loads(metadata["diffedit"])
    except (TypeError, KeyError, ValueError, RecursionError):  # unreadable: the name stays unknown
        return {}
    return record if isinstance(record, dict) else {}


RESULT = ResultRecord({"id": INT, "group": INT, "variation": INT, "image": RGB, "mask": MASK,
                       "heatmap": Optional(MASK), "source": TEXT, "target": TEXT,
                       "params": PARAMS, "model_name": TEXT, "method": Method(),
                       "loras": ListOf(TEXT), "options": Plain(), "stats": Plain(),
                       "warnings": ListOf(TEXT), "seconds": NUMBER, "created": TIME,
                       "thumbnail": Optional(RGB)}, HistoryEntry)
DOCUMENT = Record({"photo": PHOTO, "display_name": TEXT, "base": RGB,
                   "threshold": Scalar((int, float), "a number", 0.0, 1.0), "mask": MASK_LAYERS,
                   "paint": Optional(PAINT), "history": ListOf(RESULT),
                   "preview_id": Optional(INT), "applied": ListOf(INT)})
PANEL = Record({"source": TEXT, "target": TEXT, "method": Method(), "params": PARAMS,
                "variations": Scalar((int,), "a whole number", 1, 1000), "lock_seed": FLAG,
                "options": Plain()})
SUMMARY = Record({"photo": TEXT, "entries": INT})
HEADER = Record({"format": INT, "saved": TIME, "summary": SUMMARY})


# ============================================================================ the manifest


def manifest(doc, panel: dict | None, ref, saved: float) -> dict:
    """The session as plain values; ``ref(array)`` stands for each array (an ArrayRef)."""
    return {"format": FORMAT, "app": "DiffEdit Studio", "saved": saved, "pid": os.getpid(),
            "summary": {"photo": doc.display_name, "entries": len(doc.history)},
            "unexported": doc.has_unexported_work(), "document": DOCUMENT.write(doc, ref),
            "panel": PANEL.write(panel, ref) if panel else None}


def read_header(data) -> dict:
    """The format, time and summary (photo name, entries) of a manifest, checked: quick, no arrays."""
    header = HEADER.read(data, "", None)
    if header["format"] not in (1, FORMAT):
        raise AutosaveError(f"it was written by a different version (format {header['format']})")
    return header


def read_session(data: dict, load) -> dict:
    """Every document field (as Document.restore_session takes them), "unexported" and "panel"."""
    if data["format"] == 1:
        data = from_format_1(data)
    if not isinstance(data.get("document"), dict):
        raise AutosaveError("it holds no document")
    state = DOCUMENT.read(data["document"], "", load)
    state["unexported"] = FLAG.read(data.get("unexported", False), "unexported", load)
    panel = data.get("panel")
    state["panel"] = {} if panel is None else PANEL.read(panel, "panel", load)
    _check_sizes(state)
    return state


def _check_sizes(state: dict) -> None:
    height, width = state["base"].shape[:2]
    layers = [state["mask"].heatmap] + [a for seg in state["mask"].segments for a in (seg.added, seg.erased)]
    if state["paint"] is not None:
        layers += [state["paint"].coverage, state["paint"].rgb[..., 0]]
    if any(a is not None and a.shape[:2] != (height, width) for a in layers):
        raise AutosaveError("its mask layers and its picture differ in size")
    if not state["mask"].segments or state["mask"].segments[0].op is not None:
        raise AutosaveError("its mask layers do not start with the painted layer")


# ============================================================================ format 1

# Format 1 tagged values ({"$array": name}, {"$tuple": [...]}, {"$type": "module:Class",
# "fields": {...}}); untagged dicts are fields by name.
# Its type names are compared as text with the few it ever wrote and never imported: a file
# naming anything else (engine.__main__:Photo would start the CLI) is refused.
FORMAT_1_TYPES = frozenset({"engine.imaging:Photo", "engine.params:EditParams",
                            "desktop_app.document:MaskLayers", "desktop_app.document:Segment",
                            "desktop_app.document:PaintLayer", "desktop_app.document:HistoryEntry"})


def from_format_1(data: dict) -> dict:
    """A format 1 manifest as format 2 plain values (the same field names, without the tags)."""
    state = _untag(data.get("state"), 0)
    if not isinstance(state, dict):
        raise _wrong("state", state, "a group of fields")
    panel = state.pop("panel", None)
    unexported = state.pop("unexported", False)
    return {**data, "format": FORMAT, "document": state, "panel": panel or None, "unexported": unexported}


def _untag(value, depth: int):
    if depth > MAX_DEPTH:
        raise AutosaveError(f"its contents are nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        return [_untag(v, depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    if "$type" in value:
        if value["$type"] not in FORMAT_1_TYPES:
            raise AutosaveError(f"it names the type {str(value['$type'])!r}, which is not part of a "
                                "session (nothing it names is ever loaded)")
        return _untag(value.get("fields"), depth + 1)
    if "$dict" in value:
        pairs = _untag(value["$dict"], depth + 1)
        if not (isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                                for p in pairs)):
            raise AutosaveError("its contents are damaged (a table without text keys)")
        return dict(pairs)
    for tag in ("$array", "$bytes", "$path", "$text"):  # all kept as text
        if tag in value:
            return value[tag]
    if "$tuple" in value:
        return _untag(value["$tuple"], depth + 1)
    if any(str(key).startswith("$") for key in value):
        raise AutosaveError("it holds a value of an unknown kind")
    return {key: _untag(v, depth + 1) for key, v in value.items()}  # a dataclass's fields
