"""Benchmark our methods on SDXL against diffusers' SDXL pipelines: UNet evaluations, wall time and
(on CUDA) peak memory, at the standard settings and in few-step mode.

On the same loaded model, photo, mask, seed and settings it runs:
- SDEdit vs StableDiffusionXLImg2ImgPipeline (DDIM, the same strength, steps and guidance);
- masked SDEdit, Blended and DiffEdit (user mask, then automatic mask) vs
  StableDiffusionXLInpaintPipeline (DDIM, the same strength, steps and guidance; diffusers has
  no SDXL DiffEdit, so its inpainting with the same mask is the reference);
- few-step (trailing timesteps, no guidance, strength 1): DiffEdit with the automatic mask and
  SDEdit vs the img2img pipeline with SDXL-Lightning's scheduler (EulerDiscrete, trailing).
UNet work is counted by a hook on the UNet itself, for both sides alike. It prints a markdown
table and, with --json, writes the figures.

    .venv/bin/python tests/benchmarks/bench_sdxl.py --steps 10 --threads 1     # tiny-sdxl, CPU
    .venv/bin/python tests/benchmarks/bench_sdxl.py --model PATH --device cuda --resolution 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHOTO = ROOT / "resources" / "samples" / "chelsea.png"
SOURCE, TARGET = "a cat", "a dog"
FEW_STEPS = 4


def _arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-sdxl")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--resolution", type=int, default=0, help="working side (0: native)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--strength", type=float, default=0.8)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--mask-samples", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


class Meter:
    """UNet sample-evaluations (a hook on the UNet), seconds and CUDA peak memory of one block."""

    def __init__(self, model):
        self.model = model
        self.evaluations = 0
        model.unet.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.evaluations += args[0].shape[0]

    def measure(self, work):
        import torch

        cuda = self.model.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.model.device)
        self.evaluations = 0
        started = time.perf_counter()
        work()
        if cuda:
            torch.cuda.synchronize()
        return {"unet_evals": self.evaluations, "seconds": round(time.perf_counter() - started, 3),
                "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None}


def _pipeline(cls, model, scheduler):
    pipe = cls(vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
               tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet,
               scheduler=scheduler, force_zeros_for_empty_prompt=model.force_zeros_for_empty_prompt)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(argv=None) -> dict:
    import torch
    from diffusers import (DDIMScheduler, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLInpaintPipeline)
    from PIL import Image

    from engine import schedulers
    from engine.models import load_model
    from engine.params import EditParams
    from engine.session import EditSession

    args = _arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    side = args.resolution or model.native_size
    photo = np.asarray(Image.open(PHOTO).convert("RGB").resize((side, side)))
    mask = np.zeros((side, side), np.float32)
    mask[side // 4:3 * side // 4, side // 4:3 * side // 4] = 1.0
    params = EditParams(steps=args.steps, strength=args.strength, guidance=args.guidance,
                        mask_samples=args.mask_samples, resolution=side)
    few = params.replace(steps=FEW_STEPS, strength=1.0, guidance=1.0, mask_samples=2)
    few_model = dataclasses.replace(
        model, scheduler_config=schedulers.configure(model.scheduler_config, "trailing"))
    meter = Meter(model)
    ddim = DDIMScheduler.from_config(model.scheduler_config)
    img2img = _pipeline(StableDiffusionXLImg2ImgPipeline, model, ddim)
    inpaint = _pipeline(StableDiffusionXLInpaintPipeline, model, ddim)
    lightning = _pipeline(StableDiffusionXLImg2ImgPipeline, model,
                          EulerDiscreteScheduler.from_config(model.scheduler_config,
                                                             timestep_spacing="trailing"))
    image, mask_image = Image.fromarray(photo), Image.fromarray((mask * 255).astype(np.uint8))
    common = dict(prompt=TARGET, image=image, strength=args.strength,
                  num_inference_steps=args.steps, guidance_scale=args.guidance)

    def seeded(**kwargs):
        return {**common, **kwargs, "generator": torch.Generator("cpu").manual_seed(0)}

    def masked(**kwargs):
        return seeded(mask_image=mask_image, height=side, width=side, **kwargs)

    def ours(on, method, given, settings, options=None):
        return lambda: EditSession(on, photo).run(method, SOURCE, TARGET, given, settings, options)

    rows = [
        ("SDEdit", meter.measure(lambda: img2img(**seeded())),
         meter.measure(ours(model, "sdedit", None, params))),
        ("masked SDEdit", meter.measure(lambda: inpaint(**masked())),
         meter.measure(ours(model, "sdedit", mask, params, {"masked": True}))),
        ("Blended (inpaint)", meter.measure(lambda: inpaint(**masked(strength=1.0))),
         meter.measure(ours(model, "blended", mask, params, {"candidates": 1}))),
        ("DiffEdit, user mask", meter.measure(lambda: inpaint(**masked())),
         meter.measure(ours(model, "diffedit", mask, params))),
        ("DiffEdit, auto mask", meter.measure(lambda: inpaint(**masked())),
         meter.measure(ours(model, "diffedit", None, params))),
        (f"few-step SDEdit ({FEW_STEPS} steps)",
         meter.measure(lambda: lightning(**seeded(strength=1.0, num_inference_steps=FEW_STEPS,
                                                  guidance_scale=1.0))),
         meter.measure(ours(few_model, "sdedit", None, few))),
        (f"few-step DiffEdit, auto mask ({FEW_STEPS} steps)",
         meter.measure(lambda: lightning(**seeded(strength=1.0, num_inference_steps=FEW_STEPS,
                                                  guidance_scale=1.0))),
         meter.measure(ours(few_model, "diffedit", None, few))),
    ]
    print(f"model {model.name} ({model.family}) on {model.device}, {side}x{side}, steps "
          f"{args.steps}, strength {args.strength}, guidance {args.guidance}, mask samples "
          f"{args.mask_samples}; few-step: {FEW_STEPS} trailing steps, strength 1, guidance 1, "
          "2 mask samples\n")
    print("| run | diffusers evals | ours evals | ratio | diffusers s | ours s | ratio | peak memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    figures = {}
    for name, theirs, mine in rows:
        memory = (f"{mine['peak_memory_bytes'] / theirs['peak_memory_bytes']:.2f}"
                  if theirs["peak_memory_bytes"] else "n/a (CPU)")
        print(f"| {name} | {theirs['unet_evals']} | {mine['unet_evals']} | "
              f"{mine['unet_evals'] / theirs['unet_evals']:.2f} | {theirs['seconds']} | "
              f"{mine['seconds']} | {mine['seconds'] / theirs['seconds']:.2f} | {memory} |")
        figures[name] = {"diffusers": theirs, "ours": mine}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return figures


if __name__ == "__main__":
    run()
