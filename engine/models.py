"""Find and load a Stable Diffusion 1.x/2.x, SDXL, SD3.5, Z-Image, FLUX.2 klein or Qwen-Image-Edit
model; choose device and dtype in one place.

Sources: a diffusers-layout folder, a hub repo id resolved from the local Hugging Face cache
(downloads only when the caller allows them), a single-file ``.safetensors`` checkpoint, or
"tiny" / "tiny-sdxl" / "tiny-sd3" / "tiny-zimage" / "tiny-flux2" / "tiny-qwen-edit" for the
random-weight test models. The flow-matching transformer families load through
engine.flow_models. Pickle checkpoints are refused unless the caller opts in. The family is read
from the files (engine.families) before any weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from engine import families
from engine import model_checks as checks
from engine.errors import ModelError
from engine.libraries import quiet_libraries
from engine.model_checks import PICKLE_SUFFIXES

# Text encoders per family, in the order their features are concatenated:
# (folder, transformers class, tokenizer folder).
TEXT_ENCODERS = {
    "sd": (("text_encoder", "CLIPTextModel", "tokenizer"),),
    "sdxl": (("text_encoder", "CLIPTextModel", "tokenizer"),
             ("text_encoder_2", "CLIPTextModelWithProjection", "tokenizer_2")),
}
# What a download of a diffusers SD repo needs: configs, tokenizer files, safetensors weights.
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_COMMIT = re.compile(r"[0-9a-f]{40}")  # what the hub writes into refs/<branch>


@dataclass
class LoadedModel:
    """The diffusers/transformers components of one model, on one device."""

    name: str
    source: str
    unet: object  # None for the transformer families (``transformer``)
    vae: object
    text_encoder: object
    tokenizer: object
    scheduler_config: dict
    device: object  # torch.device
    dtype: object  # torch.dtype of the UNet and text encoder
    family: str  # "sd1" | "sd2" | "sdxl" | a flow family (engine.families.FLOW_PIPELINES)
    prediction_type: str  # "epsilon" | "v_prediction" | "flow"
    notes: list[str] = field(default_factory=list)
    # SDXL's second text encoder (OpenCLIP ViT-bigG with projection: gives the pooled embedding)
    text_encoder_2: object = None
    tokenizer_2: object = None
    # SDXL base: the unconditional branch is all zeros rather than the empty text's features
    force_zeros_for_empty_prompt: bool = False
    loras: list[str] = field(default_factory=list)  # "name:weight" of each LoRA applied (engine.lora)
    lora_steps: int = 0  # a few-step LoRA's steps (Lightning, LCM, ...): the runs' defaults
    memory_tier: str = "full"  # engine.memory tier in force
    max_batch: int = 8  # most UNet sample-evaluations per call (set by the memory tier)
    # Flow-matching families: the diffusion transformer in place of the UNet, and SD3's T5
    transformer: object = None
    text_encoder_3: object = None
    tokenizer_3: object = None
    distilled: bool = False  # FLUX.2 klein's is_distilled: guidance built in, no CFG
    image_processor: object = None  # Qwen-Image-Edit's: the photo as the text encoder sees it
    preview_map: object = None  # flow families' latent-to-RGB preview map, fitted on first use

    @property
    def vae_scale_factor(self) -> int:
        config = self.vae.config
        if "temperal_downsample" in config:  # Qwen-Image's video VAE: one halving per stage
            return 2 ** len(config.temperal_downsample)
        return 2 ** (len(config.block_out_channels) - 1)

    @property
    def text_encoders(self) -> tuple:
        """The text encoders whose features are concatenated, in that order."""
        return tuple(e for e in (self.text_encoder, self.text_encoder_2, self.text_encoder_3)
                     if e is not None)

    @property
    def denoiser(self):
        """The UNet, or the diffusion transformer of a flow-matching family."""
        return self.unet if self.unet is not None else self.transformer

    @property
    def native_size(self) -> int:
        """Side in pixels of the square the model was trained at (512 for SD 1.x, 1024 for SDXL,
        SD3.5 and Z-Image): the UNet's sample size in latent cells, or for the transformer
        families (whose configs do not all say it) the VAE's sample size in pixels (Qwen-Image's
        VAE says none: its pipelines work at 1024x1024's area)."""
        if self.unet is None:
            return int(self.vae.config.get("sample_size") or 1024)
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        """Working sizes are padded to this many pixels: one latent cell. The UNet of SD 1.x/2.x
        and SDXL (diffusers' UNet2DConditionModel) takes any latent size: its stride-2
        convolutions round up and it gives each upsampler the size of the skip it meets, which
        for nearest upsampling is exactly "double, then drop the extra row", so every level stays
        aligned (tests/engine/test_geometry.py runs both shapes at odd sizes). Padding to the
        deepest level's 2**(levels - 1) cells instead cost up to 8.7 % more UNet area."""
        return self.vae_scale_factor


