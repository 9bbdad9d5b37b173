"""Benchmark our DiffEdit against diffusers' StableDiffusionDiffEditPipeline (UNet work, time, memory).

In one process, on the same loaded model, photo, seed and settings, it runs the reference
(generate_mask, invert, __call__) and our EditSession.edit with the automatic mask, then the
interactive loop (first edit, re-edit after a brush stroke, re-threshold) and the preview cost,
and prints markdown tables with PASS/FAIL for the targets of issue 5. With --repeat N both
scenarios run N times (fresh session each, alternating which side goes first) and each side's
median run is reported with every total and the spread: one run on a busy machine is noise.

    .venv/bin/python tests/benchmarks/bench_diffedit.py --repeat 5 --threads 1   # tiny model, < 1 min
    .venv/bin/python tests/benchmarks/bench_diffedit.py --sd-shaped --resolution 256 --steps 20
    .venv/bin/python tests/benchmarks/bench_diffedit.py --model runwayml/... --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PHOTO = ROOT / "resources" / "samples" / "coffee.png"
DEFAULT_SOURCE = "an espresso cup on a saucer"
DEFAULT_TARGET = "a cup of green tea on a saucer"
RETHRESHOLD_SIDE = 1024  # issue 5: re-thresholding is timed on a 1024x1024 heatmap
RETHRESHOLD_REPEATS = 20
PREVIEW_REPEATS = 50
SD_SHAPED_VERSION = 1  # bump when the architecture below changes, so cached copies are rebuilt

# Issue 5 targets.
EVALS_RATIO_LIMIT = 0.75  # 150 of the reference's 200 at default settings
WALL_RATIO_LIMIT = 0.8
RE_EDIT_VS_FIRST_LIMIT = 0.6
RE_EDIT_VS_REFERENCE_LIMIT = 0.45
RETHRESHOLD_SECONDS_LIMIT = 0.050
MEMORY_RATIO_LIMIT = 1.0
PREVIEW_RATIO_LIMIT = 0.05
GUI_STALL_MS_LIMIT = 100

# SD 1.5's real component sizes (860M-parameter UNet, ViT-L/14 text encoder, the f=8 VAE).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, sample_size=512,
)
SD15_TEXT = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
    pad_token_id=49407,
)


# ---- measuring --------------------------------------------------------------------------------


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_rss_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    """Give freed heap pages back to the OS, so one stage's garbage does not count as the next's."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class MemoryMeter:
    """Peak memory of a stage: CUDA max allocated, or on CPU the resident set's high-water mark."""

    def __init__(self, device):
        self.device = device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.method = "torch.cuda.max_memory_allocated, reset per stage"
        elif _reset_rss_peak() and _proc_status_bytes("VmHWM") is not None:
            self.method = "resident set high-water mark (VmHWM), reset per stage"
        else:
            # macOS/Windows: only the process-lifetime peak is available, so later stages
            # cannot show less than earlier ones; the ratios are then upper bounds for us.
            self.method = "process peak RSS (not resettable here)"

    def reset(self) -> int:
        """Start a new stage; returns the memory in use at its start."""
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return int(torch.cuda.memory_allocated(self.device))
        _trim_heap()
        _reset_rss_peak()
        return _proc_status_bytes("VmRSS") or 0

    def peak(self) -> int:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        from engine.runtime import peak_rss_bytes

        return _proc_status_bytes("VmHWM") or peak_rss_bytes()


class UnetProbe:
    """Counts UNet sample-evaluations (the sum of batch sizes) and times every call, by label and repeat."""

    def __init__(self, unet, device):
        self.unet = unet
        self.device = device
        self.label = "idle"
        self.repeat = None  # the repeat in progress; None for work outside the repeats (warm-up)
        self.total = 0
        self.calls: list[tuple[int | None, str, int, float]] = []  # (repeat, label, batch, seconds)
        self._forward = unet.forward
        unet.forward = self._counted  # the instance attribute shadows the class's forward

    def _counted(self, *args, **kwargs):
        sample = args[0] if args else kwargs["sample"]
        _sync(self.device)
        start = time.perf_counter()
        out = self._forward(*args, **kwargs)
        _sync(self.device)
        self.calls.append((self.repeat, self.label, int(sample.shape[0]), time.perf_counter() - start))
        self.total += int(sample.shape[0])
        return out

    def call_seconds(self, label: str) -> list[float]:
        return [seconds for _, name, _, seconds in self.calls if name == label]

    def work(self, repeat: int | None) -> dict:
        """UNet sample-evaluations per label in one repeat."""
        out: dict = {}
        for index, label, batch, _ in self.calls:
            if index == repeat:
                out[label] = out.get(label, 0) + batch
        return out

    def summary(self) -> dict:
        """Per label: UNet calls, sample-evaluations and seconds PER REPEAT (the same work in every
        repeat, see check_same_work; work outside the repeats, like the warm-up, counts once), and
        the mean seconds per call over all repeats."""
        out: dict = {}
        for repeat, label, batch, seconds in self.calls:
            row = out.setdefault(label, {"calls": 0, "unet_evals": 0, "seconds": 0.0, "repeats": set()})
            row["calls"] += 1
            row["unet_evals"] += batch
            row["seconds"] += seconds
            row["repeats"].add(repeat)
        for row in out.values():
            row["mean_seconds_per_call"] = row["seconds"] / row["calls"]
            row["repeats"] = count = len(row["repeats"])
            row["calls"] //= count
            row["unet_evals"] //= count
            row["seconds"] /= count
        return out

    def close(self) -> None:
        if self.unet.__dict__.get("forward") is self._counted:
            del self.unet.forward


