"""What every flow-matching backbone (FLUX.2 klein, SD3.5, Z-Image, Qwen-Image-Edit) shares:
velocity prediction, the flow schedule with the family's shift, the methods that run on it and
its guidance rule.

A flow family subclasses ``FlowBackbone`` and implements, besides the Backbone basics
(``encode_text``, ``encode_image``, ``decode``, ``predict`` returning the velocity in float32,
``family``, ``title``, ``latent_factor``, ``native_area``, ``size_multiple``):

- ``scheduler_config``: the model's scheduler config (a FlowMatchEulerDiscreteScheduler's);
- ``sigmas(steps)``: the sigmas its pipeline hands ``set_timesteps`` (None: the scheduler's own
  spacing, as SD3's pipeline; FLUX pipelines pass linspace(1, 1/steps, steps));
- ``mu(image_tokens, steps)``: the dynamic shift its pipeline computes (the default is diffusers'
  ``calculate_shift`` from the scheduler config, used when ``use_dynamic_shifting`` is set);
- ``image_tokens(latent_size)``: the transformer's sequence length for a latent grid (default: one
  token per latent cell);
- ``family_distilled`` and ``family_defaults``: a step-distilled model samples with guidance 1
  (see EditSession.run) and its own step count, with ``distilled_defaults``' mask samples.

The live preview maps latents linearly to RGB with a map fitted once to the model's own VAE
(engine.preview.fit_rgb_map): no per-family table to keep.

The methods see latents as (1, C, rows, cols) grids at ``latent_factor`` pixels per cell, in the
space the model's noise is standard normal in (a family's packing and latent normalisation live
in its encode_image/decode/predict), so masks, blending and paste-back carry over unchanged.
"""

from __future__ import annotations

import numpy as np

from engine.backbones.base import Backbone
from engine.flow import FlowSchedule

FLOW_METHODS = frozenset({"diffedit", "blended", "sdedit", "flowedit"})
# Prompt-to-Prompt's local blend and key/value injection (engine.methods.dit): on the families
# whose backbone offers the attention seam (token_layout, word_positions, controlled).
ATTENTION_METHODS = frozenset({"p2p", "pnp"})
# Their UNet options without a joint-attention counterpart (engine.methods.dit says why): runs
# ignore them with a warning and the app hides them.
ATTENTION_UNUSED_OPTIONS = {"p2p": ("mode", "reweight_words", "reweight_scale", "cross_fraction"),
                            "pnp": ("feature_fraction",)}


class FlowBackbone(Backbone):
    prediction_type = "flow"
    methods = FLOW_METHODS

    @property
    def unused_options(self) -> dict[str, frozenset[str]]:
        """The UNet-only options of Prompt-to-Prompt and Plug-and-Play (word swap, re-weighting,
        decoder features): joint attention has no counterpart."""
        return {name: frozenset(options) for name, options in ATTENTION_UNUSED_OPTIONS.items()
                if name in self.methods}

    def preview(self, latents, content=None):
        from engine.preview import fit_rgb_map, mapped_preview

        model = self.model
        rgb_map = getattr(model, "preview_map", None)
        if rgb_map is None:  # fitted once per loaded model (one small VAE encode)
            rgb_map = model.preview_map = fit_rgb_map(self.encode_image, self.latent_factor)
        return mapped_preview(latents, rgb_map, content)

    @property
    def scheduler_config(self) -> dict:
        return self.model.scheduler_config

    def schedule(self, steps: int, latent_size: tuple[int, int] | None = None) -> FlowSchedule:
        if latent_size is None:  # no geometry given: the native square
            side = self.native_side // self.latent_factor
            latent_size = (side, side)
        return FlowSchedule.from_config(self.scheduler_config, steps, sigmas=self.sigmas(steps),
                                        mu=self.mu(self.image_tokens(latent_size), steps))

    def sigmas(self, steps: int):
        """The sigmas the family's pipeline passes to ``set_timesteps`` (None: the scheduler's)."""
        return None

    def mu(self, image_tokens: int, steps: int) -> float | None:
        """The dynamic shift for ``image_tokens``: diffusers' ``calculate_shift`` over the
        scheduler config's base/max sequence lengths and shifts; None for a fixed shift."""
        config = self.scheduler_config
        if not config.get("use_dynamic_shifting"):
            return None
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        return calculate_shift(image_tokens, config.get("base_image_seq_len", 256),
                               config.get("max_image_seq_len", 4096),
                               config.get("base_shift", 0.5), config.get("max_shift", 1.15))

    def image_tokens(self, latent_size: tuple[int, int]) -> int:
        """The transformer's image sequence length for a (columns, rows) latent grid."""
        return latent_size[0] * latent_size[1]

    # ---- attention (the families with ATTENTION_METHODS): a subclass gives
    #      token_layout(latent, cond) -> {processor key: engine.dit_attention.Layout} of the
    #      layers to control and word_positions(text) -> [(word, token positions)]

    def controlled(self, control):
        """A context manager: the transformer's layers under ``control`` inside it."""
        from engine import dit_attention

        return dit_attention.controlled(self.model.transformer, control)


class PatchedFlowBackbone(FlowBackbone):
    """A flow family whose transformer reads 2x2 latent patches as channels (FLUX.2 klein,
    FLUX.1 Kontext, Qwen-Image-Edit): the methods see the patch grid, two VAE cells per side."""

    @property
    def latent_factor(self) -> int:
        return self.model.vae_scale_factor * 2

    @property
    def size_multiple(self) -> int:
        return self.latent_factor

    def sigmas(self, steps: int):
        """These pipelines' own: linspace(1, 1/steps, steps), then their shift (``mu``)."""
        return np.linspace(1.0, 1 / steps, steps)
