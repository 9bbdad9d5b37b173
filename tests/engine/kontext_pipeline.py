"""diffusers' FluxKontextPipeline (or another FLUX.1 pipeline) on a loaded FLUX.1 model's
components, kept at the photo's size: what the parity tests and the instruction-edit benchmark
compare the engine with."""

from __future__ import annotations


def edit_pipeline(model, pipeline: str = "FluxKontextPipeline"):
    """The diffusers ``pipeline`` class over ``model``'s (engine.models.LoadedModel) components."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = getattr(diffusers, pipeline)(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config),
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
        transformer=model.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def at_photo_size(height: int, width: int) -> dict:
    """The pipeline call's arguments that keep a (multiple of 16) photo's size: no resize to
    Kontext's preferred resolutions, the output at the photo's area rather than 1024 x 1024."""
    return {"height": height, "width": width, "max_area": height * width, "_auto_resize": False}