class BenchmarkError(RuntimeError):
    """The benchmark's own figures do not add up (so its ratios would compare unlike runs)."""


def check_same_work(probe: UnetProbe, repeats: int) -> dict:
    """Every repeat must do the same UNet work per label; returns it. A difference means a cache
    outlived the fresh session, or the work is not deterministic: the medians would be unfair."""
    work = [probe.work(index) for index in range(repeats)]
    for index, counts in enumerate(work[1:], start=1):
        if counts != work[0]:
            differ = sorted(label for label in set(work[0]) | set(counts)
                            if work[0].get(label) != counts.get(label))
            detail = ", ".join(f"{label}: {work[0].get(label, 0)} vs {counts.get(label, 0)}"
                               for label in differ)
            raise BenchmarkError(f"UNet work differs between repeat 0 and repeat {index} ({detail}); "
                                 "every repeat must start from a fresh EditSession with the same settings")
    return work[0] if work else {}


class Recorder:
    """Measures blocks of work: seconds, UNet sample-evaluations and peak memory.

    Blocks nest (a whole edit around its stages). Resetting the memory peak runs the garbage
    collector, which takes real time, so the time spent measuring inside a block is subtracted
    from that block's seconds: neither pipeline is charged for the benchmark's own work.
    """

    def __init__(self, device, probe: UnetProbe, meter: MemoryMeter):
        self.device = device
        self.probe = probe
        self.meter = meter
        self.overhead = 0.0  # wall seconds spent measuring, so far
        self.cpu_overhead = 0.0  # and process CPU seconds

    def _uncharged(self, work):
        start, cpu_start = time.perf_counter(), time.process_time()
        value = work()
        self.overhead += time.perf_counter() - start
        self.cpu_overhead += time.process_time() - cpu_start
        return value

    @contextlib.contextmanager
    def measure(self, label: str):
        """Yields a dict that holds the figures once the block is done."""
        record: dict = {}
        baseline = self._uncharged(self.meter.reset)
        previous, self.probe.label = self.probe.label, label
        evals = self.probe.total
        _sync(self.device)
        overhead, cpu_overhead = self.overhead, self.cpu_overhead
        start = time.perf_counter()
        cpu_start = time.process_time()
        try:
            yield record
        finally:
            _sync(self.device)
            # Minus nested blocks' measuring. CPU time is the whole process's: on a shared
            # machine it moves less than wall time.
            record["seconds"] = time.perf_counter() - start - (self.overhead - overhead)
            record["cpu_seconds"] = (time.process_time() - cpu_start
                                     - (self.cpu_overhead - cpu_overhead))
            record["unet_evals"] = self.probe.total - evals
            record["peak_memory_bytes"] = self._uncharged(self.meter.peak)
            record["start_memory_bytes"] = baseline
            self.probe.label = previous


def _merge(stages: dict, name: str, record: dict) -> None:
    """Add a measured block to a stage (the engine times some stages in more than one block)."""
    stage = stages.setdefault(name, {"seconds": 0.0, "cpu_seconds": 0.0, "unet_evals": 0,
                                     "peak_memory_bytes": 0,
                                     "start_memory_bytes": record["start_memory_bytes"]})
    stage["seconds"] += record["seconds"]
    stage["cpu_seconds"] += record["cpu_seconds"]
    stage["unet_evals"] += record["unet_evals"]
    stage["peak_memory_bytes"] = max(stage["peak_memory_bytes"], record["peak_memory_bytes"])


def _total(record: dict, stages: dict) -> dict:
    """The whole run: wall time and work of the outer block, peak over its stages (each reset it)."""
    peaks = [s["peak_memory_bytes"] for s in stages.values()] + [record["peak_memory_bytes"]]
    return {"seconds": record["seconds"], "cpu_seconds": record["cpu_seconds"],
            "unet_evals": record["unet_evals"],
            "peak_memory_bytes": max(peaks), "start_memory_bytes": record["start_memory_bytes"]}