def resolve_device(name: str = "auto"):
    """cuda > mps > cpu for "auto"; an explicit device must be usable here."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError("device 'cuda' was asked for, but this torch sees no CUDA GPU; "
                             "use --device cpu or install a CUDA build of torch")
        return torch.device(name)
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ModelError("device 'mps' was asked for, but Apple MPS is not available here; use --device cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ModelError(f"unknown device {name!r}: use auto, cpu, cuda or mps")


def resolve_dtype(name: str, device):
    """float16 on CUDA, float32 elsewhere for "auto"; or the named precision."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    choices = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
               "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in choices:
        raise ModelError(f"unknown dtype {name!r}: use auto, float32, float16 or bfloat16")
    return choices[name]


def load_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    allow_download: bool = False,
    allow_pickle: bool = False,
    memory_tier: str = "auto",
    on_download=None,
    loras=(),
    scheduler: str = "auto",
    transformer: str = "",
) -> LoadedModel:
    """Load the model named by ``source``, or raise ModelError saying what is wrong.

    ``loras``: engine.lora.LoraSpec (file and weight) of each LoRA to apply.
    ``scheduler``: which timesteps runs sample at, one of engine.schedulers.CHOICES (auto: the
    model's scheduler config says whether it is a few-step model).
    ``transformer``: a .gguf or .safetensors file holding a flow model's transformer, used in
    place of the folder's (engine.transformer_file); the folder gives its config and the other
    components.

    ``memory_tier`` is auto (from free VRAM), full, sliced or offload (engine.memory).
    ``on_download(bytes_done, bytes_total, file)`` reports a download that ``allow_download``
    started for a hub id missing from this machine.
    """
    from engine import lora, memory, schedulers, transformer_file

    schedulers.configure({}, scheduler)  # bad choices and files are refused before any weight loads
    for spec in loras:
        lora.check_file(spec)
    file = transformer_file.check_path(transformer)
    model = _load_any(source, device, dtype, allow_download, allow_pickle, on_download, file)
    if file is not None:  # the name results record says which transformer file made them
        model.name = f"{model.name} + {file.name}"
    lora.apply(model, loras)
    # a few-step LoRA (Lightning, LCM, ...) samples a UNet at trailing timesteps, as a few-step
    # model's own scheduler config says; flow schedules end at the clean image anyway
    few_step = scheduler == "auto" and model.lora_steps and model.unet is not None
    model.scheduler_config = schedulers.configure(model.scheduler_config,
                                                  "trailing" if few_step else scheduler)
    memory.apply_tier(model, memory.choose_tier(model, memory_tier))
    return model


