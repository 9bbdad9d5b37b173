"""Edit parameters: one frozen dataclass, validated before any model work."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine.errors import InputError


@dataclass(frozen=True)
class EditParams:
    """Everything besides the prompts and the mask that shapes a DiffEdit run."""

    steps: int = 50  # DDIM steps of the full schedule; the run uses strength * steps of them
    strength: float = 0.8  # encoding ratio r: how far the photo is DDIM-encoded before decoding
    guidance: float = 7.5  # classifier-free guidance scale while decoding
    mask_threshold: float = 0.5  # heatmap level above which a pixel is edited (paper: 0.5)
    mask_samples: int = 10  # noise samples averaged for the mask (paper: n = 10)
    mask_noise: float = 0.5  # how strongly the photo is noised for the mask estimate (paper: 50%)
    feather: int = 4  # px of soft edge outside the mask when pasting back at full resolution
    seed: int = 0  # seeds the mask noise (and decoding noise when eta > 0)
    eta: float = 0.0  # DDIM stochasticity while decoding; > 0 lets variations of one mask differ
    negative_prompt: str = ""  # CFG's negative text; empty means "use the source text"
    resolution: int = 0  # working side length in px (area = side^2); 0 = the model's native size
    crop_to_mask: bool = True  # big photos: edit the mask's surroundings at full model detail

    def validate(self) -> "EditParams":
        """Raise InputError naming the first parameter that is out of range."""
        _check_int("steps", self.steps, 1, 1000)
        _check_float("strength", self.strength, 0.01, 1.0)
        _check_float("guidance", self.guidance, 0.0, 50.0)
        _check_float("mask_threshold", self.mask_threshold, 0.0, 1.0)
        _check_int("mask_samples", self.mask_samples, 1, 100)
        _check_float("mask_noise", self.mask_noise, 0.01, 1.0)
        _check_int("feather", self.feather, 0, 256)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_float("eta", self.eta, 0.0, 1.0)
        if not isinstance(self.negative_prompt, str):
            raise InputError("negative_prompt must be text")
        if not isinstance(self.crop_to_mask, bool):
            raise InputError(f"crop_to_mask must be true or false, got {self.crop_to_mask!r}")
        if self.resolution != 0:
            _check_int("resolution", self.resolution, 64, 4096)
        return self

    @property
    def encode_steps(self) -> int:
        """How many of the schedule's steps the photo is encoded (and then decoded) through."""
        return max(1, min(self.steps, round(self.steps * self.strength)))

    def replace(self, **changes) -> "EditParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EditParams":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{name} must be from {low} to {high}, got {value}")


def _check_float(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InputError(f"{name} must be a number from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{name} must be from {low} to {high}, got {value}")