@contextlib.contextmanager
def engine_stages(recorder: Recorder, prefix: str, stages: dict):
    """Measure each of the engine's own timed stages (mask, encode, decode, paste) separately.

    The engine marks its stages with RunContext.timed; wrapping that method here lets the
    benchmark reset the memory peak and count UNet work per stage without touching the engine.
    """
    from engine import runtime

    original = runtime.RunContext.timed

    @contextlib.contextmanager
    def timed(ctx, stage):
        with recorder.measure(f"{prefix}/{stage}") as record, original(ctx, stage):
            yield
        _merge(stages, stage, record)

    runtime.RunContext.timed = timed
    try:
        yield stages
    finally:
        runtime.RunContext.timed = original


# ---- models -----------------------------------------------------------------------------------


def sd_shaped_folder() -> Path:
    from engine.config import cache_dir

    return cache_dir() / f"bench-sd15-shaped-random-v{SD_SHAPED_VERSION}"


def ensure_sd_shaped_model(folder: Path | None = None) -> Path:
    """A random-weight model with SD 1.5's real sizes, built once (about 4.3 GB) and cached."""
    folder = Path(folder) if folder is not None else sd_shaped_folder()
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the SD-1.5-shaped random model in {folder} (once; about 4.3 GB)...", flush=True)
    # Build beside the target and rename, so an interrupted build is never loaded.
    staging = Path(tempfile.mkdtemp(prefix=".sd-shaped-building-", dir=folder.parent))
    try:
        build_sd_shaped_model(staging)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_sd_shaped_model(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.clip_tokenizer import VOCAB_SIZE, write_tokenizer_files
    from engine.tiny_model import SD_SCHEDULER

    folder = Path(folder)
    torch.manual_seed(0)
    UNet2DConditionModel(**SD15_UNET).save_pretrained(folder / "unet", safe_serialization=True)
    AutoencoderKL(**SD15_VAE).save_pretrained(folder / "vae", safe_serialization=True)
    CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB_SIZE, **SD15_TEXT)).save_pretrained(
        folder / "text_encoder", safe_serialization=True)
    DDIMScheduler(**SD_SCHEDULER).save_pretrained(folder / "scheduler")
    write_tokenizer_files(folder / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def reference_pipeline(model):
    """diffusers' DiffEdit pipeline around the very same loaded modules."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionDiffEditPipeline

    vae = model.vae
    if vae.dtype != model.dtype:
        # Our loader keeps the VAE in fp32 under an fp16 UNet; the reference feeds VAE latents
        # straight into the UNet, so it needs them in one dtype (as from_pretrained(torch_dtype=)
        # would load it). The copy only makes the reference lighter, never heavier.
        vae = copy.deepcopy(vae).to(model.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = StableDiffusionDiffEditPipeline(
            vae=vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
            scheduler=DDIMScheduler.from_config(model.scheduler_config),
            safety_checker=None, feature_extractor=None,
            inverse_scheduler=DDIMInverseScheduler.from_config(model.scheduler_config),
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- the runs ---------------------------------------------------------------------------------


def warm_up(model, geometry, probe: UnetProbe) -> None:
    """One untimed UNet call at each batch size and one VAE round trip, so neither pipeline pays
    first-call set-up costs (kernel selection, allocator growth) inside its figures."""
    import torch

    lw, lh = geometry.latent_size
    text = torch.zeros(1, model.tokenizer.model_max_length, model.text_encoder.config.hidden_size,
                       device=model.device, dtype=model.dtype)
    probe.label = "warm-up"
    with torch.no_grad():
        for batch in (1, 2):
            latents = torch.zeros(batch, 4, lh, lw, device=model.device, dtype=model.dtype)
            model.unet(latents, 500, encoder_hidden_states=text.expand(batch, -1, -1))
        pixels = torch.zeros(1, 3, lh * 8, lw * 8, device=model.device, dtype=model.vae.dtype)
        model.vae.decode(model.vae.encode(pixels).latent_dist.mean)
    probe.label = "idle"


def run_reference(model, working_rgb: np.ndarray, params, source: str, target: str,
                  recorder: Recorder) -> dict:
    """diffusers' documented DiffEdit recipe: generate_mask, invert (source text), __call__."""
    import torch
    from PIL import Image

    pipe = reference_pipeline(model)
    image = Image.fromarray(working_rgb)
    generator = torch.Generator("cpu").manual_seed(params.seed)
    stages: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with recorder.measure("reference") as outer:
            with recorder.measure("reference/mask") as record:
                mask = pipe.generate_mask(
                    image=image, source_prompt=source, target_prompt=target,
                    num_maps_per_mask=params.mask_samples, mask_encode_strength=params.mask_noise,
                    num_inference_steps=params.steps, guidance_scale=params.guidance,
                    generator=generator)
            _merge(stages, "mask", record)
            with recorder.measure("reference/encode") as record:
                inverted = pipe.invert(
                    prompt=source, image=image, num_inference_steps=params.steps,
                    inpaint_strength=params.strength, guidance_scale=params.guidance,
                    generator=generator).latents
            _merge(stages, "encode", record)
            with recorder.measure("reference/decode") as record:
                edited = pipe(
                    prompt=target, mask_image=mask, image_latents=inverted,
                    inpaint_strength=params.strength, num_inference_steps=params.steps,
                    guidance_scale=params.guidance, negative_prompt=source, eta=params.eta,
                    generator=generator, output_type="np").images[0]
            _merge(stages, "decode", record)
    del pipe, inverted
    return {"stages": stages, "total": _total(outer, stages),
            "mask_fraction": float(np.mean(mask)), "finite_output": bool(np.isfinite(edited).all())}


def run_ours(session, mask, params, source: str, target: str, recorder: Recorder, label: str):
    """One EditSession.edit, measured per engine stage; returns (figures, EditResult)."""
    stages: dict = {}
    with engine_stages(recorder, label, stages), recorder.measure(label) as outer:
        result = session.edit(source, target, mask, params)
    figures = {"stages": stages, "total": _total(outer, stages),
               "engine_reported": {"seconds": result.stats.get("seconds", {}),
                                   "unet_evals": result.stats.get("unet_evals", {})}}
    return figures, result


def brush_stroke(size: tuple[int, int]) -> np.ndarray:
    """A soft round-tipped stroke across the lower left of the photo, as a user might add."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ax, ay, bx, by = 0.15 * width, 0.70 * height, 0.45 * width, 0.85 * height
    # Distance of every pixel to the segment a-b.
    t = np.clip(((xs - ax) * (bx - ax) + (ys - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    distance = np.hypot(xs - (ax + t * (bx - ax)), ys - (ay + t * (by - ay)))
    radius = 0.05 * min(width, height)
    return np.clip(radius + 1.0 - distance, 0.0, 1.0).astype(np.float32)  # 1 px soft edge


def run_re_edit(session, first_result, params, source: str, target: str, recorder: Recorder) -> dict:
    """Refine the auto mask with a brush stroke and edit again: no new mask estimate, no new inversion."""
    from engine import masks

    refined = np.maximum(masks.threshold(first_result.heatmap, params.mask_threshold),
                         brush_stroke(session.size))
    re_edit, _ = run_ours(session, refined, params, source, target, recorder, "ours/re-edit")
    return re_edit


def measure_rethreshold(heatmap: np.ndarray, photo_size, params, probe: UnetProbe) -> dict:
    """The threshold slider: the app's fold of the cached heatmap and the strokes at a new level."""
    from desktop_app.mask_layers import MaskLayers, Segment, fold
    from engine import masks

    side = RETHRESHOLD_SIDE
    heatmap = masks.resize(heatmap, (side, side))
    added = masks.resize(brush_stroke(photo_size), (side, side))
    erased = masks.resize(brush_stroke(photo_size)[::-1, ::-1].copy(), (side, side))
    layers = MaskLayers(heatmap=heatmap, segments=[Segment(added=added, erased=erased)])
    fold(layers, params.mask_threshold, heatmap.shape)  # first call pays imports
    levels = np.linspace(0.3, 0.7, RETHRESHOLD_REPEATS)
    seconds = []
    evals = probe.total
    for level in levels:
        start = time.perf_counter()
        fold(layers, float(level), heatmap.shape)
        seconds.append(time.perf_counter() - start)
    return {"size": [side, side], "repeats": len(seconds),
            "seconds_median": statistics.median(seconds), "seconds_max": max(seconds),
            "unet_evals": probe.total - evals}


def run_repeat(index: int, model, photo, working_rgb: np.ndarray, params, source: str, target: str,
               recorder: Recorder, scenarios: set) -> dict:
    """One repeat of the compare and interactive scenarios, on a fresh EditSession so that our first
    edit pays for its mask and inversion again. The reference goes first on even repeats and ours
    on odd ones, so drifting machine load and caches warmed by the other side favour neither."""
    from engine.session import EditSession

    session = EditSession(model, photo)
    out: dict = {}

    def reference():
        out["reference"] = run_reference(model, working_rgb, params, source, target, recorder)

    def ours():
        out["ours"], first_result = run_ours(session, None, params, source, target, recorder, "ours")
        out["heatmap"] = first_result.heatmap  # for the re-threshold timing, after the repeats
        if "interactive" in scenarios:
            out["re_edit"] = run_re_edit(session, first_result, params, source, target, recorder)

    sides = [reference, ours] if "compare" in scenarios else [ours]
    recorder.probe.repeat = index
    try:
        for side in sides if index % 2 == 0 else sides[::-1]:
            side()
    finally:
        recorder.probe.repeat = None
    return out


def median_run(runs: list[dict]) -> dict:
    """The run whose total seconds is the median (the lower middle one for an even count), kept
    whole so its per-stage figures add up, with every run's total and the spread (min-max)."""
    totals = [run["total"]["seconds"] for run in runs]
    chosen = totals.index(statistics.median_low(totals))
    return {**runs[chosen], "repeats": {"totals_seconds": totals, "median_repeat": chosen,
                                        "min_seconds": min(totals), "max_seconds": max(totals)}}


def measure_preview(model, geometry, probe: UnetProbe) -> dict:
    """latent_preview on a working-size latent against the mean decoding UNet step."""
    import torch

    from engine.preview import latent_preview

    lw, lh = geometry.latent_size
    latent = torch.randn(1, 4, lh, lw, generator=torch.Generator("cpu").manual_seed(0)).to(model.device)
    latent_preview(latent, geometry.latent_content)
    seconds = []
    for _ in range(PREVIEW_REPEATS):
        _sync(model.device)
        start = time.perf_counter()
        latent_preview(latent, geometry.latent_content)
        seconds.append(time.perf_counter() - start)
    # Every repeat's decoding steps: the mean step over all of them.
    steps = probe.call_seconds("ours/decode") or probe.call_seconds("ours/re-edit/decode")
    step = statistics.mean(steps) if steps else float("nan")
    preview = statistics.median(seconds)
    return {"latent_size": [lw, lh], "preview_seconds": preview, "unet_step_seconds": step,
            "unet_step_calls": len(steps), "ratio": preview / step if steps else None}


def run_gui_stall(model_source: str, photo, params, source: str, target: str, device: str,
                  dtype: str, threads: int) -> dict:
    """The app's engine thread runs a full edit while a 5 ms timer ticks on the GUI thread; the
    longest gap between ticks is the worst stall a user would feel (issue 5: under 100 ms)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QApplication

    from desktop_app.worker import EditRequest, EngineController, LoadModelRequest
    from engine.runs import RunRequest
    from engine.errors import ModelError

    app = QApplication.instance() or QApplication([])
    controller = EngineController()
    loop = QEventLoop()
    states: list[tuple[str, str]] = []
    failures: list[str] = []
    previews = [0]

    def on_state(state, message):
        states.append((state, message))
        if state != "loading":
            loop.quit()

    def on_preview(job_id, rgb):
        # What the canvas does with a preview: wrap the pixels and copy them into a QImage.
        height, width = rgb.shape[:2]
        QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
        previews[0] += 1

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    controller.model_state.connect(on_state)
    controller.preview.connect(on_preview)
    controller.job_failed.connect(lambda job_id, message, details: failures.append(message))
    controller.job_finished.connect(lambda job_id: loop.quit())
    try:
        if threads:
            # The engine thread is a new thread; torch's thread count is process-wide.
            import torch

            torch.set_num_threads(threads)
        controller.load_model(LoadModelRequest(model_source, device=device, dtype=dtype))
        loop.exec()
        if not states or states[-1][0] != "ready":
            raise ModelError(f"the app's engine thread could not load the model: {states[-1][1] if states else '?'}")
        # A first, unmeasured edit warms the caches' code paths; the measured one is a new photo key
        # so it does the whole edit (mask, encoding, decoding, paste-back).
        for key in ("warm-up", "measured"):
            ticks.clear()
            previews[0] = 0
            timer.start()
            start = time.perf_counter()
            run = RunRequest(photo, key, "diffedit", source, target, None, params)
            controller.submit(EditRequest(job_id=controller.next_job_id(), run=run))
            loop.exec()
            end = time.perf_counter()
            timer.stop()
        if failures:
            raise ModelError(f"the edit failed on the app's engine thread: {failures[-1]}")
        gaps = np.diff([start, *ticks, end])
    finally:
        controller.shutdown()
    return {"seconds": end - start, "timer_interval_ms": 5, "ticks": len(ticks),
            "previews": previews[0], "worst_stall_ms": float(gaps.max() * 1000),
            "p99_gap_ms": float(np.percentile(gaps, 99) * 1000), "qt_app": type(app).__name__}


# ---- targets and printing ---------------------------------------------------------------------


def _ratio(ours, reference):
    if ours is None or not reference:
        return None
    return ours / reference


def targets(figures: dict) -> list[dict]:
    """Issue 5's targets; value None means the scenario that measures it was not run."""
    ours, ref = figures.get("ours"), figures.get("reference")
    inter, preview, gui = figures.get("interactive"), figures.get("preview"), figures.get("gui")
    rows = []

    def add(name, value, limit, passed, unit=""):
        rows.append({"target": name, "value": value, "limit": limit, "unit": unit,
                     "passed": None if value is None else bool(passed(value))})

    if ours and ref:
        allowed = EVALS_RATIO_LIMIT * ref["total"]["unet_evals"]
        add(f"UNet sample-evaluations per edit (reference {ref['total']['unet_evals']})",
            ours["total"]["unet_evals"], f"<= {allowed:g}", lambda v: v <= allowed)
        add("Wall time of an edit, ours / reference",
            _ratio(ours["total"]["seconds"], ref["total"]["seconds"]), f"<= {WALL_RATIO_LIMIT}",
            lambda v: v <= WALL_RATIO_LIMIT, "x")
        add("Peak memory, ours / reference",
            _ratio(ours["total"]["peak_memory_bytes"], ref["total"]["peak_memory_bytes"]),
            f"<= {MEMORY_RATIO_LIMIT}", lambda v: v <= MEMORY_RATIO_LIMIT, "x")
    if inter:
        re_edit = inter["re_edit"]["seconds"]
        add("Re-edit after a mask stroke / our first edit",
            _ratio(re_edit, inter["first_edit"]["seconds"]), f"<= {RE_EDIT_VS_FIRST_LIMIT}",
            lambda v: v <= RE_EDIT_VS_FIRST_LIMIT, "x")
        add("Re-edit after a mask stroke / reference full edit",
            _ratio(re_edit, ref["total"]["seconds"]) if ref else None,
            f"<= {RE_EDIT_VS_REFERENCE_LIMIT}", lambda v: v <= RE_EDIT_VS_REFERENCE_LIMIT, "x")
        rt = inter["rethreshold"]
        add("Re-threshold: UNet sample-evaluations", rt["unet_evals"], "0", lambda v: v == 0)
        add(f"Re-threshold at {rt['size'][0]}x{rt['size'][1]} (median of {rt['repeats']})",
            rt["seconds_median"] * 1000, f"< {RETHRESHOLD_SECONDS_LIMIT * 1000:g} ms",
            lambda v: v < RETHRESHOLD_SECONDS_LIMIT * 1000, " ms")
    if preview:
        add("Preview / mean decoding UNet step", preview["ratio"], f"< {PREVIEW_RATIO_LIMIT}",
            lambda v: v < PREVIEW_RATIO_LIMIT, "x")
    if gui:
        add("Worst GUI-thread stall during an edit in the app's engine thread", gui["worst_stall_ms"],
            f"< {GUI_STALL_MS_LIMIT} ms", lambda v: v < GUI_STALL_MS_LIMIT, " ms")
    return rows


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def _fmt(value, digits=2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _spread(label: str, values: list[float], unit: str = " s") -> str:
    """'label 1.40, 1.32, 1.55 (1.32-1.55 s)': every repeat in run order, then min-max."""
    listed = ", ".join(f"{value:.2f}" for value in values)
    return f"{label} {listed} ({min(values):.2f}-{max(values):.2f}{unit})"


def _repeats_line(runs: list[tuple[str, list[float], str]], n: int) -> str:
    return (f"Over {n} repeats, in run order (median run shown above): "
            + "; ".join(_spread(label, values, unit) for label, values, unit in runs))


def report(figures: dict) -> str:
    cfg = figures["config"]
    out = [f"## DiffEdit benchmark: {cfg['model']} on {cfg['device_name']} ({cfg['dtype']}), "
           f"working size {cfg['working_size'][0]}x{cfg['working_size'][1]}, {cfg['steps']} steps, "
           f"strength {cfg['strength']}, {cfg['mask_samples']} mask samples, CFG {cfg['guidance']}",
           f"memory: {cfg['memory_method']}; torch {cfg['torch']}, diffusers {cfg['diffusers']}, "
           f"{cfg['threads']} threads; {cfg['repeat']} repeat(s) per side, each side's median run "
           f"shown ({cfg['order']})", ""]
    ours, ref = figures.get("ours"), figures.get("reference")
    if ours and ref:
        rows = []
        for stage in ("mask", "encode", "decode", "paste", "total"):
            r = ref["total"] if stage == "total" else ref["stages"].get(stage)
            o = ours["total"] if stage == "total" else ours["stages"].get(stage)
            if r is None and o is None:
                continue
            get = (lambda d, k: None if d is None else d[k])
            rows.append([
                stage,
                _fmt(get(r, "unet_evals")), _fmt(get(o, "unet_evals")),
                _fmt(_ratio(get(o, "unet_evals"), get(r, "unet_evals"))),
                _fmt(get(r, "seconds")), _fmt(get(o, "seconds")),
                _fmt(_ratio(get(o, "seconds"), get(r, "seconds"))),
                _mib(get(r, "peak_memory_bytes")), _mib(get(o, "peak_memory_bytes")),
                _fmt(_ratio(get(o, "peak_memory_bytes"), get(r, "peak_memory_bytes"))),
            ])
        out += ["### One edit: reference vs ours", _table(
            ["stage", "UNet evals ref", "ours", "ratio", "seconds ref", "ours", "ratio",
             "peak MiB ref", "ours", "ratio"], rows),
                f"Process CPU time of the edit: reference {ref['total']['cpu_seconds']:.2f} s, ours "
                f"{ours['total']['cpu_seconds']:.2f} s, ratio "
                f"{_fmt(_ratio(ours['total']['cpu_seconds'], ref['total']['cpu_seconds']))} "
                "(steadier than wall time when other work shares the machine)",
                _repeats_line([("reference seconds", ref["repeats"]["totals_seconds"], " s"),
                               ("ours", ours["repeats"]["totals_seconds"], " s"),
                               ("ours / reference per repeat", figures["wall_ratio_per_repeat"], "x")],
                              cfg["repeat"]), ""]
    inter = figures.get("interactive")
    if inter:
        rt = inter["rethreshold"]
        first = inter["first_edit"]
        rows = [["first edit (auto mask)", _fmt(first["unet_evals"]), _fmt(first["seconds"]),
                 "1.00", _fmt(_ratio(first["seconds"], ref["total"]["seconds"]) if ref else None)],
                ["re-edit after a brush stroke", _fmt(inter["re_edit"]["unet_evals"]),
                 _fmt(inter["re_edit"]["seconds"]),
                 _fmt(_ratio(inter["re_edit"]["seconds"], first["seconds"])),
                 _fmt(_ratio(inter["re_edit"]["seconds"], ref["total"]["seconds"]) if ref else None)],
                [f"re-threshold {rt['size'][0]}x{rt['size'][1]} (median; max)", _fmt(rt["unet_evals"]),
                 f"{rt['seconds_median'] * 1000:.1f} ms; {rt['seconds_max'] * 1000:.1f} ms", "-", "-"]]
        out += ["### Interactive loop", _table(
            ["step", "UNet evals", "seconds", "/ our first edit", "/ reference edit"], rows),
                _repeats_line([("first edit seconds", inter["first_edit_repeats"]["totals_seconds"], " s"),
                               ("re-edit", inter["re_edit_repeats"]["totals_seconds"], " s"),
                               ("re-edit / first edit per repeat", inter["re_edit_vs_first_per_repeat"], "x")],
                              cfg["repeat"]), ""]
    preview = figures.get("preview")
    if preview:
        out += [f"Preview: latent_preview on a {preview['latent_size'][0]}x{preview['latent_size'][1]} "
                f"latent takes {preview['preview_seconds'] * 1000:.3f} ms; mean decoding UNet step "
                f"{preview['unet_step_seconds'] * 1000:.1f} ms ({preview['unet_step_calls']} calls); "
                f"ratio {_fmt(preview['ratio'], 4)}", ""]
    gui = figures.get("gui")
    if gui:
        out += [f"GUI responsiveness: a {gui['seconds']:.2f} s edit on the app's engine thread, "
                f"{gui['previews']} previews shown; 5 ms timer on the GUI thread ticked {gui['ticks']} "
                f"times; worst gap {gui['worst_stall_ms']:.1f} ms, 99th percentile "
                f"{gui['p99_gap_ms']:.1f} ms", ""]
    rows = []
    for row in figures["targets"]:
        value = row["value"]
        shown = "-" if value is None else (_fmt(value, 3) if isinstance(value, float) else str(value))
        verdict = {True: "PASS", False: "FAIL", None: "not run"}[row["passed"]]
        rows.append([row["target"], shown + ("" if value is None else row["unit"]), row["limit"], verdict])
    out += ["### Targets (issue 5)", _table(["target", "measured", "limit", "result"], rows)]
    return "\n".join(out)


# ---- entry points -----------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Our DiffEdit against diffusers' StableDiffusionDiffEditPipeline: UNet work, "
                    "time and peak memory per stage, the interactive loop, and the preview cost.")
    parser.add_argument("--model", default=None,
                        help="'tiny' (default), a diffusers folder, a hub id in the local cache, or a .safetensors file")
    parser.add_argument("--sd-shaped", action="store_true",
                        help="a random-weight model with SD 1.5's sizes (built once in the cache folder); "
                             "use with --resolution 256 on a CPU")
    parser.add_argument("--resolution", type=int, default=0, help="working side in px (0: the model's native size)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--strength", type=float, default=0.8)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--mask-samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
    parser.add_argument("--photo", default=str(DEFAULT_PHOTO))
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--target", default=DEFAULT_TARGET)
    parser.add_argument("--scenario", choices=("all", "both", "compare", "interactive", "gui"), default="all",
                        help="compare: reference vs ours; interactive: re-edit and re-threshold; "
                             "gui: worst GUI-thread stall during an edit in the app's engine thread; "
                             "both: compare + interactive; all (default): everything")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the compare and interactive scenarios N times (fresh session each, "
                             "alternating which side goes first) and report each side's median run")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: the physical cores, as the CLI); "
                             "1 steadies figures on a busy machine")
    parser.add_argument("--json", dest="json_out", default=None, help="write the figures to this JSON file")
    return parser.parse_args(argv)


