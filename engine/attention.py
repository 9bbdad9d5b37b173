"""Attention control for diffusers' UNet: processors installed only on the controlled layers, restored after.

Prompt-to-Prompt and Plug-and-Play change what some attention layers compute while the source
and target branches run side by side in one batch (row 0 is the source). This module has the
pieces they share:

- ``attention_layers`` / ``decoder_layers``: where the attention and decoder layers are;
- ``QueryKeyInjection``: a self-attention processor that gives target rows the source row's
  queries and keys (so they attend like the source) and still runs torch's
  scaled_dot_product_attention, never materialising the probabilities;
- ``CrossAttentionEdit``: a cross-attention processor that computes the probabilities itself
  (tokens x pixels is small) and hands them to an edit function;
- ``installed``: a context manager that swaps processors on exactly the named layers (every
  other layer keeps its own processor object, memory-efficient attention included), adds
  forward hooks, and restores everything on exit, also on error or cancel.

Both processors delegate to the layer's original processor whenever their control says they are
idle, so an idle controlled layer computes exactly what the stock processor computes. Nothing
assumes 512 px or a 16x16 map: spatial sizes come from the sequence length and the latent shape.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionLayer:
    name: str  # the key in unet.attn_processors, e.g. "up_blocks.1.attentions.0....attn1.processor"
    module: torch.nn.Module  # diffusers' Attention
    cross: bool  # attn2 (reads the text) rather than attn1 (self-attention)
    factor: int  # how many times smaller than the latent its feature map is (1, 2, 4, 8)


@dataclass(frozen=True)
class DecoderLayer:
    """One resnet of the UNet's decoder, with the attention (transformer) module that follows it."""

    number: int  # 0-based count over all decoder resnets, in the order the UNet runs them
    block: int  # index into unet.up_blocks
    index: int  # index into that block's resnets
    resnet: torch.nn.Module
    attention: torch.nn.Module | None  # the Transformer2DModel after the resnet, if the block has one
    factor: int  # how many times smaller than the latent its feature map is (1, 2, 4, 8)


def attention_layers(unet) -> list[AttentionLayer]:
    """Every attention layer of ``unet`` with its processor key and feature-map level."""
    factors = level_factors(unet)
    layers = []
    for name, module in unet.named_modules():
        if hasattr(module, "set_processor") and hasattr(module, "processor"):
            block = ".".join(name.split(".")[:2]) if not name.startswith("mid_block") else "mid_block"
            layers.append(AttentionLayer(f"{name}.processor", module,
                                         bool(getattr(module, "is_cross_attention", False)),
                                         factors.get(block, 1)))
    return layers


def level_factors(unet) -> dict[str, int]:
    """Each block's downsampling factor relative to the latent, from where the UNet's
    downsamplers and upsamplers are (so it holds at any resolution)."""
    factors, factor = {}, 1
    for index, block in enumerate(unet.down_blocks):
        factors[f"down_blocks.{index}"] = factor
        if getattr(block, "downsamplers", None):
            factor *= 2
    factors["mid_block"] = factor
    for index, block in enumerate(unet.up_blocks):
        factors[f"up_blocks.{index}"] = factor
        if getattr(block, "upsamplers", None):
            factor //= 2
    return factors


def decoder_layers(unet) -> list[DecoderLayer]:
    """The decoder's resnet layers in execution order (SD 1.x/2.x: 4 blocks x 3 = 12 layers)."""
    factors = level_factors(unet)
    layers = []
    for block_index, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None) or []
        for index, resnet in enumerate(block.resnets):
            attention = attentions[index] if index < len(attentions) else None
            layers.append(DecoderLayer(len(layers), block_index, index, resnet, attention,
                                       factors[f"up_blocks.{block_index}"]))
    return layers


def self_attention_names(module: torch.nn.Module, prefix: str) -> list[str]:
    """Processor keys of the self-attention layers (attn1) inside ``module`` named ``prefix``."""
    return [f"{prefix}.{name}.processor" for name, sub in module.named_modules()
            if hasattr(sub, "set_processor") and not getattr(sub, "is_cross_attention", False)]


