"""FLUX.2 klein (4B and 9B; step-distilled or base): a Qwen3 text encoder read at three layers,
the FLUX.2 VAE with 2x2 latent patches and batch-norm latent statistics, a flow transformer over
packed latent tokens, as diffusers' Flux2KleinPipeline drives them.

- Text (``Flux2KleinPipeline._get_qwen3_prompt_embeds``): the prompt in Qwen's chat template
  (thinking off), padded to 512 tokens; hidden states 9, 18 and 27 stacked along the features
  (3 x 2560 = 7680 for klein 4B); the text ids (0, 0, 0, token index) ride in
  ``Conditioning.extra``. The empty text is the unconditional branch, as the pipeline's.
- Latents: the VAE's mean (the pipeline's argmax), patchified 2x2 (32 -> 128 channels, 16 px per
  cell) and normalised by the VAE's batch-norm running statistics. Methods see that grid as
  (1, 128, h/16, w/16); ``predict`` packs it into h*w tokens with their (0, row, column, 0) ids.
- Schedule: sigmas linspace(1, 1/steps, steps) shifted by the pipeline's empirical mu (from the
  image token count and the step count).
- Reference images (``with_reference``, the ``instruct`` method): the photo's latent packed as
  extra tokens after the latent's, with position ids (10, row, column, 0), as the pipeline's
  ``prepare_image_latents`` gives its first ``image=``; they ride in ``Conditioning.extra``, so
  every prediction under that conditioning sees them, and only the latent's tokens come back.
- Guidance: a distilled klein (``is_distilled`` in model_index.json, klein 4B/9B) has it built in
  and samples without CFG, in 4 steps; a base klein takes true CFG (4.0 over 50 steps).
"""

from __future__ import annotations

import numpy as np
import torch

from engine import dit_attention
from engine.backbones.base import Conditioning, distilled_defaults
from engine.backbones.flow import ATTENTION_METHODS, FLOW_METHODS, PatchedFlowBackbone
from engine.backbones.vae import to_uint8, unit_range

FAMILIES = ("flux2-klein",)
TEXT_LAYERS = (9, 18, 27)  # the pipeline's text_encoder_out_layers
MAX_TEXT_TOKENS = 512  # the pipeline's max_sequence_length
REFERENCE_TIME = 10  # the first reference image's time id (the pipeline's _prepare_image_ids)


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) VAE latents -> (B, 4C, H/2, W/2): each 2x2 patch's values as channels."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return patches.reshape(b, c * 4, h // 2, w // 2)


