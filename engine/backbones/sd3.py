"""SD3.5 (Medium, Large, Large Turbo): three text encoders, an MMDiT predicting the flow velocity.

Text conditioning follows ``StableDiffusion3Pipeline.encode_prompt``: the penultimate hidden
states of CLIP-L and CLIP-G (77 tokens each) concatenated along the features and zero-padded to
the T5 encoder's width, followed along the sequence by T5's last hidden states (256 tokens): 333
tokens in all; the pooled vector is the two CLIP projections side by side. The empty text is
encoded like any other, as the pipeline's unconditional branch is.

The transformer's output is the velocity u = eps - x0 itself (the pipeline hands it to the Euler
scheduler unchanged), read at the scheduler's timestep: the flow time times 1000.
"""

from __future__ import annotations

import torch

from engine.backbones.base import Conditioning, distilled_defaults
from engine.backbones.dit import DiffusionTransformer

FAMILIES = ("sd3",)
T5_TOKENS = 256  # the pipeline's max_sequence_length default


def too_long_note(tokenizer, text: str, limit: int, whose: str) -> str | None:
    """What a text longer than ``limit`` tokens loses (its end), or None; ``whose``: the
    encoder, possessive ("the T5 text encoder's")."""
    ids = tokenizer(text, truncation=False).input_ids
    if len(ids) <= limit:
        return None
    # the last id is the end-of-text token the tokenizer appends, not part of the text
    dropped = tokenizer.decode(ids[limit - 1:-1], skip_special_tokens=True)
    return f"the prompt is longer than {whose} {limit} tokens; ignored: \"{dropped}\""


class StableDiffusion3(DiffusionTransformer):
    family = "sd3"
    title = "SD3.5"

    @property
    def patch_size(self) -> int:
        return int(self.model.transformer.config.patch_size)

    @property
    def family_distilled(self) -> bool:
        """SD3.5 Large Turbo (told apart by name): 4 steps with its guidance built in."""
        return "turbo" in self.model.source.lower()

    @property
    def family_defaults(self) -> dict:
        """The model card's steps and CFG scale: Large Turbo 4 without guidance, Medium 40 at
        4.5, Large 28 at 3.5 (told apart by name)."""
        if self.family_distilled:
            return distilled_defaults(4)
        if "medium" in self.model.source.lower():
            return {"steps": 40, "guidance": 4.5}
        return {"steps": 28, "guidance": 3.5}

    @torch.no_grad()
    def encode_text(self, text: str) -> tuple[Conditioning, str | None]:
        model = self.model
        features, pooled, notes = [], [], []
        for tokenizer, encoder in ((model.tokenizer, model.text_encoder),
                                   (model.tokenizer_2, model.text_encoder_2)):
            limit = tokenizer.model_max_length
            notes.append(too_long_note(tokenizer, text, limit, "the CLIP text encoders'"))
            tokens = tokenizer(text, padding="max_length", max_length=limit, truncation=True,
                               return_tensors="pt").input_ids.to(model.device)
            out = encoder(tokens, output_hidden_states=True)
            features.append(out.hidden_states[-2].float())
            pooled.append(out[0].float())  # the projected end-of-text embedding
        notes.append(too_long_note(model.tokenizer_3, text, T5_TOKENS, "the T5 text encoder's"))
        tokens = model.tokenizer_3(text, padding="max_length", max_length=T5_TOKENS,
                                   truncation=True, add_special_tokens=True,
                                   return_tensors="pt").input_ids.to(model.device)
        t5 = model.text_encoder_3(tokens)[0].float()
        clip = torch.cat(features, dim=-1)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        note = "; ".join(dict.fromkeys(n for n in notes if n)) or None  # both CLIPs cut alike
        return Conditioning(torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1)), note

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **kwargs) -> torch.Tensor:
        model = self.model
        dtype = model.transformer.dtype
        return model.transformer(
            hidden_states=latents.to(dtype), timestep=self.timesteps(timestep, latents.shape[0]),
            encoder_hidden_states=cond.embeds.to(dtype), pooled_projections=cond.pooled.to(dtype),
            return_dict=False, **kwargs)[0].float()
