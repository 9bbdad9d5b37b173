"""Attention control for diffusion transformers: image-to-text attention maps and image key/value injection.

Prompt-to-Prompt's local blend and Plug-and-Play's successor on flow transformers (KV-Edit,
Stable Flow) need two things from joint attention, where the text tokens and the image tokens
of one batch row attend to each other in one softmax:

- record, for chosen text tokens, the probability that each image query gives them (averaged
  over the heads, summed over the layers and steps it is recorded in);
- give target rows the image tokens' keys and values of a source row (rows of one batch, so
  the source's are at hand in the same call and nothing is stored between calls).

diffusers' processors compute their queries, keys and values (projections, norms, rotary
embeddings: all family-specific) and hand them to ``attention_dispatch.dispatch_attention_fn``.
``controlled`` wraps the processors of the layers it controls so that, during its own call only,
that function of the processor's module goes through ``Control.attend``: the processors
themselves run unchanged, and with nothing to record or inject ``attend`` calls the original
function with the original arguments, so the output is the stock processor's. The wrappers and
the module function are restored on exit, also on error or cancel. A family whose processors
compute attention some other way (SD3's call torch's scaled_dot_product_attention directly) is
refused by name.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

DISPATCH = "dispatch_attention_fn"  # the name diffusers' processors call attention by
SCORE_BUDGET = 2**26  # float32 scores computed at once while recording (256 MB)

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("dit_attention", default=None)
_LOCK = threading.Lock()
# The dispatch function's signature, read once: recording binds every layer's call to it
_signature = functools.lru_cache(maxsize=None)(inspect.signature)
_PATCHED: dict = {}  # module -> [its original dispatch function, runs using the patch]


@dataclass(frozen=True)
class Layout:
    """Where a batch row's text and image tokens sit in one layer's attention sequence (text
    None: a layer of image tokens only). ``rotary``: the processor's keyword that holds the
    rotary factors its keys were turned by, complex, one per pair of adjacent features (Z-Image's
    freqs_cis), when an image token's position differs between rows (Z-Image numbers the image
    after the caption); None when it does not (FLUX.2)."""

    text: slice | None
    image: slice
    rotary: str | None = None


class Control:
    """What the controlled layers do in the next model calls (the sampler sets it per step).

    ``layouts``: processor key -> the layer's Layout, for the layers controlled. ``inject``:
    (target row, source row) pairs; the target row's image keys and values are the source
    row's. ``record``: row -> token positions counted from the first text token, whose
    attention from the row's image queries is added to ``maps[row]`` (image tokens,) in the
    layers that have text; ``recorded`` counts the layer calls added.
    """

    def __init__(self, layouts: dict[str, Layout]):
        self.layouts = layouts
        self.inject: list[tuple[int, int]] = []
        self.record: dict[int, tuple[int, ...]] = {}
        self.maps: dict[int, torch.Tensor] = {}
        self.recorded = 0

    def active(self, layer: str, call: dict) -> "_Layer | None":
        """What attends for ``layer`` in this call (``call``: the processor's keyword
        arguments), or None when it runs as it is."""
        layout = self.layouts.get(layer)
        if layout is None or not (self.inject or (self.record and layout.text is not None)):
            return None
        return _Layer(self, layout, call.get(layout.rotary) if layout.rotary else None)


@dataclass(frozen=True)
class _Layer:
    control: Control
    layout: Layout
    rotary: torch.Tensor | None  # (batch, tokens, head_dim / 2) complex: Layout.rotary's

    def attend(self, dispatch, query, key, value, *args, **kwargs) -> torch.Tensor:
        """``dispatch`` (query, key, value: (batch, tokens, heads, head_dim)) with this call's
        injection, recording the probabilities ``dispatch`` computes."""
        control, image = self.control, self.layout.image
        if control.inject:
            key, value = key.clone(), value.clone()
            for target, source in control.inject:
                key[target, image] = self._moved(key[source, image], source, target)
                value[target, image] = value[source, image]
        out = dispatch(query, key, value, *args, **kwargs)
        if control.record and self.layout.text is not None:
            bound = _signature(dispatch).bind(query, key, value, *args, **kwargs).arguments
            self._add(query, key, bound.get("attn_mask"), bound.get("scale"))
        return out

    def _moved(self, keys: torch.Tensor, source: int, target: int) -> torch.Tensor:
        """The source row's image ``keys`` (tokens, heads, dim) turned to the target row's
        positions: what they would be had the source's tokens sat where the target's do."""
        if self.rotary is None:
            return keys
        image = self.layout.image
        if torch.equal(self.rotary[target, image], self.rotary[source, image]):
            return keys  # the same positions (texts of one padded length)
        turn = self.rotary[target, image] * self.rotary[source, image].conj()
        pairs = torch.view_as_complex(keys.float().reshape(*keys.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * turn[:, None]).flatten(-2).type_as(keys)

    def _add(self, query, key, mask, scale) -> None:
        """Add each recorded row's image-query probabilities on its positions (mean over heads)."""
        control, image, start = self.control, self.layout.image, self.layout.text.start
        heads, tokens = query.shape[2], key.shape[1]
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        chunk = max(1, SCORE_BUDGET // (heads * tokens))
        for row, positions in control.record.items():
            positions = [start + p for p in positions]
            queries = query[row, image].transpose(0, 1).float()  # (heads, image tokens, dim)
            keys = key[row].transpose(0, 1).float()
            if keys.shape[0] != heads:  # grouped-query attention: keys shared by query heads
                keys = keys.repeat_interleave(heads // keys.shape[0], dim=0)
            total = torch.empty(queries.shape[1], device=query.device)
            for first in range(0, queries.shape[1], chunk):
                scores = (queries[:, first:first + chunk] @ keys.transpose(1, 2)) * scale
                scores = _masked(scores, mask, row, image, first, chunk)
                probs = scores.softmax(dim=-1)[..., positions]
                total[first:first + chunk] = probs.sum(-1).mean(0)
            control.maps[row] = control.maps[row] + total if row in control.maps else total
        control.recorded += 1


def _masked(scores, mask, row, image, start, chunk):
    """``scores`` (heads, queries, keys) with the row's attention mask (bool: True attends;
    float: added), as scaled_dot_product_attention applies it."""
    if mask is None:
        return scores
    mask = mask[row] if mask.shape[0] > 1 else mask[0]
    while mask.ndim < 3:
        mask = mask[None]
    if mask.shape[-2] > 1:  # per query: the image queries of this chunk
        mask = mask[..., image, :][..., start:start + chunk, :]
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask.float()


class _Wrapped:
    """A layer's own processor, run with ``control`` attending for it."""

    def __init__(self, original, control: Control, layer: str):
        self.original = original
        self.control = control
        self.layer = layer
        # diffusers hands a processor only the keyword arguments its __call__ names (Z-Image's
        # freqs_cis): the instance's __call__ says the original's signature.
        self.__call__ = functools.wraps(original.__call__)(functools.partial(_Wrapped.__call__, self))

    def __call__(self, attn, *args, **kwargs):
        token = _CURRENT.set(self.control.active(self.layer, kwargs))
        try:
            return self.original(attn, *args, **kwargs)
        finally:
            _CURRENT.reset(token)


def _dispatcher(original):
    def dispatch(query, key, value, *args, **kwargs):
        layer = _CURRENT.get()
        if layer is None:  # idle, or outside a controlled layer (another thread, another model)
            return original(query, key, value, *args, **kwargs)
        return layer.attend(original, query, key, value, *args, **kwargs)
    return dispatch


def attention_layers(transformer) -> dict[str, torch.nn.Module]:
    """The transformer's attention modules (those with a diffusers processor) by name."""
    return {name: module for name, module in transformer.named_modules()
            if hasattr(module, "set_processor") and hasattr(module, "processor")}


def _code_modules(layers: dict) -> set:
    """The Python modules of the layers' processors; ValueError for a processor that does not
    compute attention through diffusers' dispatch function."""
    modules = set()
    for name, layer in layers.items():
        module = sys.modules[type(layer.processor).__module__]
        if not callable(getattr(module, DISPATCH, None)):
            raise ValueError(f"{type(layer.processor).__name__} (layer {name}) computes "
                             f"attention without diffusers' {DISPATCH}, so its attention cannot "
                             "be recorded or injected")
        modules.add(module)
    return modules


@contextmanager
def controlled(transformer, control: Control) -> Iterator[None]:
    """Inside the block, the attention layers ``control`` has layouts for run under it; their
    own processors come back on exit."""
    every = attention_layers(transformer)
    layers = {name: every[name] for name in control.layouts}
    saved = {name: layer.processor for name, layer in layers.items()}
    modules = _code_modules(layers)
    _patch(modules)
    try:
        for name, layer in layers.items():
            layer.set_processor(_Wrapped(saved[name], control, name))
        yield
    finally:
        for name, layer in layers.items():
            layer.set_processor(saved[name])
        _unpatch(modules)


def _patch(modules) -> None:
    with _LOCK:
        for module in modules:
            entry = _PATCHED.setdefault(module, [getattr(module, DISPATCH), 0])
            if entry[1] == 0:
                setattr(module, DISPATCH, _dispatcher(entry[0]))
            entry[1] += 1


def _unpatch(modules) -> None:
    with _LOCK:
        for module in modules:
            entry = _PATCHED[module]
            entry[1] -= 1
            if entry[1] == 0:
                setattr(module, DISPATCH, entry[0])
                del _PATCHED[module]


def word_positions(tokenizer, template, text: str, limit: int) -> list[tuple[str, tuple[int, ...]]]:
    """Each word of ``text`` (split on white space) with its token positions in the encoder's
    sequence for ``template(text)`` (the prompt as the family wraps it: a chat template), cut
    at ``limit`` tokens as the encoder cuts it. Words cut off entirely are left out."""
    sentinel = "\x00"
    start = template(sentinel).index(sentinel)  # the template puts the text there verbatim
    chat = template(text)
    offsets = tokenizer(chat, return_offsets_mapping=True, truncation=True,
                        max_length=limit).offset_mapping
    words = []
    for match in re.finditer(r"\S+", text):
        low, high = start + match.start(), start + match.end()
        positions = tuple(i for i, (a, b) in enumerate(offsets) if a < high and b > low)
        if positions:
            words.append((match.group(), positions))
    return words