def unpatchify(latents: torch.Tensor) -> torch.Tensor:
    """The inverse of ``patchify``."""
    b, c, h, w = latents.shape
    patches = latents.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return patches.reshape(b, c // 4, h * 2, w * 2)


def pack(latents: torch.Tensor, time: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, h, w) -> ((B, h*w, C) tokens in row-major order, (B, h*w, 4) their position ids
    (``time``, row, column, 0))."""
    b, c, h, w = latents.shape
    ids = torch.cartesian_prod(torch.tensor([time]), torch.arange(h), torch.arange(w),
                               torch.arange(1))
    return latents.reshape(b, c, h * w).permute(0, 2, 1), ids.expand(b, -1, -1).to(latents.device)


def unpack(tokens: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """The inverse of ``pack``'s tokens."""
    b, _, c = tokens.shape
    return tokens.permute(0, 2, 1).reshape(b, c, rows, columns)


def compute_mu(image_tokens: int, steps: int) -> float:
    """The pipeline's empirical shift (diffusers' flux2 ``compute_empirical_mu``)."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    return compute_empirical_mu(image_seq_len=image_tokens, num_steps=steps)


class Flux2Klein(PatchedFlowBackbone):
    title = "FLUX.2 klein"
    methods = FLOW_METHODS | {"instruct"} | ATTENTION_METHODS

    @property
    def family_distilled(self) -> bool:
        return bool(self.model.distilled)

    @property
    def family_defaults(self) -> dict:
        """The step count and guidance the pipeline's users run each kind at."""
        return distilled_defaults(4) if self.family_distilled else {"steps": 50, "guidance": 4.0}

    # ---- text

    def chat(self, text: str) -> str:
        """The prompt in Qwen's chat template, as the pipeline gives it to the text encoder."""
        return self.model.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True,
            enable_thinking=False)

    @torch.no_grad()
    def encode_text(self, text: str) -> tuple[Conditioning, str | None]:
        model = self.model
        tokenizer = model.tokenizer
        chat = self.chat(text)
        note = None
        if len(tokenizer(chat).input_ids) > MAX_TEXT_TOKENS:
            note = (f"the prompt is longer than the text encoder's {MAX_TEXT_TOKENS} tokens; "
                    "its end was ignored")
        tokens = tokenizer(chat, return_tensors="pt", padding="max_length", truncation=True,
                           max_length=MAX_TEXT_TOKENS)
        out = model.text_encoder(input_ids=tokens.input_ids.to(model.device),
                                 attention_mask=tokens.attention_mask.to(model.device),
                                 output_hidden_states=True, use_cache=False)
        layers = torch.stack([out.hidden_states[k] for k in TEXT_LAYERS], dim=1)  # (1, 3, L, D)
        embeds = layers.permute(0, 2, 1, 3).reshape(1, MAX_TEXT_TOKENS, -1).float()
        ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1),
                                   torch.arange(MAX_TEXT_TOKENS))
        return Conditioning(embeds, extra={"text_ids": ids[None].to(model.device)}), note

    def with_reference(self, cond: Conditioning, reference: torch.Tensor) -> Conditioning:
        """``cond`` with the (1, C, h, w) latent ``reference`` as the model's reference image."""
        tokens, ids = pack(reference, REFERENCE_TIME)
        return Conditioning(cond.embeds, cond.pooled,
                            {**cond.extra, "reference": tokens, "reference_ids": ids})

    # ---- latents

    def _statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the patchified latents: the VAE's batch-norm running statistics."""
        vae = self.model.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        return mean, std.to(like.device, like.dtype)

    @torch.no_grad()
    def encode_image(self, pixels: np.ndarray) -> torch.Tensor:
        vae = self.model.vae
        latents = vae.encode(unit_range(pixels, self.model.device).to(vae.dtype)).latent_dist.mode()
        latents = patchify(latents.float())
        mean, std = self._statistics(latents)
        return (latents - mean) / std

    def to_vae_latents(self, latent: torch.Tensor) -> torch.Tensor:
        """A normalised patch grid -> the VAE's (B, C, H, W) latents (the pipeline's "latent"
        output)."""
        mean, std = self._statistics(latent)
        return unpatchify(latent * std + mean)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> np.ndarray:
        vae = self.model.vae
        return to_uint8(vae.decode(self.to_vae_latents(latent.float()).to(vae.dtype)).sample)

    # ---- sampling

    def mu(self, image_tokens: int, steps: int) -> float:
        return compute_mu(image_tokens, steps)

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **kwargs) -> torch.Tensor:
        model = self.model
        dtype = model.dtype
        rows, columns = latents.shape[-2:]
        tokens, image_ids = pack(latents.to(dtype))
        if "reference" in cond.extra:  # after the latent's tokens, as the pipeline orders them
            tokens = torch.cat([tokens, cond.extra["reference"].to(dtype)], dim=1)
            image_ids = torch.cat([image_ids, cond.extra["reference_ids"]], dim=1)
        batch = latents.shape[0]
        # As the pipeline: the timestep in the latents' dtype, then scaled to [0, 1].
        times = torch.full((batch,), float(timestep), device=model.device).to(dtype) / 1000
        out = model.transformer(hidden_states=tokens, timestep=times, guidance=None,
                                encoder_hidden_states=cond.embeds.to(dtype),
                                txt_ids=cond.extra["text_ids"], img_ids=image_ids,
                                return_dict=False, **kwargs)[0]
        return unpack(out[:, : rows * columns].float(), rows, columns)

    # ---- attention (engine.dit_attention): text tokens first, then the latent's, as predict
    #      orders them (the reference image's after those)

    def token_layout(self, latent: torch.Tensor, cond: Conditioning) -> dict:
        text = cond.embeds.shape[1]
        layout = dit_attention.Layout(slice(0, text), slice(text, text + latent[0, 0].numel()))
        return dict.fromkeys(dit_attention.attention_layers(self.model.transformer), layout)

    def word_positions(self, text: str) -> list[tuple[str, tuple[int, ...]]]:
        return dit_attention.word_positions(self.model.tokenizer, self.chat, text, MAX_TEXT_TOKENS)
