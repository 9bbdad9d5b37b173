"""Backbones: one module per model family, behind one interface the methods are written against.

``for_model(model)`` gives the loaded model's backbone. A family adds a module here with a
``Backbone`` subclass and maps its family names in ``for_model``; the methods do not change
(README, "Architecture").
"""

from __future__ import annotations

from engine.backbones.base import Backbone, Conditioning, classifier_free, to_noise, to_velocity
from engine.errors import ModelError

__all__ = ["Backbone", "Conditioning", "classifier_free", "for_model", "to_noise", "to_velocity"]


def for_model(model) -> Backbone:
    """The backbone of a loaded model (engine.models.LoadedModel), by its family."""
    from engine.backbones import flux1, flux2, qwen_image, sd, sd3, sdxl, zimage

    families = {family: sd.StableDiffusion for family in sd.FAMILIES}
    families.update({family: sdxl.StableDiffusionXL for family in sdxl.FAMILIES})
    families.update({family: sd3.StableDiffusion3 for family in sd3.FAMILIES})
    families.update({family: zimage.ZImage for family in zimage.FAMILIES})
    families.update({family: flux2.Flux2Klein for family in flux2.FAMILIES})
    families.update({family: qwen_image.QwenImageEdit for family in qwen_image.FAMILIES})
    families.update({family: flux1.Flux1 for family in flux1.FAMILIES})
    family = getattr(model, "family", "sd1")
    try:
        return families[family](model)
    except KeyError:
        raise ModelError(f"no backbone for the model family {family!r}: "
                         f"{', '.join(sorted(families))} are supported") from None