def _load_any(source: str, device: str, dtype: str, allow_download: bool,
              allow_pickle: bool, on_download=None, transformer: Path | None = None) -> LoadedModel:
    source = (source or "").strip()
    if not source:
        raise ModelError(
            "no model given: pass --model with a diffusers folder, a .safetensors file or a hub id "
            "in your cache (list them with `diffedit-studio models`), or --model tiny for the "
            "random-weight test model"
        )
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    quiet_libraries()
    if source == "tiny":
        from engine.tiny_model import ensure_tiny_model

        return _load_folder(ensure_tiny_model(), "tiny (random weights)", torch_device, torch_dtype,
                            allow_pickle, transformer)
    if source == "tiny-sdxl":
        from engine.tiny_model import ensure_tiny_sdxl

        return _load_folder(ensure_tiny_sdxl(), "tiny SDXL (random weights)", torch_device,
                            torch_dtype, allow_pickle, transformer)
    if source == "tiny-flux2":
        from engine.tiny_model import ensure_tiny_flux2

        return _load_folder(ensure_tiny_flux2(), "tiny FLUX.2 klein (random weights)",
                            torch_device, torch_dtype, allow_pickle, transformer)
    if source == "tiny-qwen-edit":
        from engine.tiny_qwen_edit import ensure_tiny_qwen_edit

        return _load_folder(ensure_tiny_qwen_edit(), "tiny Qwen-Image-Edit-2509 (random weights)",
                            torch_device, torch_dtype, allow_pickle, transformer)
    if source in ("tiny-sd3", "tiny-zimage", "tiny-kontext"):
        from engine import tiny_flow_models

        ensure = {"tiny-sd3": tiny_flow_models.ensure_tiny_sd3,
                  "tiny-zimage": tiny_flow_models.ensure_tiny_zimage,
                  "tiny-kontext": tiny_flow_models.ensure_tiny_kontext}[source]
        label = {"tiny-sd3": "SD3.5", "tiny-zimage": "Z-Image-Turbo",
                 "tiny-kontext": "FLUX.1 Kontext"}[source]
        return _load_folder(ensure(), f"tiny {label} (random weights)", torch_device, torch_dtype,
                            allow_pickle, transformer)
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_folder(path, path.name, torch_device, torch_dtype, allow_pickle, transformer)
    if path.is_file():
        if transformer is not None:
            raise ModelError(f"{transformer.name} replaces the transformer of a model folder; "
                             f"{path.name} is a single file: pass the base model's folder or hub id")
        return _load_file(path, torch_device, torch_dtype, allow_pickle)
    # Hub ids may hold dots ("org/model-v1.5"); only a checkpoint suffix makes it a missing file.
    if _REPO_ID.match(source) and path.suffix.lower() not in PICKLE_SUFFIXES | {".safetensors"}:
        folder = _resolve_hub_id(source, allow_download, on_download)
        return _load_folder(folder, source, torch_device, torch_dtype, allow_pickle, transformer)
    raise ModelError(f"model not found: {source!r} is neither a file, a folder nor a hub id (org/name)")


