"""A masked instruction edit (method instruct, its area found from the instruction) against
the family's diffusers edit pipeline (Flux2KleinPipeline, FluxKontextPipeline,
QwenImageEdit(Plus)Pipeline with image=photo, prompt=instruction) on the same model, photo,
instruction, steps, guidance (the family's default) and seed.

Prints, for each side, the transformer's sample-evaluations (counted by a forward hook on the
transformer, independently of the engine's own counter) and the wall time, and for ours the
engine's figures per stage and the share of the photo left byte-identical. Models: a FLUX.2
klein, FLUX.1 Kontext or Qwen-Image-Edit folder, or ``tiny-flux2`` (the default) /
``tiny-kontext`` / ``tiny-qwen-edit``, the random-weight ones; the photo is ``--size`` px square
(default: the model's native side, 128 for the tiny ones) and both sides work at that size
(Kontext's pipeline with its resize to its preferred resolutions off). Run:
    .venv/bin/python tests/benchmarks/instruct_bench.py [--model PATH|tiny-kontext|tiny-qwen-edit]
        [--size N] [--steps 4] [--mask-samples 8] [--repeat 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))  # the pipelines' helpers

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import kontext_pipeline  # noqa: E402
import qwen_pipeline  # noqa: E402
from engine.params import EditParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTION = "make the cat blue"


def evaluations(transformer):
    """(counter list, hook handle): the counter's one entry grows by each call's batch."""
    count = [0]
    handle = transformer.register_forward_hook(
        lambda _m, _args, kwargs, _out: count.__setitem__(0, count[0] + kwargs["hidden_states"].shape[0]),
        with_kwargs=True)
    return count, handle


def ours(model, photo, params):
    from engine.session import EditSession

    session = EditSession(model, photo)  # fresh: the mask and the photo's latent are paid for
    [result] = session.run("instruct", "", INSTRUCTION, None, params, {"auto_mask": True})
    from engine import masks

    kept = masks.paste_alpha(result.mask, result.params.feather) == 0
    identical = bool(np.array_equal(result.image[kept], photo[kept]))
    return {"engine_unet_evals": result.stats["unet_evals"],
            "engine_seconds": result.stats["seconds"], "kept_share": round(float(kept.mean()), 4),
            "kept_identical": identical}


def theirs(model, photo, params):
    generator = torch.Generator("cpu").manual_seed(params.seed)
    if model.family in qwen_pipeline.PIPELINES:  # true CFG against the empty text, as ours
        with qwen_pipeline.at_photo_size(photo.shape[0] * photo.shape[1]):
            image = qwen_pipeline.edit_pipeline(model)(
                image=Image.fromarray(photo), prompt=INSTRUCTION, negative_prompt="",
                true_cfg_scale=params.guidance, num_inference_steps=params.steps,
                generator=generator).images[0]
    elif model.family == "flux1-kontext":  # the guidance is the model's input: no CFG
        image = kontext_pipeline.edit_pipeline(model)(
            image=Image.fromarray(photo), prompt=INSTRUCTION, num_inference_steps=params.steps,
            guidance_scale=params.guidance, generator=generator,
            **kontext_pipeline.at_photo_size(*photo.shape[:2])).images[0]
    else:
        from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

        pipe = Flux2KleinPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config),
            vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
            transformer=model.transformer, is_distilled=bool(model.distilled))
        pipe.set_progress_bar_config(disable=True)
        image = pipe(image=Image.fromarray(photo), prompt=INSTRUCTION,
                     num_inference_steps=params.steps, guidance_scale=params.guidance,
                     generator=generator).images[0]
    changed = np.asarray(image.convert("RGB").resize(photo.shape[1::-1])) != photo
    return {"changed_share": round(float(changed.any(axis=2).mean()), 4)}


def measure(side, model, photo, params, repeat: int) -> dict:
    counter, handle = evaluations(model.transformer)
    seconds, figures = [], {}
    try:
        for _ in range(repeat):
            counter[0] = 0
            started = time.perf_counter()
            figures = side(model, photo, params)
            seconds.append(time.perf_counter() - started)
    finally:
        handle.remove()
    return {"transformer_evals": counter[0], "seconds_median": round(statistics.median(seconds), 4),
            "seconds": [round(s, 4) for s in seconds], **figures}


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-flux2",
                        help="a FLUX.2 klein, FLUX.1 Kontext or Qwen-Image-Edit folder, tiny-flux2, "
                        "tiny-kontext or tiny-qwen-edit")
    parser.add_argument("--size", type=int, default=None, help="the photo's side in px")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--mask-samples", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from engine.backbones import for_model
    from engine.models import load_model

    model = load_model(args.model, device="cpu")
    side = args.size or (128 if args.model.startswith("tiny-") else model.native_size)
    photo = np.asarray(Image.open(ROOT / "resources" / "samples" / "chelsea.png").convert("RGB")
                       .resize((side, side)))
    params = EditParams(steps=args.steps, mask_samples=args.mask_samples, seed=args.seed,
                        guidance=for_model(model).defaults["guidance"], resolution=side)
    figures = {"model": model.name, "steps": args.steps, "mask_samples": args.mask_samples,
               "size": [side, side], "repeat": args.repeat,
               "ours": measure(ours, model, photo, params, args.repeat),
               "diffusers": measure(theirs, model, photo, params, args.repeat)}
    for name in ("ours", "diffusers"):
        block = figures[name]
        extra = (f", outside the mask {block['kept_share']:.0%} of the photo, byte-identical: "
                 f"{block['kept_identical']}" if name == "ours" else
                 f", pixels changed {block['changed_share']:.0%}")
        print(f"{name:<9} {block['transformer_evals']:3d} transformer evaluations, "
              f"{block['seconds_median']:.3f} s (median of {args.repeat}){extra}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return figures


if __name__ == "__main__":
    run()
