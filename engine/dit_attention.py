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
``controlled`` wraps each of a transformer's processors so that, during its own call only,
that function of the processor's module goes through ``Control.attend``: the processors
themselves run unchanged, and with nothing to record or inject ``attend`` calls the original
function with the original arguments, so the output is the stock processor's. The wrappers and
the module function are restored on exit, also on error or cancel. A family whose processors
compute attention some other way (SD3's call torch's scaled_dot_product_attention directly) is
refused by name.
"""

from __future__ import annotations

import contextvars
import inspect
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from engine import attention

DISPATCH = "dispatch_attention_fn"  # the name diffusers' processors call attention by
SCORE_BUDGET = 2**26  # float32 scores computed at once while recording (256 MB)

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("dit_attention", default=None)
_LOCK = threading.Lock()
_PATCHED: dict = {}  # module -> [its original dispatch function, runs using the patch]


@dataclass(frozen=True)
class Layout:
    """Where a batch row's text and image tokens sit in the joint attention sequence."""

    text: slice
    image: slice


class Control:
    """What the controlled layers do in the next model calls (the sampler sets it per step).

    ``inject``: (target row, source row) pairs; the target row's image keys and values are the
    source row's. ``record``: row -> positions in the joint sequence whose attention from the
    row's image queries is added to ``maps[row]`` (image tokens,), ``recorded`` counting the
    layer calls added. ``layers``: processor keys controlled (None: every layer).
    """

    def __init__(self, layout: Layout, layers: set[str] | None = None):
        self.layout = layout
        self.layers = layers
        self.inject: list[tuple[int, int]] = []
        self.record: dict[int, tuple[int, ...]] = {}
        self.maps: dict[int, torch.Tensor] = {}
        self.recorded = 0

    def idle(self, layer: str) -> bool:
        return (not self.inject and not self.record) or (
            self.layers is not None and layer not in self.layers)

    def attend(self, dispatch, query, key, value, *args, **kwargs) -> torch.Tensor:
        """``dispatch`` (query, key, value: (batch, tokens, heads, head_dim)) with this call's
        injection, recording the probabilities ``dispatch`` computes."""
        image = self.layout.image
        if self.inject:
            key, value = key.clone(), value.clone()
            for target, source in self.inject:
                key[target, image] = key[source, image]
                value[target, image] = value[source, image]
        out = dispatch(query, key, value, *args, **kwargs)
        if self.record:
            bound = inspect.signature(dispatch).bind(query, key, value, *args, **kwargs).arguments
            self._add(query, key, bound.get("attn_mask"), bound.get("scale"))
        return out

    def _add(self, query, key, mask, scale) -> None:
        """Add each recorded row's image-query probabilities on its positions (mean over heads)."""
        image = self.layout.image
        heads, tokens = query.shape[2], key.shape[1]
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        chunk = max(1, SCORE_BUDGET // (heads * tokens))
        for row, positions in self.record.items():
            queries = query[row, image].transpose(0, 1).float()  # (heads, image tokens, dim)
            keys = key[row].transpose(0, 1).float()
            if keys.shape[0] != heads:  # grouped-query attention: keys shared by query heads
                keys = keys.repeat_interleave(heads // keys.shape[0], dim=0)
            total = torch.empty(queries.shape[1], device=query.device)
            for start in range(0, queries.shape[1], chunk):
                scores = (queries[:, start:start + chunk] @ keys.transpose(1, 2)) * scale
                scores = _masked(scores, mask, row, image, start, chunk)
                probs = scores.softmax(dim=-1)[..., list(positions)]
                total[start:start + chunk] = probs.sum(-1).mean(0)
            self.maps[row] = self.maps[row] + total if row in self.maps else total
        self.recorded += 1


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

    def __call__(self, attn, *args, **kwargs):
        token = _CURRENT.set(None if self.control.idle(self.layer) else self.control)
        try:
            return self.original(attn, *args, **kwargs)
        finally:
            _CURRENT.reset(token)


def _dispatcher(original):
    def dispatch(query, key, value, *args, **kwargs):
        control = _CURRENT.get()
        if control is None:  # outside a controlled layer (another thread, another model)
            return original(query, key, value, *args, **kwargs)
        return control.attend(original, query, key, value, *args, **kwargs)
    return dispatch


def processor_modules(transformer) -> set:
    """The modules of the transformer's processors; ValueError for one that does not compute
    attention through diffusers' dispatch function."""
    modules = set()
    for name, processor in transformer.attn_processors.items():
        module = sys.modules[type(processor).__module__]
        if not callable(getattr(module, DISPATCH, None)):
            raise ValueError(f"{type(processor).__name__} (layer {name}) computes attention "
                             f"without diffusers' {DISPATCH}, so its attention cannot be "
                             "recorded or injected")
        modules.add(module)
    return modules


@contextmanager
def controlled(transformer, control: Control) -> Iterator[None]:
    """Inside the block, every attention layer of ``transformer`` runs under ``control``."""
    modules = processor_modules(transformer)
    saved = transformer.attn_processors
    wrapped = {name: _Wrapped(processor, control, name) for name, processor in saved.items()}
    _patch(modules)
    try:
        with attention.installed(transformer, wrapped):
            yield
    finally:
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