def _resolve_hub_id(repo_id: str, allow_download: bool, on_download=None) -> Path:
    """A finished app download, else the local Hugging Face cache, else (when allowed) a download
    through engine.downloads (free-disk check, resumable, only the files we load)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from engine.catalog import hub_cache_dir
    from engine.downloads import SOURCE_FILE, download_model, folder_for

    downloaded = folder_for(repo_id)
    if (downloaded / SOURCE_FILE).is_file():
        return downloaded
    cache = hub_cache_dir()
    try:
        _check_cache_entry(cache / ("models--" + repo_id.replace("/", "--")), repo_id)
        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=cache))
    except ModelError:
        raise
    except LocalEntryNotFoundError:
        pass
    except Exception as exc:  # a damaged cache entry
        raise ModelError(f"could not read {repo_id!r} from the local Hugging Face cache: {exc}"
                         ) from None
    if allow_download:
        return download_model(repo_id, on_progress=on_download)
    if downloaded.is_dir():
        raise ModelError(f"the download of {repo_id!r} is not finished ({downloaded}); resume it "
                         "in the app's Models dialog or pass --allow-download") from None
    raise ModelError(f"{repo_id!r} is not in the local Hugging Face cache; download it once with "
                     "the app's Models dialog or pass --allow-download") from None


def _check_cache_entry(repo: Path, repo_id: str) -> None:
    """huggingface_hub joins the text of ``refs/main`` onto the snapshots folder as it is, so a
    ref holding "../../elsewhere" or an absolute path would load any folder on disk. Only a
    commit hash is accepted, and the snapshot and every file in it must lie inside this repo's
    cache folder (the hub links snapshot files to its blobs folder)."""
    ref = repo / "refs" / "main"
    if not ref.exists():
        return  # not cached: huggingface_hub says so
    damaged = f"the Hugging Face cache entry of {repo_id!r} ({repo}) is damaged"
    checks.check_regular_file(ref, f"{damaged}: refs/main")
    commit = ref.read_text(encoding="utf-8", errors="replace")
    if not _COMMIT.fullmatch(commit):
        raise ModelError(f"{damaged}: refs/main holds {commit[:60]!r}, not a commit hash; "
                         "delete that folder and download the model again")
    inside = repo.resolve()
    snapshot = repo / "snapshots" / commit
    for path in _and_contents(snapshot, inside):
        if not path.resolve().is_relative_to(inside):
            raise ModelError(f"{damaged}: {path.relative_to(repo)} points outside it, to "
                             f"{path.resolve()}; delete that folder and download the model again")


def _and_contents(snapshot: Path, inside: Path):
    """The snapshot folder, then (only when it lies inside) everything under it."""
    yield snapshot
    if snapshot.resolve().is_relative_to(inside):
        yield from snapshot.rglob("*")


def _load_file(path: Path, device, dtype, allow_pickle: bool) -> LoadedModel:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelError(
            f"{path.name} is a pickle checkpoint, which can run arbitrary code when loaded; "
            "convert it to .safetensors, or pass --allow-pickle to load it with "
            "torch.load(weights_only=True)"
        )
    if suffix not in PICKLE_SUFFIXES | {".safetensors"}:
        raise ModelError(f"{path.name}: not a model file (expected .safetensors or a diffusers folder)")
    from engine.single_file import load_single_file

    if suffix in PICKLE_SUFFIXES:
        path = _pickle_to_safetensors(path)
    pipe = load_single_file(path, dtype=dtype)
    encoders = [(getattr(pipe, folder), getattr(pipe, tokenizer))
                for folder, _cls, tokenizer in TEXT_ENCODERS["sdxl" if hasattr(pipe, "text_encoder_2") else "sd"]]
    return _assemble(path.stem, str(path), pipe.unet, pipe.vae, encoders,
                     dict(pipe.scheduler.config), device, dtype,
                     zeros_for_empty=bool(pipe.config.get("force_zeros_for_empty_prompt", False)))


def _unreadable_checkpoint(path: Path, exc: Exception) -> ModelError:
    """Why torch.load(weights_only=True) refused a file, in our words: torch's own message
    suggests switching the safety check off, which is never the fix for a file from outside."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if found:
        return ModelError(f"{path.name} was refused: besides weights it holds a Python object "
                          f"({found.group(1)}) that would run code when loaded; get a .safetensors "
                          "copy of the model")
    return ModelError(f"{path.name} is not a readable checkpoint: the file is damaged, cut short "
                      "or of another kind; download it again, or get a .safetensors copy")


def _pickle_to_safetensors(path: Path) -> Path:
    """Read a pickle checkpoint with ``weights_only=True`` (no code runs: anything but tensors
    and plain containers is refused) and keep its tensors as a cached .safetensors copy."""
    import hashlib

    import torch
    from safetensors.torch import save_file

    from engine.config import cache_dir

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    converted = cache_dir() / "converted" / f"{path.stem}-{key}.safetensors"
    if converted.is_file():
        return converted
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable_checkpoint(path, exc) from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path.name}: no weights found in the checkpoint")
    tensors = {k: v.contiguous() for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path.name}: no weights found in the checkpoint")
    converted.parent.mkdir(parents=True, exist_ok=True)
    partial = converted.with_suffix(".partial")
    save_file(tensors, str(partial))
    partial.replace(converted)
    return converted


