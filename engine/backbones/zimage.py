"""Z-Image (Turbo and base): a Qwen3 text encoder read through its chat template, and a
single-stream DiT whose output is the negative velocity at the reversed time.

Text conditioning follows ``ZImagePipeline.encode_prompt``: the text as one user turn of the
tokenizer's chat template (thinking on, as the pipeline asks), padded to 512 tokens, and the
encoder's penultimate hidden states of the real (unpadded) tokens. The transformer takes each
text's own length, so the padded features travel with their token mask (``extra["mask"]``) and
``predict`` hands the transformer only the real tokens: the batch rows of several texts then
stack like any family's.

Sign and time: the pipeline calls the transformer at ``(1000 - t) / 1000`` (t: the scheduler's
timestep, the flow time times 1000, so the model's time runs from 0 at noise to 1 at the photo)
and steps the Euler scheduler with the output negated; so the velocity u = eps - x0 of base.py
is minus the transformer's output.

Turbo or base: Z-Image-Turbo is distilled to about 8 steps without guidance; the base model
samples 28-50 steps with true CFG. A folder does not say which it is except through its
scheduler (Turbo's shift is 3, the base model's 6) and its name.
"""

from __future__ import annotations

import torch

from engine import dit_attention
from engine.backbones.base import Conditioning, distilled_defaults
from engine.backbones.dit import DiffusionTransformer
from engine.backbones.flow import ATTENTION_METHODS, FLOW_METHODS

FAMILIES = ("zimage",)
SEQUENCE_MULTIPLE = 32  # the transformer pads the image's and the caption's tokens to multiples
TEXT_TOKENS = 512  # the pipeline's max_sequence_length default
BASE_SHIFT = 6.0  # the base model's scheduler shift (Turbo's: 3)


class ZImage(DiffusionTransformer):
    family = "zimage"
    title = "Z-Image"
    methods = FLOW_METHODS | ATTENTION_METHODS

    @property
    def patch_size(self) -> int:
        return int(self.model.transformer.config.all_patch_size[0])

    @property
    def family_distilled(self) -> bool:
        """Z-Image-Turbo (or a fine-tune of it), named so or sampled at Turbo's shift: distilled
        to 8 steps with its guidance built in."""
        if "turbo" in self.model.source.lower():
            return True
        return float(self.model.scheduler_config.get("shift", 1.0)) < BASE_SHIFT

    @property
    def family_defaults(self) -> dict:
        """Turbo: 8 steps without guidance. Base: 50 steps at the model card's guidance 4 in the
        pipeline's convention (c + g (c - u)), which is true CFG's 5 here (u + s (c - u))."""
        return distilled_defaults(8) if self.family_distilled else {"steps": 50, "guidance": 5.0}

    def chat(self, text: str) -> str:
        """The prompt in Qwen's chat template, as the pipeline gives it to the text encoder."""
        return self.model.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True,
            enable_thinking=True)

    @torch.no_grad()
    def encode_text(self, text: str) -> tuple[Conditioning, str | None]:
        model = self.model
        tokenizer = model.tokenizer
        tokens = tokenizer(self.chat(text), padding="max_length", max_length=TEXT_TOKENS,
                           truncation=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(model.device), tokens.attention_mask.to(model.device).bool()
        hidden = model.text_encoder(input_ids=ids, attention_mask=mask,
                                    output_hidden_states=True).hidden_states[-2]
        return Conditioning(hidden.float(), extra={"mask": mask}), self._too_long(text)

    def _too_long(self, text: str) -> str | None:
        """What the 512-token cut drops of ``text`` (the template's closing tokens go too)."""
        tokenizer = self.model.tokenizer
        ids = tokenizer(self.chat(text)).input_ids
        if len(ids) <= TEXT_TOKENS:
            return None
        # the template's text after the prompt: what an empty prompt's template has after it
        closing = self.chat("").split("<|im_end|>", 1)[1]
        tail = len(tokenizer("<|im_end|>" + closing).input_ids)
        dropped = tokenizer.decode(ids[TEXT_TOKENS:len(ids) - tail])
        return (f"the prompt is longer than the text encoder's {TEXT_TOKENS} tokens; "
                f"ignored: \"{dropped}\"")

    def sigmas(self, steps: int):
        """The pipeline's sigmas, linspace(1, 1/steps, steps), shifted by the scheduler's shift."""
        from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

        return get_default_z_image_sigmas(steps)

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **kwargs) -> torch.Tensor:
        model = self.model
        dtype = model.transformer.dtype
        batch = latents.shape[0]
        time = (self.train_steps - self.timesteps(timestep, batch)) / self.train_steps
        captions = [row[keep].to(dtype) for row, keep in zip(cond.embeds, cond.extra["mask"])]
        out = model.transformer(list(latents.to(dtype).unsqueeze(2).unbind(0)), time, captions,
                                return_dict=False, **kwargs)[0]
        return -torch.stack([frame.float() for frame in out]).squeeze(2)

    # ---- attention (engine.dit_attention): the transformer refines the image tokens alone
    #      (noise_refiner), the caption alone (context_refiner, not controlled), then runs them
    #      as one sequence, the image's tokens (padded) first; the image is numbered after the
    #      caption, so its rotary positions depend on the caption's padded length

    def token_layout(self, latent: torch.Tensor, cond: Conditioning) -> dict:
        tokens = latent[0, 0].numel() // self.patch_size**2
        padded = tokens + (-tokens) % SEQUENCE_MULTIPLE
        image = slice(0, tokens)
        alone = dit_attention.Layout(None, image, "freqs_cis")
        joint = dit_attention.Layout(slice(padded, padded + cond.embeds.shape[1]), image, "freqs_cis")
        return {name: alone if name.startswith("noise_refiner.") else joint
                for name in dit_attention.attention_layers(self.model.transformer)
                if not name.startswith("context_refiner.")}

    def word_positions(self, text: str) -> list[tuple[str, tuple[int, ...]]]:
        return dit_attention.word_positions(self.model.tokenizer, self.chat, text, TEXT_TOKENS)
