"""The backbone interface: text conditioning, latents, one prediction parameterisation, the
schedule, guidance and attention hooks; what every editing method is written against.

Noise-space methods (DDIM inversion, masked decoding, the DiffEdit contrast) ask for the noise
(epsilon); ``to_noise``/``to_velocity`` convert any family's native output in this one place:

- epsilon models predict the noise eps;
- v-prediction models predict v = sqrt(a) eps - sqrt(1 - a) x0 (a: cumulative alpha at t), so
  eps = sqrt(a) v + sqrt(1 - a) x_t;
- flow-matching models predict the velocity u = eps - x0 along x_t = (1 - s) x0 + s eps
  (s: the flow time in [0, 1]), so eps = x_t + (1 - s) u.

Sampling methods do not choose a space: they take ``schedule.predict`` (the prediction in the
space the schedule steps in) and give it to ``schedule.step``; DDPM backbones give an
engine.inversion.Schedule (noise space), flow backbones an engine.flow.FlowSchedule (velocity
space: at s = 1 the noise would lose the velocity). A flow backbone subclasses
engine.backbones.flow.FlowBackbone, which supplies the schedule, the methods and guidance rules.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from engine.params import EditParams


@dataclass(frozen=True)
class Conditioning:
    """A text's conditioning, batched on the first axis: per-token embeddings, plus what later
    families need besides (SDXL and SD3: a pooled embedding and time ids; FLUX: text ids)."""

    embeds: torch.Tensor  # (B, L, D) per-token features (SD: the CLIP text encoder's last layer)
    pooled: torch.Tensor | None = None  # (B, P) pooled text embedding, for families that take one
    extra: dict = field(default_factory=dict)  # name -> (B, ...) tensor of family-specific ids

    @property
    def batch(self) -> int:
        return self.embeds.shape[0]

    def expand(self, batch: int) -> "Conditioning":
        """This (batch 1) conditioning repeated ``batch`` times, without copying."""
        if batch == self.batch:
            return self
        return Conditioning(self.embeds.expand(batch, *self.embeds.shape[1:]),
                            None if self.pooled is None else self.pooled.expand(batch, -1),
                            {k: v.expand(batch, *v.shape[1:]) for k, v in self.extra.items()})

    def padded(self, length: int) -> "Conditioning":
        """These embeddings zero-padded to ``length`` tokens, ``extra["mask"]`` (B, L) marking
        the real ones as True (for families whose texts keep lengths of their own)."""
        missing = length - self.embeds.shape[1]
        if missing == 0:
            return self
        pad = torch.nn.functional.pad
        return Conditioning(pad(self.embeds, (0, 0, 0, missing)), self.pooled,
                            {**self.extra, "mask": pad(self.extra["mask"], (0, missing))})

    @staticmethod
    def cat(parts: list["Conditioning"]) -> "Conditioning":
        """The parts' rows stacked in order (one UNet batch for several texts); texts of
        different lengths (Qwen-Image-Edit's, which are not padded) are padded to the longest."""
        longest = max(p.embeds.shape[1] for p in parts)
        parts = [p.padded(longest) for p in parts]
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return Conditioning(torch.cat([p.embeds for p in parts]), pooled,
                            {k: torch.cat([p.extra[k] for p in parts]) for k in parts[0].extra})


def as_conditioning(value) -> Conditioning:
    """A Conditioning as is; a bare (B, L, D) embeddings tensor as the Conditioning it is (tests
    and scripts pass those)."""
    return value if isinstance(value, Conditioning) else Conditioning(value)


def to_noise(output: torch.Tensor, latents: torch.Tensor, prediction_type: str,
             level: float) -> torch.Tensor:
    """The noise eps from a model's native ``output`` at ``latents`` (see the module docstring).
    ``level``: the cumulative alpha at t (epsilon, v_prediction) or the flow time (flow)."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return (level**0.5) * output + ((1 - level) ** 0.5) * latents.float()
    if prediction_type == "flow":
        return latents.float() + (1 - level) * output
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def to_velocity(noise: torch.Tensor, latents: torch.Tensor, prediction_type: str,
                level: float) -> torch.Tensor:
    """The inverse of ``to_noise``: the native output that predicts ``noise`` at ``latents``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        # x0 = (x - sqrt(1 - a) eps) / sqrt(a), v = sqrt(a) eps - sqrt(1 - a) x0
        x0 = (latents.float() - (1 - level) ** 0.5 * noise) / level**0.5
        return level**0.5 * noise - (1 - level) ** 0.5 * x0
    if prediction_type == "flow":
        return (noise - latents.float()) / (1 - level)
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def classifier_free(unconditional: torch.Tensor, conditional: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """True classifier-free guidance: u + scale * (c - u) (scale 1 is the conditional alone)."""
    return unconditional + scale * (conditional - unconditional)


# Transformer evaluations a whole DiffEdit edit with its automatic mask may cost on a distilled
# family at its defaults: these models are chosen for edits in seconds (issue 13); so are
# few-step LoRAs.
DISTILLED_EDIT_BUDGET = 16


def distilled_defaults(steps: int) -> dict:
    """A distilled family's defaults: its ``steps``, no guidance, and as many mask samples (two
    evaluations each) as leave the encoding and decoding (strength x steps evaluations each,
    unguided) of a DiffEdit edit within DISTILLED_EDIT_BUDGET."""
    encoding = EditParams(steps=steps).encode_steps
    return {"steps": steps, "guidance": 1.0,
            "mask_samples": max(1, (DISTILLED_EDIT_BUDGET - 2 * encoding) // 2)}


class Backbone:
    """One model family's way of doing what the methods need. Subclasses set the attributes and
    implement the methods below; the defaults here are the SD-like ones.

    Attributes: ``family`` (e.g. "sd1"), ``title`` (the family as users call it),
    ``prediction_type`` ("epsilon" | "v_prediction" | "flow"), ``latent_factor`` (pixels per
    latent cell per side), ``native_area`` (px^2 the model was trained at), ``size_multiple``
    (working sizes are multiples of it, in px), ``max_batch`` (most sample-evaluations per model
    call), ``tokenizer`` (word-to-token alignment for Prompt-to-Prompt), ``methods`` (the method
    names it supports),
    ``family_defaults`` (EditParams fields whose default differs on this family: a 4-step
    model's steps), ``family_distilled`` (guidance is built into the model: runs sample with
    guidance 1); ``defaults`` and ``distilled`` are those, or a few-step LoRA's on the model
    (engine.lora: its steps, guidance 1); ``unused_params`` (EditParams fields its runs ignore,
    which the app hides), ``unused_options`` (the same for method options).
    """

    title: str
    prediction_type: str
    latent_factor: int
    size_multiple: int
    methods: frozenset[str]
    family_defaults: dict = {}
    family_distilled: bool = False

    def __init__(self, model):
        self.model = model  # engine.models.LoadedModel: read at every call

    @property
    def lora_steps(self) -> int:
        """The step count of a few-step LoRA on the model (Lightning, Turbo, ...), 0 for none."""
        return getattr(self.model, "lora_steps", 0)

    @property
    def distilled(self) -> bool:
        return bool(self.lora_steps) or self.family_distilled

    @property
    def defaults(self) -> dict:
        return distilled_defaults(self.lora_steps) if self.lora_steps else self.family_defaults

    @property
    def unused_params(self) -> frozenset[str]:
        """A distilled model samples without CFG: its guidance and negative text do nothing."""
        return frozenset({"guidance", "negative_prompt"}) if self.distilled else frozenset()

    @property
    def unused_options(self) -> dict[str, frozenset[str]]:
        """Method name -> the options of that method its runs on this family ignore (the app
        hides them)."""
        return {}

    @property
    def family(self) -> str:
        return getattr(self.model, "family", "sd1")

    @property
    def native_area(self) -> int:
        return self.model.native_size**2

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_batch(self) -> int:
        """Most sample-evaluations per model call the memory tier allows (set when it loads)."""
        return int(getattr(self.model, "max_batch", 0) or 8)

    @property
    def native_side(self) -> int:
        """The side of a square at the native area: the default working resolution."""
        return math.isqrt(self.native_area)

    # ---- text
    def encode_text(self, text: str) -> tuple[Conditioning, str | None]:
        """(conditioning of batch 1, a note when the text was cut to the encoder's length)."""
        raise NotImplementedError

    def empty(self) -> Conditioning:
        """The unconditional branch's conditioning (SD: the empty text)."""
        return self.encode_text("")[0]

    def condition_on(self, photo_size: tuple[int, int], box, geometry) -> None:
        """The photo (W, H) and the part of it (``box``: left, top, right, bottom; None = all)
        that the next predictions work on at ``geometry``; for families conditioned on sizes
        (SDXL's time ids). Others need nothing."""

    # ---- latents
    def encode_image(self, pixels) -> torch.Tensor:
        """(h, w, 3) uint8 working-size pixels -> (1, C, h/f, w/f) float32 latent (no noise)."""
        raise NotImplementedError

    def decode(self, latent: torch.Tensor):
        """(1, C, h, w) latent -> (h*f, w*f, 3) uint8 pixels."""
        raise NotImplementedError

    def preview(self, latents: torch.Tensor, content: tuple[int, int] | None = None):
        """A cheap (h, w, 3) uint8 RGB look at the first latent of a batch, cropped to
        ``content`` (columns, rows); here SD's four-channel linear map (engine.preview)."""
        from engine.preview import latent_preview

        return latent_preview(latents, content)

    # ---- sampling
    def schedule(self, steps: int, latent_size: tuple[int, int] | None = None):
        """The ``steps``-step schedule (engine.inversion.Schedule for DDPM models,
        engine.flow.FlowSchedule for flow models, whose shift may depend on the ``latent_size``
        (columns, rows) of the run); a run of strength r uses its last
        ``EditParams.encode_steps`` timesteps (``schedule.tail``)."""
        raise NotImplementedError

    def predict(self, latents: torch.Tensor, timestep, cond: Conditioning, **kwargs) -> torch.Tensor:
        """The model's native output (``prediction_type``) for a batch, in float32; ``cond`` has
        the batch of ``latents``. Called only through RunContext.predict_noise (counts, cancel)."""
        raise NotImplementedError

    def to_noise(self, output: torch.Tensor, latents: torch.Tensor, level: float) -> torch.Tensor:
        return to_noise(output, latents, self.prediction_type, level)

    def guide(self, unconditional: torch.Tensor, conditional: torch.Tensor,
              scale: float) -> torch.Tensor:
        """This family's guidance of two predictions (true CFG here; embedded-guidance families
        override it and take the scale in ``predict``)."""
        return classifier_free(unconditional, conditional, scale)

    # ---- guidance as the model's input (guidance-distilled FLUX.1: no CFG, one prediction a step)
    guidance_embedded: bool = False
    guidance_scale: float = 1.0  # the scale its predictions read; EditSession sets it per run

    # ---- reference images (instruction-edit families: the photo is the image the text edits)
    text_sees_photo: bool = False  # the text encoder reads the photo with the instruction

    def encode_instruction(self, text: str, pixels) -> tuple[Conditioning, str | None]:
        """(conditioning, note) of the instruction ``text`` about the (h, w, 3) uint8
        working-size photo ``pixels``, for families whose text encoder reads the photo too
        (``text_sees_photo``: Qwen-Image-Edit's Qwen2.5-VL); the others encode the text alone."""
        raise NotImplementedError

    def with_reference(self, cond: Conditioning, reference: torch.Tensor) -> Conditioning:
        """``cond`` with the (1, C, h, w) latent ``reference`` (the photo's) as the model's
        reference image; for families whose ``methods`` include "instruct"."""
        raise NotImplementedError

    # ---- inpainting models (a UNet that also reads a mask and the photo around it)
    inpainting: bool = False

    def inpaint_condition(self, pixels, latent_mask):
        """What ``inpainting_with`` gives the model: from (h, w, 3) uint8 working-size pixels and
        the (h/f, w/f) latent mask (1 = generate)."""
        raise NotImplementedError

    def inpainting_with(self, condition):
        """A context manager: the predictions inside it see ``condition``."""
        raise NotImplementedError

    # ---- attention and feature hooks (Prompt-to-Prompt, Plug-and-Play)
    def attention_layers(self) -> list:
        """engine.attention.AttentionLayer of every attention layer (cross and self)."""
        raise NotImplementedError

    def decoder_layers(self) -> list:
        """engine.attention.DecoderLayer of the decoder's feature layers, in execution order."""
        raise NotImplementedError

    def attention_processors(self) -> dict:
        """Processor key -> the processor now installed (the originals new ones delegate to)."""
        raise NotImplementedError

    @contextmanager
    def hooked(self, processors: dict, hooks=()) -> Iterator[None]:
        """Inside the block: ``processors`` on the named attention layers and forward ``hooks``
        ((module, hook) pairs) on feature modules; everything restored after, also on error."""
        raise NotImplementedError
        yield