def _load_folder(folder: Path, name: str, device, dtype, allow_pickle: bool,
                 transformer: Path | None = None) -> LoadedModel:
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    # The family and the architecture come from the configs first: refusing a model should
    # not cost loading gigabytes of weights.
    family = _folder_family(folder, name)
    if family in families.FLOW_PIPELINES.values():
        return _load_flow_folder(folder, name, family, device, dtype, allow_pickle, transformer)
    if transformer is not None:
        raise ModelError(f"{transformer.name} is a flow transformer (of FLUX, Z-Image, SD3.5 "
                         f"or Qwen-Image); {name} is an SD or SDXL model, whose UNet it cannot "
                         "replace")
    text_parts = TEXT_ENCODERS[family]
    required = ("unet", "vae", "scheduler") + tuple(p for part in text_parts for p in part[::2])
    missing = [c for c in required if not (folder / c).is_dir()]
    if missing:
        label = "SDXL" if family == "sdxl" else "Stable Diffusion"
        raise ModelError(f"{folder} is not a complete {label} folder: missing "
                         f"{', '.join(missing)} (expected diffusers layout with model_index.json)")
    # Everything that can be checked from small files is checked before any module is built:
    # a FIFO, a damaged config or int8 weights should not cost gigabytes (or hang).
    checks.check_folder_files(folder)
    for component in ("unet", "vae") + tuple(part[0] for part in text_parts):
        _check_weights(folder / component, allow_pickle)
    scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json")
    _read_json(folder / "vae" / "config.json")
    text_configs = [_read_json(folder / part[0] / "config.json") for part in text_parts]
    text_width = sum(c.get("hidden_size") or 0 for c in text_configs)
    check_architecture(name, _read_json(folder / "unet" / "config.json"), text_width,
                       scheduler_config)
    # Before a tokenizer is built: a huge length makes building or using it hang or abort.
    for (_, _, tokenizer), text_config in zip(text_parts, text_configs):
        tokenizer_file = folder / tokenizer / "tokenizer_config.json"
        if tokenizer_file.exists():
            settings = checks.read_json(tokenizer_file, f"{tokenizer}/tokenizer_config.json")
            if isinstance(settings, dict) and "model_max_length" in settings:
                checks.check_tokenizer_length(settings["model_max_length"],
                                              text_config.get("max_position_embeddings", 77),
                                              f"{tokenizer}/tokenizer_config.json")
    index = _read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    safetensors_only = None if allow_pickle else True
    try:
        unet, unet_info = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", local_files_only=True, use_safetensors=safetensors_only,
            output_loading_info=True)
        vae, vae_info = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", local_files_only=True, use_safetensors=safetensors_only,
            output_loading_info=True)
        loaded = [(getattr(transformers, cls).from_pretrained(folder / encoder, local_files_only=True,
                                                              use_safetensors=safetensors_only,
                                                              output_loading_info=True),
                   CLIPTokenizer.from_pretrained(folder / tokenizer, local_files_only=True))
                  for encoder, cls, tokenizer in text_parts]
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load the model in {folder}: {exc}") from None
    checks.check_complete(unet, unet_info, f"{name}: unet")
    checks.check_complete(vae, vae_info, f"{name}: vae")
    for (encoder, info), _tokenizer in loaded:
        checks.check_complete(encoder, info, f"{name}: text encoder")
    encoders = [(encoder, tokenizer) for (encoder, _info), tokenizer in loaded]
    return _assemble(name, str(folder), unet, vae, encoders, scheduler_config, device, dtype,
                     zeros_for_empty=family == "sdxl" and index.get("force_zeros_for_empty_prompt", True))