def spatial_size(tokens: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an attention layer's feature map holding ``tokens`` pixels, for a (H, W) latent.

    The UNet halves each side per level, rounding up (stride-2 convolutions with padding), so
    the level is found by trying factors 1, 2, 4, ... until the sizes multiply to ``tokens``.
    """
    height, width = latent_size
    factor = 1
    while factor <= max(height, width):
        h, w = -(-height // factor), -(-width // factor)
        if h * w == tokens:
            return h, w
        factor *= 2
    raise ValueError(f"{tokens} attention tokens match no level of a {height}x{width} latent")


@contextmanager
def installed(unet, processors: dict[str, object],
              hooks: Iterable[tuple[torch.nn.Module, Callable]] = ()) -> Iterator[None]:
    """Use ``processors`` (by processor key) and forward ``hooks`` inside the block only.

    Every other layer keeps its own processor object. On exit (normally, on error, on
    Cancelled) the original processors come back and the hooks are removed.
    """
    saved = unet.attn_processors
    unknown = sorted(set(processors) - set(saved))
    if unknown:
        raise KeyError(f"no attention layer named {unknown[0]}")
    handles = []
    try:
        unet.set_attn_processor({**saved, **processors})  # set_attn_processor consumes its dict
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        unet.set_attn_processor(dict(saved))


# ---- processors -----------------------------------------------------------------------------

class _Projected:
    """Queries, keys and values of one attention call, split into heads, plus what is needed to
    finish the call the way diffusers' own processor does."""

    def __init__(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb):
        self.attn = attn
        self.residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        self.shape4 = None
        if hidden_states.ndim == 4:
            self.shape4 = hidden_states.shape
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, context_length, _ = context.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        self.mask = attention_mask
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        self.head_dim = key.shape[-1] // attn.heads
        self.batch = batch

        def heads(x):
            return x.view(batch, -1, attn.heads, self.head_dim).transpose(1, 2)

        self.query, self.key, self.value = heads(query), heads(key), heads(value)
        if attn.norm_q is not None:
            self.query = attn.norm_q(self.query)
        if attn.norm_k is not None:
            self.key = attn.norm_k(self.key)

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """(batch, heads, tokens, head_dim) attention output -> the layer's output."""
        attn = self.attn
        out = out.transpose(1, 2).reshape(self.batch, -1, attn.heads * self.head_dim)
        out = attn.to_out[1](attn.to_out[0](out.to(self.query.dtype)))
        if self.shape4 is not None:
            out = out.transpose(-1, -2).reshape(self.shape4)
        if attn.residual_connection:
            out = out + self.residual
        return out / attn.rescale_output_factor


class QueryKeyInjection:
    """Self-attention where target rows use the source row's queries and keys.

    ``pairs(tokens)`` returns [(target_row, source_row), ...] for the current call (``tokens``:
    the layer's number of pixels), or an empty list when the layer is idle (then the original
    processor runs). softmax(q_s k_s^T) v_t equals
    "the source's attention probabilities applied to the target's values", computed by
    scaled_dot_product_attention without storing the probabilities.
    """

    def __init__(self, original, pairs: Callable[[int], list[tuple[int, int]]]):
        self.original = original
        self.pairs = pairs

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        tokens = hidden_states.shape[1] if hidden_states.ndim == 3 else \
            hidden_states.shape[2] * hidden_states.shape[3]
        pairs = self.pairs(tokens)
        if not pairs:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                 *args, **kwargs)
        p = _Projected(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        query, key = p.query.clone(), p.key.clone()
        for target, source in pairs:
            query[target] = p.query[source]
            key[target] = p.key[source]
        out = F.scaled_dot_product_attention(query, key, p.value, attn_mask=p.mask, dropout_p=0.0,
                                             is_causal=False)
        return p.finish(out)


class CrossAttentionEdit:
    """Cross-attention that computes its probabilities so that ``edit`` can change them.

    ``edit(probs)`` receives (batch, heads, pixels, tokens) float32 probabilities and returns
    the probabilities to use, or it is not called at all when ``active()`` is False (then the
    original processor runs).
    """

    def __init__(self, original, active: Callable[[], bool],
                 edit: Callable[[torch.Tensor], torch.Tensor]):
        self.original = original
        self.active = active
        self.edit = edit

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if not self.active():
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                 *args, **kwargs)
        p = _Projected(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        scores = (p.query.float() @ p.key.float().transpose(-1, -2)) * attn.scale
        if p.mask is not None:
            scores = scores + p.mask.float()
        probs = self.edit(scores.softmax(dim=-1))
        return p.finish(probs.to(p.value.dtype) @ p.value)