def run(argv=None) -> dict:
    """Run the benchmark; returns the figures (and prints the report). Raises EngineError on bad input."""
    args = parse_args(argv)
    import diffusers
    import torch

    from engine.errors import InputError
    from engine.imaging import load_photo
    from engine.models import load_model
    from engine.params import EditParams
    from engine.runtime import set_threads
    from engine.session import EditSession

    if args.repeat < 1:
        raise InputError(f"--repeat must be 1 or more, got {args.repeat}")
    args.threads = set_threads(args.threads)  # the figures name the count that ran
    if args.sd_shaped and args.model:
        raise InputError("--sd-shaped builds its own model: leave out --model (or drop --sd-shaped)")
    params = EditParams(steps=args.steps, strength=args.strength, guidance=args.guidance,
                        mask_samples=args.mask_samples, seed=args.seed,
                        resolution=args.resolution).validate()
    photo = load_photo(args.photo)
    model_label = model_source = args.model or "tiny"
    if args.sd_shaped:
        model_source = str(ensure_sd_shaped_model())
        model_label = "SD-1.5-shaped random weights"
    model = load_model(model_source, device=args.device, dtype=args.dtype)
    session = EditSession(model, photo)
    geometry = session.geometry(params)
    device = model.device
    probe = UnetProbe(model.unet, device)
    meter = MemoryMeter(device)
    recorder = Recorder(device, probe, meter)
    figures: dict = {"config": {
        "model": model_label, "photo": str(args.photo), "photo_size": list(session.size),
        "working_size": list(geometry.padded_size), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores",
        "dtype": str(model.dtype).replace("torch.", ""), "steps": params.steps,
        "strength": params.strength, "guidance": params.guidance, "mask_samples": params.mask_samples,
        "seed": params.seed, "source": args.source, "target": args.target,
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(), "memory_method": meter.method, "repeat": args.repeat,
        "order": "reference first on even repeats (0, 2, ...), ours first on odd ones",
    }}
    scenarios = {"all": {"compare", "interactive", "gui"}, "both": {"compare", "interactive"}}.get(
        args.scenario, {args.scenario})
    try:
        warm_up(model, geometry, probe)
        if scenarios & {"compare", "interactive"}:
            working = geometry.to_working(session.rgb)
            runs = [run_repeat(index, model, photo, working, params, args.source, args.target,
                               recorder, scenarios) for index in range(args.repeat)]
            check_same_work(probe, args.repeat)
            ours = median_run([run["ours"] for run in runs])
            if "compare" in scenarios:
                figures["reference"] = median_run([run["reference"] for run in runs])
                figures["ours"] = ours
                # Paired within a repeat, so they show the noise in the ratio itself.
                figures["wall_ratio_per_repeat"] = [
                    run["ours"]["total"]["seconds"] / run["reference"]["total"]["seconds"] for run in runs]
            if "interactive" in scenarios:
                re_edit = median_run([run["re_edit"] for run in runs])
                figures["interactive"] = {
                    "first_edit": ours["total"], "first_edit_stages": ours["stages"],
                    "first_edit_repeats": ours["repeats"],
                    "re_edit": re_edit["total"], "re_edit_stages": re_edit["stages"],
                    "re_edit_repeats": re_edit["repeats"],
                    "re_edit_vs_first_per_repeat": [
                        run["re_edit"]["total"]["seconds"] / run["ours"]["total"]["seconds"] for run in runs],
                    "rethreshold": measure_rethreshold(runs[-1]["heatmap"], session.size, params, probe),
                }
            figures["preview"] = measure_preview(model, geometry, probe)
    finally:
        probe.close()
    figures["unet_calls"] = probe.summary()
    if "gui" in scenarios:
        # The app's engine thread loads its own copy of the model: let this one go first.
        model = session = probe = recorder = runs = None
        gc.collect()
        figures["gui"] = run_gui_stall(model_source, photo, params, args.source, args.target,
                                       args.device, args.dtype, args.threads)
    figures["targets"] = targets(figures)
    print(report(figures), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return figures


def main(argv=None) -> int:
    from engine.errors import EngineError, InputError

    try:
        run(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (EngineError, BenchmarkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
