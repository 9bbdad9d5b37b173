"""diffusers' Qwen-Image-Edit pipelines on a loaded model, for parity tests and the benchmark.

Their Qwen2VLProcessor is built with transformers' class check off: it looks for the video
processor's base class, which needs torchvision (not installed here; the engine counts the
vision tokens itself and never builds that processor). ``at_photo_size`` has them work at the
photo's own size instead of about 1 MP (their ``calculate_dimensions(1024 * 1024, ...)`` for the
VAE and the output), as ours does at a resolution that keeps the photo's size; the size their
2509/2511 text encoder sees the photo at stays theirs.
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

PIPELINES = {"qwen-image-edit-plus": "QwenImageEditPlusPipeline",
             "qwen-image-edit": "QwenImageEditPipeline"}


def edit_pipeline(model):
    """The family's diffusers edit pipeline around the model's own components."""
    import diffusers
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", lambda *a: None):
        processor = Qwen2VLProcessor(image_processor=model.image_processor,
                                     tokenizer=model.tokenizer, video_processor=None)
    pipe = getattr(diffusers, PIPELINES[model.family])(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config),
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        processor=processor, transformer=model.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextmanager
def at_photo_size(area: int):
    """Inside the block the pipelines' 1 MP working area is ``area`` px^2."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit, pipeline_qwenimage_edit_plus

    original = pipeline_qwenimage_edit.calculate_dimensions

    def dimensions(target, ratio):
        return original(area if target == 1024 * 1024 else target, ratio)

    with mock.patch.object(pipeline_qwenimage_edit, "calculate_dimensions", dimensions), \
            mock.patch.object(pipeline_qwenimage_edit_plus, "calculate_dimensions",
                              lambda target, ratio: dimensions(target, ratio)[:2]):
        yield
