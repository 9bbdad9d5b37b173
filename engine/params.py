"""Edit parameters: one frozen dataclass whose described fields (default, help, range) generate the
CLI flags, the app's parameter widgets and the validation; validated before any model work."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine.fields import validate as validate_fields
from engine.fields import AUTO, described
from engine.seams import SEAM_METHODS

SEED_RANGE = (0, 2**31 - 1)  # every surface's seeds: a 32-bit spin box holds all, torch takes all
GUIDANCE_RANGE = (0.0, 50.0)  # classifier-free guidance scale; 1 turns guidance off


@dataclass(frozen=True)
class EditParams:
    """Everything besides the prompts and the mask that shapes a run (shared by every method)."""

    steps: int = described(50, "DDIM steps of the full schedule; a run uses strength x steps of "
                           "them", range=(1, 1000), label="Steps")
    strength: float = described(0.8, "encoding ratio: how far the photo is encoded (noised) "
                                "before decoding", range=(0.01, 1.0), label="Encoding ratio")
    guidance: float = described(7.5, "classifier-free guidance scale while decoding (1: off)",
                                range=GUIDANCE_RANGE, label="Guidance")
    mask_threshold: float = described(0.5, "heatmap level above which a pixel is edited (paper: "
                                      "0.5)", range=(0.0, 1.0), label="Mask threshold")
    mask_samples: int = described(10, "noise samples averaged for the automatic mask (paper: 10)",
                                  range=(1, 100), label="Mask samples")
    mask_noise: float = described(0.5, "how strongly the photo is noised for the mask estimate "
                                  "(paper: 50%)", range=(0.01, 1.0), label="Mask noise")
    feather: int = described(AUTO, "px of soft edge outside the mask when pasting back at full "
                             "resolution", range=(0, 256), label="Feather",
                             auto="scales with the photo: 4 px of the working resolution "
                                  "(27 px on 4000x3000 worked at 512)")
    seam: str = described("feather", "how the edit meets the photo at the mask's edge: feather "
                          "(a linear fade over the feather band) or poisson (the edit first "
                          "carried smoothly onto the photo's colours at the border, so a colour "
                          "shift leaves no seam; its inside shifts with it)", choices=SEAM_METHODS,
                          label="Edge blend")
    seed: int = described(0, "random seed of the mask noise and of any sampling noise; the same "
                          "seed gives the same bytes", range=SEED_RANGE, label="Seed")
    eta: float = described(0.0, "DDIM stochasticity while decoding; above 0 lets variations of "
                           "one mask differ", range=(0.0, 1.0), label="Variety")
    negative_prompt: str = described("", "what the result should avoid (classifier-free "
                                     "guidance's negative text); empty: the source text",
                                     label="Avoid", flag="negative")
    resolution: int = described(0, "working side length in px (area = side squared)",
                                range=(64, 4096), zero="the model's native size",
                                label="Working resolution")
    crop_to_mask: bool = described(True, "big photos: edit the mask's surroundings at full "
                                   "model detail", label="Crop to the mask")

    def validate(self) -> "EditParams":
        """Raise InputError naming the first parameter that is out of range."""
        validate_fields(self)
        return self

    @property
    def encode_steps(self) -> int:
        """How many of the schedule's steps the photo is encoded (and then decoded) through."""
        return max(1, min(self.steps, round(self.steps * self.strength)))

    def replace(self, **changes) -> "EditParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def carried(self, before: "EditParams", after: "EditParams", names) -> "EditParams":
        """These values moved from one set of defaults to another (another method, another
        model): each of ``names`` still at ``before``'s value takes ``after``'s; a value the user
        set stays."""
        return self.replace(**{name: getattr(after, name) for name in names
                               if getattr(self, name) == getattr(before, name)})

    @classmethod
    def from_dict(cls, data: dict) -> "EditParams":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def field_table() -> dict[str, dataclasses.Field]:
    """EditParams' described fields by name (help, range, label... in ``.metadata``)."""
    return {f.name: f for f in dataclasses.fields(EditParams)}