def _load_flow_folder(folder: Path, name: str, family: str, device, dtype,
                      allow_pickle: bool, transformer: Path | None = None) -> LoadedModel:
    """A flow-matching transformer model (engine.flow_models.FAMILIES), checked as SD's are;
    its transformer from the file ``transformer`` (engine.transformer_file) when one is given
    (the folder's transformer/ then needs only its config)."""
    import diffusers
    import transformers

    from engine import flow_models

    spec = flow_models.FAMILIES[family]
    required = (spec.components + ("scheduler",) + tuple(p.tokenizer_folder for p in spec.text)
                + (("processor",) if spec.image_processor else ()))
    missing = [c for c in required if not (folder / c).is_dir()]
    if missing:
        raise ModelError(f"{folder} is not a complete {spec.label} folder: missing "
                         f"{', '.join(missing)} (expected diffusers layout with model_index.json)")
    checks.check_folder_files(folder)
    for component in spec.components:
        if not (component == "transformer" and transformer is not None):
            _check_weights(folder / component, allow_pickle)
    scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json")
    scheduler = scheduler_config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    if scheduler != "FlowMatchEulerDiscreteScheduler":
        raise ModelError(f"{name}: its scheduler is {scheduler}; a {spec.label} model samples with "
                         "FlowMatchEulerDiscreteScheduler")
    flow_models.check_widths(name, family, {c: _read_json(folder / c / "config.json")
                                            for c in spec.components})
    safetensors_only = None if allow_pickle else True
    classes = {"transformer": getattr(diffusers, spec.transformer), "vae": getattr(diffusers, spec.vae)}
    classes.update({p.folder: getattr(transformers, p.encoder) for p in spec.text})
    modules = {}
    if transformer is not None:
        from engine.transformer_file import load_transformer

        modules["transformer"] = load_transformer(transformer, folder, classes.pop("transformer"),
                                                  dtype, name)
    try:
        for component, cls in classes.items():
            # diffusers' models take the subfolder, transformers' their own folder
            where = dict(subfolder=component) if cls.__module__.startswith("diffusers") else {}
            module, info = cls.from_pretrained(
                folder if where else folder / component, local_files_only=True,
                use_safetensors=safetensors_only, output_loading_info=True, **where)
            checks.check_complete(module, info, f"{name}: {component}")
            modules[component] = module
        tokenizers = [getattr(transformers, p.tokenizer).from_pretrained(
            folder / p.tokenizer_folder, local_files_only=True) for p in spec.text]
        image_processor = (getattr(transformers, spec.image_processor).from_pretrained(
            folder / "processor", local_files_only=True) if spec.image_processor else None)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load the model in {folder}: {exc}") from None
    for component, module in modules.items():
        checks.check_finite_weights(module, f"{name}: {component}")
    encoders = [modules[p.folder] for p in spec.text]
    for encoder, tokenizer, part in zip(encoders, tokenizers, spec.text):
        if part.tokenizer == "CLIPTokenizer":  # CLIP reads 77 positions; T5 and Qwen read long texts
            checks.check_tokenizer_length(tokenizer.model_max_length,
                                          encoder.config.max_position_embeddings,
                                          f"{name}: {part.tokenizer_folder}")
    notes = place([modules["transformer"], *encoders], modules["vae"], device, dtype)
    encoders += [None] * (3 - len(encoders))
    tokenizers += [None] * (3 - len(tokenizers))
    return LoadedModel(
        name=name, source=str(folder), unet=None, transformer=modules["transformer"],
        vae=modules["vae"], text_encoder=encoders[0], tokenizer=tokenizers[0],
        text_encoder_2=encoders[1], tokenizer_2=tokenizers[1], text_encoder_3=encoders[2],
        tokenizer_3=tokenizers[2], scheduler_config=dict(scheduler_config), device=device,
        dtype=dtype, family=family, prediction_type="flow", notes=notes,
        image_processor=image_processor,
        distilled=bool(_read_json(folder / "model_index.json").get("is_distilled", False)))


def _folder_family(folder: Path, name: str) -> str:
    """"sd" or "sdxl" (engine.families), the error naming the model."""
    if not (folder / "model_index.json").is_file():
        return "sd"  # a bare component folder: the checks below say what is missing
    try:
        return families.folder_family(folder)
    except ModelError as exc:
        raise ModelError(f"{name}: {exc}") from None


