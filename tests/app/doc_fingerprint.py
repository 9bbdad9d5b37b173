"""A comparable summary of a Document (every array hashed, every value kept): for the autosave tests."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np


def _value(value):
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return f"array {value.dtype} {value.shape} {digest}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _value(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return "bytes " + hashlib.sha256(value).hexdigest()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def fingerprint(doc) -> dict:
    """Photo (pixels, alpha, EXIF, ICC, path), base, mask layers and composed mask, paint, history
    (every field of every entry), what is shown and applied, and the unexported-work flag."""
    return {
        "photo": _value(doc.photo), "display_name": doc.display_name, "base": _value(doc.base),
        "threshold": doc.threshold, "heatmap": _value(doc.mask.heatmap),
        "segments": _value(doc.mask.segments), "composed": _value(doc.composed),
        "paint": _value(getattr(doc, "paint", None)),  # the scribble layer, where there is one
        "history": _value(doc.history), "preview_id": doc.preview_id,
        "applied": list(doc.applied), "unexported": doc.has_unexported_work(),
    }
