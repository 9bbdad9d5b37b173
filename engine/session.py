"""EditSession: one photo on one model, with the caches that make re-editing cheap.

Caches are keyed by exactly what they depend on: text embeddings by prompt; the photo's latent
by working geometry; the DDIM encoding by (geometry, steps, encoded steps), independent of the
prompts because DiffEdit encodes without text; the mask heatmap by (geometry, texts, samples,
noise, seed). Refining the mask or changing the target text therefore skips the encoding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import OrderedDict

import numpy as np
import torch

from engine import backbones, masks, memory, seams
from engine.backbones import Conditioning
from engine.errors import InputError
from engine.geometry import WorkingGeometry, default_feather
from engine.inversion import Schedule, ddim_invert
from engine import methods
from engine.methods import diffedit
from engine.fields import AUTO
from engine.params import EditParams
from engine.results import EditResult
from engine.runtime import OnStep, RunContext, ShouldStop

MIN_PHOTO_SIDE = 8


def _widen(low: int, high: int, size: int, limit: int) -> tuple[int, int]:
    """Grow [low, high) to at least ``size`` (within [0, limit)), keeping it centred."""
    missing = min(size, limit) - (high - low)
    if missing <= 0:
        return low, high
    low = max(0, low - missing // 2)
    high = min(limit, low + max(size, high - low))
    return max(0, high - max(size, high - low)), high


class _Lru(OrderedDict):
    """A small least-recently-used cache."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, build):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = build()
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class EditSession:
    """A photo on a model; estimate masks and edit, reusing whatever has not changed."""

    def __init__(self, model, photo):
        rgb = getattr(photo, "rgb", photo)
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"the photo must be an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
        height, width = rgb.shape[:2]
        if min(width, height) < MIN_PHOTO_SIDE:
            raise InputError(f"the photo is {width}x{height}; it must be at least "
                             f"{MIN_PHOTO_SIDE} pixels on each side")
        self.model = model
        self.backbone = backbones.for_model(model)  # every model call of the methods goes here
        self.rgb = rgb
        self.photo = photo
        # The whole photo's size and where in it this session's pixels lie (None: all of it);
        # a region's session (sub_session) says which box it is.
        self.origin: tuple[tuple[int, int], tuple | None] = (self.size, None)
        self._embeddings = _Lru(16)
        self._instructions = _Lru(4)  # (instruction, geometry): text encoders that see the photo
        self._latents = _Lru(2)
        self._trajectories = _Lru(2)
        self._heatmaps = _Lru(8)
        self._regions = _Lru(2)
        self._schedules = _Lru(4)
        self.warnings: list[str] = []  # of the run in progress (shared with region sessions)
        self.mask_stats: dict = {}  # seconds and UNet work of the last estimate_mask

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    # ---- public API -------------------------------------------------------------------------

    def estimate_mask(self, source: str, target: str, params: EditParams = EditParams(), *,
                      method: str = "diffedit", on_step: OnStep | None = None,
                      should_stop: ShouldStop | None = None) -> np.ndarray:
        """The heatmap of ``method``'s automatic mask at the photo's resolution, in [0, 1]
        (threshold it to get a mask): DiffEdit's from the two texts, or the one its module's
        ``mask_conditions`` contrast (``instruct``: with and without the instruction)."""
        self.warnings.clear()
        methods.check_inputs(method, source, target, None, params)
        self.check_supported(method)
        params = self.embed_guidance(params)
        source, target = (source or "").strip(), target.strip()
        geometry = self.geometry(params)

        def estimate(ctx):
            heatmap = geometry.latent_map_to_photo(
                self._heatmap(ctx, geometry, source, target, params, method))
            self.mask_stats = ctx.stats()
            if not heatmap.any():
                self.warnings.append(masks.TEXTS_AGREE)
            return heatmap
        return self._with_memory_fallback(estimate, on_step, should_stop)

    def edit(self, source: str, target: str, mask: np.ndarray | None, params: EditParams = EditParams(), *,
             on_step: OnStep | None = None, should_stop: ShouldStop | None = None) -> EditResult:
        """DiffEdit inside ``mask`` (full-resolution, 1 = edit); estimate the mask first when None."""
        return self.run("diffedit", source, target, mask, params, on_step=on_step,
                        should_stop=should_stop)[0]

    def run(self, method: str, source: str, target: str, mask: np.ndarray | None,
            params: EditParams | None = None, options: dict | None = None, *,
            on_step: OnStep | None = None, should_stop: ShouldStop | None = None) -> list[EditResult]:
        """Run any registered method; returns its results (several for multi-candidate methods).
        Without ``params``, this photo's defaults for the method (``default_params``)."""
        self.warnings.clear()
        if params is None:
            params = self.default_params(method)
        params = self.resolved(params)
        parsed = methods.check_inputs(method, source, target, mask, params, options,
                                      methods.PAINT_IN_PHOTO)
        self.check_supported(method)
        if self.backbone.distilled and params.guidance != 1.0:
            self.warnings.append(f"guidance {params.guidance:g} was ignored: {self.backbone.title} "
                                 "is step-distilled (its guidance is built in)")
            params = params.replace(guidance=1.0)
        sampling = self.embed_guidance(params)
        source, target = (source or "").strip(), target.strip()
        if mask is not None:
            mask = self.check_mask(mask)
        implementation = methods.implementation(method, self.backbone.prediction_type)
        started = time.perf_counter()
        results = self._with_memory_fallback(
            lambda ctx: implementation.run(self, ctx, source, target, mask, sampling, parsed),
            on_step, should_stop)
        total = round(time.perf_counter() - started, 4)
        for result in results:
            result.stats["seconds"]["total"] = total
        if sampling is not params:  # the record keeps the scale the model read
            results = [dataclasses.replace(result, params=params) for result in results]
        return results

    def embed_guidance(self, params: EditParams) -> EditParams:
        """``params`` as the methods sample with them: on a model that reads the guidance scale
        as an input (``Backbone.guidance_embedded``: FLUX.1 [dev], Kontext) the backbone takes the
        scale for every prediction and the methods sample without CFG (guidance 1)."""
        if not self.backbone.guidance_embedded:
            return params
        self.backbone.guidance_scale = params.guidance
        return params.replace(guidance=1.0)

    def check_supported(self, method: str) -> None:
        """InputError when the loaded model's backbone cannot run ``method``."""
        backbone = self.backbone
        if method not in backbone.methods:
            usable = [name for name in methods.METHODS if name in backbone.methods]
            title = getattr(backbone, "title", backbone.family)
            choose = f"choose {', '.join(usable)}" if usable else "no editing method runs on them yet"
            raise InputError(f"{methods.info(method).title} does not run on {title} models; "
                             f"{choose}", field="method")

    def default_params(self, method: str = "diffedit") -> EditParams:
        """The method's own defaults (``MethodInfo.default_params``) with the family's
        (``Backbone.defaults``: a 4-step model's steps), as this photo runs them."""
        return self.resolved(methods.info(method).default_params().replace(**self.backbone.defaults))

    def resolved(self, params: EditParams) -> EditParams:
        """``params`` with an AUTO feather replaced by this photo's (``geometry.default_feather``
        at the working resolution): what a run uses and its metadata records."""
        if params.feather != AUTO:
            return params
        side = params.resolution or self.backbone.native_side
        return params.replace(feather=default_feather(self.size, side))

    def _with_memory_fallback(self, work, on_step, should_stop):
        """``work(ctx)``, tried once more at the next memory tier if it runs out of memory."""
        return memory.with_fallback(
            self.model, lambda: work(RunContext(self.model, on_step, should_stop, self.backbone)),
            self.warnings.append)

    # ---- shared building blocks (also used by other methods) ---------------------------------

    def check_mask(self, mask: np.ndarray) -> np.ndarray:
        """A user mask as float32 at the photo's size, refusing a wrong size (check_inputs refused an
        empty one)."""
        mask = np.asarray(mask, np.float32)
        if mask.shape != self.rgb.shape[:2]:
            shape = "x".join(str(n) for n in mask.shape[::-1])
            raise InputError(f"the mask is {shape} but the photo is "
                             f"{self.size[0]}x{self.size[1]}; they must match")
        return np.clip(mask, 0.0, 1.0)

    def auto_mask(self, ctx: RunContext, geometry: WorkingGeometry, source: str, target: str,
                  params: EditParams, method: str = "diffedit") -> tuple[np.ndarray, np.ndarray]:
        """(heatmap, mask) at the photo's size: ``method``'s estimate (estimate_mask)
        thresholded at the params'."""
        heatmap = geometry.latent_map_to_photo(
            self._heatmap(ctx, geometry, source, target, params, method))
        return heatmap, masks.threshold_auto(heatmap, params.mask_threshold)

    def encode(self, ctx: RunContext, geometry: WorkingGeometry, schedule: Schedule,
               params: EditParams) -> list[torch.Tensor]:
        """The unconditional DDIM trajectory of the photo to params.encode_steps (cached)."""
        return self._trajectory(ctx, geometry, schedule, params)

    def finish(self, ctx: RunContext, geometry: WorkingGeometry, latent: torch.Tensor,
               mask: np.ndarray | None, params: EditParams, source: str, target: str, method: str,
               options=None, heatmap: np.ndarray | None = None) -> EditResult:
        """Decode ``latent``, scale it to the photo and paste it back through ``mask``
        (None: the whole photo changes)."""
        with ctx.timed("decode"):
            decoded = self.decode_latent(latent)
        with ctx.timed("paste"):
            if mask is None:  # a global edit: the photo's finer detail is kept where it can be
                image = geometry.from_working_with_detail(decoded, self.rgb)
                mask = np.ones(self.rgb.shape[:2], np.float32)
            else:
                edited = geometry.from_working(decoded)
                alpha = masks.paste_alpha(mask, params.feather)
                if params.seam == "poisson":
                    edited = seams.poisson_edit(self.rgb, edited, alpha)
                image = masks.composite(self.rgb, edited, alpha)
        stats = ctx.stats()
        stats["working_size"] = list(geometry.padded_size)
        option_values = dataclasses.asdict(options) if options is not None else {}
        return EditResult(image=image, mask=mask, heatmap=heatmap, source=source, target=target,
                          params=params, model_name=self.model.name, method=method,
                          loras=list(self.model.loras),
                          options=option_values, stats=stats, warnings=list(self.warnings))

    def region_for(self, mask: np.ndarray, params: EditParams) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) of the part of a big photo worth editing alone, or None.

        When the photo is much larger than the model's working area and the mask covers a small
        part of it, editing that part (with context around it) at the working size keeps far
        more detail than editing the whole photo. Boxes snap to a grid so that refining the mask
        a little keeps the same box, and with it the cached encoding.
        """
        side = params.resolution or self.backbone.native_side
        width, height = self.size
        if not params.crop_to_mask or width * height < 2 * side * side:
            return None
        rows = np.flatnonzero((mask > 0).any(axis=1))
        cols = np.flatnonzero((mask > 0).any(axis=0))
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        context = max(side // 4, (max(bottom - top, right - left) + 2 * params.feather) // 2)
        grid = max(8, side // 8)
        left, top = (max(0, v - context) // grid * grid for v in (left, top))
        right = min(width, -(-(right + context) // grid) * grid)
        bottom = min(height, -(-(bottom + context) // grid) * grid)
        # Never smaller than the working area: cropping below it gains nothing.
        left, right = _widen(left, right, side, width)
        top, bottom = _widen(top, bottom, side, height)
        if (right - left) * (bottom - top) > 0.5 * width * height:
            return None
        # A box already encoded that still holds the mask with some context wins: refining the
        # mask then re-runs only the decoding.
        margin = params.feather + grid
        needed = (max(0, cols[0] - margin), max(0, rows[0] - margin),
                  min(width, cols[-1] + 1 + margin), min(height, rows[-1] + 1 + margin))
        area = (right - left) * (bottom - top)
        for box in reversed(self._regions):
            holds = box[0] <= needed[0] and box[1] <= needed[1] and box[2] >= needed[2] and box[3] >= needed[3]
            if holds and (box[2] - box[0]) * (box[3] - box[1]) <= 2 * area:
                return box
        return int(left), int(top), int(right), int(bottom)

    def sub_session(self, box: tuple[int, int, int, int]) -> "EditSession":
        """A session on one region of this photo (cached per box); it shares the text cache."""
        def build():
            left, top, right, bottom = box
            sub = EditSession(self.model, np.ascontiguousarray(self.rgb[top:bottom, left:right]))
            photo_size, outer = self.origin
            x, y = (outer[0], outer[1]) if outer else (0, 0)
            sub.origin = (photo_size, (left + x, top + y, right + x, bottom + y))
            sub._embeddings = self._embeddings
            sub.warnings = self.warnings
            return sub
        return self._regions.get_or(box, build)

    def place(self, result: "EditResult", box: tuple[int, int, int, int],
              heatmap: np.ndarray | None) -> "EditResult":
        """A region's result put back into the full photo (outside the box: the original)."""
        left, top, right, bottom = box
        image = self.rgb.copy()
        image[top:bottom, left:right] = result.image
        mask = np.zeros(self.rgb.shape[:2], np.float32)
        mask[top:bottom, left:right] = result.mask
        result.stats["region"] = [left, top, right, bottom]
        return dataclasses.replace(result, image=image, mask=mask, heatmap=heatmap)

    def schedule(self, steps: int, geometry: WorkingGeometry | None = None) -> Schedule:
        """The schedule of a ``steps``-step run on this backbone at ``geometry`` (cached; flow
        models shift their schedule by the latent's size, DDPM models ignore it)."""
        size = None if geometry is None else geometry.latent_size
        return self._schedules.get_or((steps, size), lambda: self.backbone.schedule(steps, size))

    def geometry(self, params: EditParams) -> WorkingGeometry:
        backbone = self.backbone
        geometry = WorkingGeometry.fit(self.size, params.resolution or backbone.native_side,
                                       backbone.size_multiple, backbone.latent_factor)
        backbone.condition_on(*self.origin, geometry)
        return geometry

    def embed(self, prompt: str, geometry: WorkingGeometry | None = None) -> Conditioning:
        """The backbone's conditioning for ``prompt`` (cached); long prompts are cut with a warning
        (given again whenever the cached features are used, so every run that uses them says so).
        With ``geometry``, on a family whose text encoder reads the photo with an instruction
        (``Backbone.text_sees_photo``), ``prompt`` as an instruction about this photo there
        (cached by both, in this session only: a region's session has other pixels)."""
        backbone = self.backbone
        if geometry is not None and backbone.text_sees_photo:
            conditioning, note = self._instructions.get_or((prompt, geometry), lambda: (
                backbone.encode_instruction(prompt, geometry.to_working(self.rgb))))
        else:
            conditioning, note = self._embeddings.get_or(prompt,
                                                         lambda: backbone.encode_text(prompt))
        if note and note not in self.warnings:
            self.warnings.append(note)
        return conditioning

    def inpainting(self, geometry: WorkingGeometry, mask: np.ndarray):
        """A context manager: on an inpainting model the predictions inside it see ``mask``
        (photo size, 1 = generate) and the photo around it; nothing changes on a plain model."""
        backbone = self.backbone
        if not backbone.inpainting:
            return contextlib.nullcontext()
        latent_mask = torch.from_numpy(geometry.mask_to_latent(mask))
        return backbone.inpainting_with(
            backbone.inpaint_condition(geometry.to_working(self.rgb), latent_mask))

    def image_latent(self, geometry: WorkingGeometry) -> torch.Tensor:
        """The photo's latent at the working geometry (cached)."""
        return self._latents.get_or(
            geometry, lambda: self.backbone.encode_image(geometry.to_working(self.rgb)))

    def decode_latent(self, latent: torch.Tensor) -> np.ndarray:
        """(ph, pw, 3) uint8 pixels of a working-size latent."""
        return self.backbone.decode(latent)

    # ---- cached stages ----------------------------------------------------------------------

    def _trajectory(self, ctx: RunContext, geometry, schedule: Schedule, params: EditParams):
        key = (geometry, params.steps, params.encode_steps)

        def build():
            with ctx.timed("encode"):
                z0 = self.image_latent(geometry)
                return ddim_invert(ctx, z0, schedule, params.encode_steps, self.embed(""))
        return self._trajectories.get_or(key, build)

    def _heatmap(self, ctx: RunContext, geometry, source: str, target: str, params: EditParams,
                 method: str):
        key = (method, geometry, source, target, params.mask_samples, params.mask_noise,
               params.seed, self.backbone.guidance_scale)

        def build():
            with ctx.timed("mask"):
                schedule = self.schedule(params.steps, geometry)
                reference, query = methods.implementation(method).mask_conditions(
                    self, geometry, source, target)
                heat = diffedit.estimate_heatmap(
                    ctx, schedule, self.image_latent(geometry), reference, query,
                    params.mask_samples, params.mask_noise, params.seed,
                    self.backbone.max_batch, geometry.latent_content)
                return heat.cpu().numpy()
        return self._heatmaps.get_or(key, build)