def _check_weights(component_dir: Path, allow_pickle: bool) -> None:
    files = [p for p in component_dir.iterdir() if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        checks.check_dtypes(_weight_dtypes(component_dir), component_dir.name)
        return
    if any(p.suffix in PICKLE_SUFFIXES for p in files):
        if allow_pickle:
            return
        raise ModelError(f"{component_dir} holds only pickle weights, which can run code when "
                         "loaded; use a safetensors copy or pass --allow-pickle")
    raise ModelError(f"{component_dir} has no weights file (.safetensors)")


def check_architecture(name: str, unet_config: dict, text_width: int, scheduler_config: dict) -> None:
    """Refuse anything that is not an SD 1.x/2.x or SDXL text-to-image model, naming the problem.

    ``text_width`` is the width of all text encoders' features together (SDXL concatenates two).
    """
    channels = unet_config.get("in_channels")
    if channels not in (4, 9):  # 9: an inpainting model (latent, mask, masked photo's latent)
        raise ModelError(f"{name}: the UNet takes {channels} input channels (a depth, pix2pix or "
                         f"upscaler model?); a {families.SUPPORTED} text-to-image or inpainting "
                         "model is needed")
    cross = unet_config.get("cross_attention_dim")
    if cross != text_width:
        raise ModelError(f"{name}: the UNet expects text features of size {cross} but the text "
                         f"encoder gives {text_width}; the components do not belong together")
    prediction = scheduler_config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction"):
        raise ModelError(f"{name}: prediction type {prediction!r} is not supported "
                         "(epsilon or v_prediction)")


def _read_json(path: Path) -> dict:
    return checks.read_config(path, f"{path.parent.name}/{path.name}")


def _assemble(name, source, unet, vae, encoders, scheduler_config, device, dtype, *,
              zeros_for_empty=False):
    """Check the architecture, move to the device, and wrap. ``encoders``: (text encoder,
    tokenizer) pairs in TEXT_ENCODERS order."""
    config = unet.config
    check_architecture(name, dict(config), sum(e.config.hidden_size for e, _ in encoders),
                       scheduler_config)
    for encoder, tokenizer in encoders:
        # Again on the built tokenizer: without the setting it defaults to 1e30, the same trap.
        checks.check_tokenizer_length(tokenizer.model_max_length,
                                      encoder.config.max_position_embeddings, f"{name}: tokenizer")
    for label, module in [("unet", unet), ("vae", vae)] + [("text encoder", e) for e, _ in encoders]:
        checks.check_finite_weights(module, f"{name}: {label}")
    prediction = scheduler_config.get("prediction_type", "epsilon")
    notes = place([unet, *(encoder for encoder, _ in encoders)], vae, device, dtype)
    if families.is_sdxl_unet(dict(config)):
        family = "sdxl"
    else:
        family = "sd2" if config.cross_attention_dim == 1024 else "sd1"
    (text_encoder, tokenizer), *second = encoders
    text_encoder_2, tokenizer_2 = second[0] if second else (None, None)
    return LoadedModel(name=name, source=source, unet=unet, vae=vae, text_encoder=text_encoder,
                       tokenizer=tokenizer, scheduler_config=dict(scheduler_config), device=device,
                       dtype=dtype, family=family, prediction_type=prediction, notes=notes,
                       text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                       force_zeros_for_empty_prompt=bool(zeros_for_empty))


def place(modules, vae, device, dtype) -> list[str]:
    """Move ``modules`` and the ``vae`` to ``device`` in inference mode; the notes to show.

    fp16 VAEs of several SD releases, and SDXL's always, overflow to NaN/black; the VAE is
    small, so it stays in fp32 under fp16 unless its config says it is fp16-safe (force_upcast
    false, as the "sdxl-vae-fp16-fix" VAE's is)."""
    import torch

    fp16_safe = vae.config.get("force_upcast", True) is False
    vae_dtype = torch.float32 if dtype == torch.float16 and not fp16_safe else dtype
    for module in modules:
        # a GGUF transformer was built in its compute dtype; diffusers refuses to recast it
        cast = {} if getattr(module, "is_quantized", False) else {"dtype": dtype}
        module.to(device=device, **cast).eval().requires_grad_(False)
    vae.to(device=device, dtype=vae_dtype).eval().requires_grad_(False)
    return ["VAE kept in float32"] if vae_dtype != dtype else []


def _weight_dtypes(component_dir: Path) -> dict[str, str]:
    """Tensor name -> safetensors dtype over the .safetensors files of one component."""
    from engine.single_file import read_header

    dtypes: dict[str, str] = {}
    for path in sorted(component_dir.glob("*.safetensors")):
        dtypes.update(read_header(path).dtypes)
    return dtypes
