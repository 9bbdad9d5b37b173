"""Our DiffEdit and Blended on each flow-matching family against that family's diffusers inpaint
pipeline: transformer evaluations, wall time and peak memory, and a whole auto-mask edit's cost.

For each model (by default the tiny random-weight FLUX.2 klein, SD3.5 and Z-Image-Turbo), on the
same loaded model, photo, mask, seed and the family's default steps and guidance, it runs:
- Blended (inpaint, one candidate) vs Flux2KleinInpaintPipeline / StableDiffusion3InpaintPipeline
  / ZImageInpaintPipeline at strength 1;
- DiffEdit with the user's mask, and with its automatic mask, vs the same pipeline at DiffEdit's
  strength (0.8; diffusers has no flow DiffEdit, so inpainting the same mask is the reference).
  The pipelines truncate strength x steps (0.8 of 4 steps runs 4, of 8 runs 7, of 28 runs 23),
  where we round (3, 6, 22) and encode the photo through those steps before decoding them.
Evaluations are counted by a hook on the transformer itself, for both sides alike (a klein
inpaint evaluation also reads the photo's reference tokens, so it is dearer than ours); memory
is the peak above the memory in use at the start of each run (CUDA allocations, or on the CPU
the resident set's high-water mark, reset per run: bench_diffedit.MemoryMeter). The last column
of the second table is the whole auto-mask edit at the family's defaults (target for the
distilled klein and Z-Image-Turbo: at most 16 evaluations). Run:
    .venv/bin/python tests/benchmarks/flow_bench.py --threads 1
    .venv/bin/python tests/benchmarks/flow_bench.py --model PATH --device cuda --resolution 1024
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_diffedit import MemoryMeter  # noqa: E402
from tests.engine.flow_parity import AUTO_MASK_SEEDS, batch_of  # noqa: E402

PHOTO = ROOT / "resources" / "samples" / "chelsea.png"
SOURCE, TARGET = "a photo of a cat", "a photo of a dog"  # seeds: flow_parity.AUTO_MASK_SEEDS
INPAINT = {"flux2-klein": "Flux2KleinInpaintPipeline", "sd3": "StableDiffusion3InpaintPipeline",
           "zimage": "ZImageInpaintPipeline"}


def _arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="a flow model (folder, hub id or tiny-*); repeat for several "
                             "(default: tiny-flux2, tiny-sd3, tiny-zimage)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--resolution", type=int, default=0, help="working side (0: native)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each block; the median seconds and memory are shown")
    return parser.parse_args(argv)


class Meter:
    """Transformer sample-evaluations (a hook on the transformer), seconds and peak memory."""

    def __init__(self, model):
        self.evaluations = 0
        self.memory = MemoryMeter(model.device)
        model.transformer.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, _module, args, kwargs):
        self.evaluations += batch_of(args, kwargs)

    def measure(self, work, repeat: int) -> dict:
        """The median of ``repeat`` runs of ``work`` (its evaluations are the same every time)."""
        runs = []
        for _ in range(repeat):
            start = self.memory.reset()
            self.evaluations = 0
            started = time.perf_counter()
            work()
            runs.append({"evals": self.evaluations, "seconds": time.perf_counter() - started,
                         "memory": max(0, self.memory.peak() - start)})
        return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _inpaint_pipeline(model):
    """The family's diffusers inpaint pipeline on the loaded components."""
    import diffusers

    parts = {"transformer": model.transformer, "vae": model.vae,
             "scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config)}
    for suffix in ("", "_2", "_3"):
        if getattr(model, "text_encoder" + suffix, None) is not None:
            parts["text_encoder" + suffix] = getattr(model, "text_encoder" + suffix)
            parts["tokenizer" + suffix] = getattr(model, "tokenizer" + suffix)
    if model.family == "flux2-klein":
        parts["is_distilled"] = model.distilled
    pipe = getattr(diffusers, INPAINT[model.family])(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_guidance(model, guidance: float) -> float:
    """Our true-CFG scale in the pipeline's convention (Z-Image's is c + g (c - u): ours - 1)."""
    return guidance - 1.0 if model.family == "zimage" else guidance


def bench(model, side: int, repeat: int) -> dict:
    import torch
    from PIL import Image

    from engine.session import EditSession

    photo = np.asarray(Image.open(PHOTO).convert("RGB").resize((side, side)))
    mask = np.zeros((side, side), np.float32)
    mask[side // 4:3 * side // 4, side // 4:3 * side // 4] = 1.0
    seed = AUTO_MASK_SEEDS.get(model.family, 0)
    params = EditSession(model, photo).default_params().replace(resolution=side, seed=seed)
    pipe, meter = _inpaint_pipeline(model), Meter(model)

    def theirs(strength):
        return lambda: pipe(prompt=TARGET, image=Image.fromarray(photo),
                            mask_image=Image.fromarray((mask * 255).astype(np.uint8)),
                            height=side, width=side, strength=strength,
                            num_inference_steps=params.steps,
                            guidance_scale=_pipeline_guidance(model, params.guidance),
                            generator=torch.Generator("cpu").manual_seed(seed))

    def ours(method, given, options=None):
        return lambda: EditSession(model, photo).run(method, SOURCE, TARGET, given, params, options)

    blocks = [("Blended (inpaint)", theirs(1.0), ours("blended", mask, {"candidates": 1})),
              ("DiffEdit, user mask", theirs(params.strength), ours("diffedit", mask)),
              ("DiffEdit, auto mask", theirs(params.strength), ours("diffedit", None))]
    _, reference, mine = blocks[0]  # warm-up: first calls pay one-off set-up
    reference()
    mine()
    rows = [(name, meter.measure(reference, repeat), meter.measure(mine, repeat))
            for name, reference, mine in blocks]
    return {"params": params, "rows": rows}


def _ratio(mine, theirs) -> str:
    return f"{mine / theirs:.2f}" if theirs else "n/a"


def run(argv=None) -> dict:
    import torch

    from engine.models import load_model

    args = _arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = {}
    for name in args.model or ["tiny-flux2", "tiny-sd3", "tiny-zimage"]:
        model = load_model(name, device=args.device, dtype=args.dtype)
        figures[name] = bench(model, args.resolution or model.native_size, args.repeat)
    print(f"device {args.device}; the median of {args.repeat} runs; memory: the peak above the "
          "start of each run (MiB)\n")
    print("| model | run | diffusers evals | ours | ratio | diffusers s | ours s | ratio | "
          "diffusers MiB | ours MiB | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, result in figures.items():
        for run_name, them, us in result["rows"]:
            print(f"| {name} | {run_name} | {them['evals']} | {us['evals']} | "
                  f"{_ratio(us['evals'], them['evals'])} | {them['seconds']:.2f} | "
                  f"{us['seconds']:.2f} | {_ratio(us['seconds'], them['seconds'])} | "
                  f"{them['memory'] / 2**20:.0f} | {us['memory'] / 2**20:.0f} | "
                  f"{_ratio(us['memory'], them['memory'])} |")
    print("\n| model | default steps | guidance | mask samples | whole auto-mask DiffEdit edit: evaluations |")
    print("|---|---|---|---|---|")
    for name, result in figures.items():
        params, auto = result["params"], result["rows"][2][2]
        print(f"| {name} | {params.steps} | {params.guidance:g} | {params.mask_samples} | "
              f"{auto['evals']} |")
    return figures


if __name__ == "__main__":
    run()
