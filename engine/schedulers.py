"""Which timesteps a model is sampled at: its training schedule's (DDIM, "leading") or, for
few-step models (SDXL-Turbo, SDXL-Lightning, LCM, TCD), a few steps spread to the very end.

Every method steps with deterministic DDIM over ``engine.inversion.Schedule``. For few-step
models that is what their own schedulers compute: deterministic Euler (Lightning's and Turbo's
"EulerDiscrete, trailing") is DDIM in the variable x / sqrt(alpha), the same update on the same
timesteps; TCD with gamma 0 is DDIM by its definition. What the few-step schedulers add is
where the steps lie: "trailing" spacing starts at the last training timestep (999, 749, 499,
249 for 4 steps; "leading" would start at 751, well short of pure noise, which a 4-step model
cannot recover from) and ends at the clean image (alpha 1), as Euler's sigma 0 does.
LCM's own step (fresh noise at every step) is not used: DDIM's deterministic step keeps the
inversion and the background blending exact, and eta adds variety where a method allows it.

``--scheduler``: auto (the model's scheduler config decides: an LCM or TCD scheduler, or any
scheduler with trailing spacing, is a few-step model), ddim (the training schedule's spacing),
trailing (few-step timesteps, e.g. for a Lightning or LCM LoRA on a base model).
"""

from __future__ import annotations

from engine.errors import InputError

CHOICES = ("auto", "ddim", "trailing")
FEW_STEP_CLASSES = ("LCMScheduler", "TCDScheduler")


def is_few_step(config: dict) -> bool:
    """Whether a model's own scheduler config is a few-step model's."""
    return (config.get("_class_name") in FEW_STEP_CLASSES
            or config.get("timestep_spacing") == "trailing")


def configure(config: dict, choice: str = "auto") -> dict:
    """The scheduler config the DDIM schedule is built from, for ``choice`` (one of CHOICES)."""
    if choice not in CHOICES:
        raise InputError(f"unknown scheduler {choice!r}: use {', '.join(CHOICES)}")
    if choice == "trailing" or (choice == "auto" and is_few_step(config)):
        return {**config, "timestep_spacing": "trailing", "set_alpha_to_one": True}
    if choice == "ddim" and config.get("timestep_spacing") == "trailing":
        return {**config, "timestep_spacing": "leading"}
    return dict(config)
