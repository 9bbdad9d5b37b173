"""`diffedit-studio edit | mask | batch | models`: the headless CLI (desktop_app.launch adds the window).

Exit codes: 0 done, 2 bad input or usage (one `error:` line on stderr), 1 internal failure,
3 `batch` ran to its end but some photos failed (each recorded in the journal and --report),
130 interrupted (Ctrl+C).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

from engine import __version__, batch, fields, files, lora, methods
from engine.errors import Cancelled, EngineError, InputError
from engine.fields import AUTO
from engine.params import EditParams, field_table

SUBCOMMANDS = ("edit", "mask", "batch", "models")
AUTO_MASK = "auto"  # --mask auto: the method finds its own mask (engine.methods.MethodInfo.finds_mask)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as one `error:` line and exit code 2."""

    def error(self, message: str):
        raise InputError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffedit-studio",
                     description="Text-guided photo editing with DiffEdit, offline. "
                                 "Run with no subcommand (or just a photo) to open the app.")
    parser.add_argument("--version", action="version", version=f"diffedit-studio {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    edit = commands.add_parser("edit", help="edit a photo where the two texts disagree")
    edit.add_argument("image", type=Path, help="the photo to edit")
    edit.add_argument("-o", "--output", type=Path, required=True,
                      help="where to write the result (.png, .jpg, .webp, .tif)")
    _add_common(edit)
    edit.add_argument("--mask", type=_mask_argument, metavar="MASK.png|auto",
                      help="greyscale PNG at the photo's size: white = edit (skips the automatic "
                           "mask); 'auto': the method finds the area itself (--method instruct: "
                           "from the instruction; without --mask it changes the whole photo)")
    edit.add_argument("--save-mask", type=Path, help="also write the mask used")
    edit.add_argument("--save-heatmap", type=Path, help="also write the automatic mask's heatmap")
    edit.add_argument("--overwrite", action="store_true",
                      help="allow the output to replace the input photo")
    edit.add_argument("--variations", type=int, default=1,
                      help="runs with the seeds SEED, SEED+1, ... (default %(default)s); several "
                           "results: OUT is the first, OUT-1, OUT-2, ... are all of them")
    _add_edit_flags(edit)

    batch_command = commands.add_parser(
        "batch", help="edit many photos with the model loaded once (a manifest or a folder); a "
        "rerun skips finished photos")
    batch.add_arguments(batch_command)
    _add_common(batch_command)
    _add_edit_flags(batch_command)

    mask = commands.add_parser("mask", help="write the automatic mask of a photo (DiffEdit's from "
                               "two texts, or the area an instruction is about)")
    mask.add_argument("image", type=Path, help="the photo")
    mask.add_argument("-o", "--output", type=Path, required=True, help="mask PNG to write")
    mask.add_argument("--heatmap", type=Path, help="also write the continuous heatmap")
    mask.add_argument("--method", default="diffedit",
                      choices=[info.name for info in methods.METHODS.values()
                               if info.mask == "auto" or info.auto_when is not None],
                      help="whose mask: diffedit (where --source and --target disagree) or "
                           "instruct (where --instruction changes the model's prediction) "
                           "(default %(default)s)")
    _add_common(mask)

    commands.add_parser("models", help="list the models found on this machine")
    return parser


def _add_common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--target", default="", help="what the photo should become")
    sub.add_argument("--instruction", default="", metavar="TEXT",
                     help="what to change, for --method instruct, e.g. 'make the car red' (it "
                          "takes the place of --target)")
    sub.add_argument("--source", default="", help="what is in the photo now (default: nothing said)")
    sub.add_argument("--model", default=None, help="diffusers folder, .safetensors file, hub id in "
                     "the local cache, or 'tiny' (random weights); default: the configured model")
    sub.add_argument("--transformer", default=None, metavar="FILE",
                     help="a transformer file used in place of the flow model's own, which "
                          "--model's folder or hub id completes: a GGUF (Q8_0, Q4_K_M, ...) or a "
                          ".safetensors (bf16, fp8) in the original checkpoint layout (default: "
                          "the setting, for the configured model)")
    sub.add_argument("--lora", action="append", default=[], metavar="PATH[:WEIGHT]",
                     help="a LoRA .safetensors file to apply, with its weight (default 1), on any "
                          "supported model (SD, SDXL and the flow transformers); repeat for "
                          "several. A few-step LoRA (Lightning, Turbo, Hyper, LCM: named so, e.g. "
                          "'...-4steps', or saying its steps in its metadata) sets the default "
                          "steps to its own and guidance to 1")
    sub.add_argument("--scheduler", default="auto", choices=["auto", "ddim", "trailing"],
                     help="sampling timesteps: auto reads the model's scheduler (few-step models "
                          "such as SDXL-Turbo, Lightning, LCM, TCD get trailing) and the LoRAs (a "
                          "few-step LoRA gets trailing too) (default %(default)s)")
    _add_params(sub, ("mask_threshold", "mask_samples", "mask_noise", "resolution", "seed"))
    sub.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"],
                     help="where to run (default: the setting shared with the app, or auto)")
    sub.add_argument("--dtype", default=None, choices=["auto", "float32", "float16", "bfloat16"],
                     help="precision (default: the setting shared with the app, or auto)")
    sub.add_argument("--memory", default=None, choices=["auto", "full", "sliced", "offload"],
                     help="GPU memory tier: auto picks from free VRAM (default: the setting, or auto)")
    sub.add_argument("--allow-download", action="store_true",
                     help="let a hub id be downloaded if it is not in the local cache")
    sub.add_argument("--allow-pickle", action="store_true",
                     help="load pickle checkpoints (.ckpt/.bin) with torch.load(weights_only=True)")
    sub.add_argument("--threads", type=int, default=None, metavar="N",
                     help="CPU threads for torch (default: the CPU threads setting, else the "
                          "physical cores); the same N on the same hardware gives the same bytes "
                          "(in a --ray batch: per actor, default this process's count)")
    sub.add_argument("--report", type=Path, help="write timings, UNet work and memory as JSON")
    sub.add_argument("--quiet", action="store_true",
                     help="no status lines or progress bar (errors and warnings still show)")


def _add_edit_flags(sub: argparse.ArgumentParser) -> None:
    """The settings of an edit (`edit`, and every item's defaults in `batch`)."""
    _add_params(sub, ("steps", "strength", "guidance", "negative_prompt", "feather", "seam", "eta"))
    sub.add_argument("--strip-gps", action="store_true",
                     help="leave the photo's GPS location out of the exported file")
    sub.add_argument("--method", default="diffedit", choices=list(methods.METHODS),
                     help="editing method (default %(default)s); a run with several results "
                          "writes the best as OUT and every one as OUT-1, OUT-2, ...")
    _add_method_options(sub)


def _add_params(sub: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """One flag per EditParams field, generated from its description (help, default, zero).
    A flag not given stays None: _params fills in the method's own default."""
    table = field_table()
    for name in names:
        f = table[name]
        default = f"default: {f.metadata['zero']}" if f.metadata.get("zero") and not f.default \
            else f"default: {f.metadata['auto']}" if f.metadata.get("auto") and f.default == AUTO \
            else f"default {f.default!r}" if isinstance(f.default, str) else f"default {f.default}"
        default += "".join(f"; {info.name} {info.defaults[name]}" for info in methods.METHODS.values()
                           if name in info.defaults)
        choices = f.metadata.get("choices")
        sub.add_argument(fields.flag(f), dest=name, type=fields.kind(f), default=None,
                         choices=choices,
                         metavar=None if choices else {int: "N", float: "X"}.get(fields.kind(f), "TEXT"),
                         help=f"{f.metadata['help']} ({default})".replace("%", "%%"))


def _add_method_options(sub: argparse.ArgumentParser) -> None:
    """One flag per method option, generated from the options dataclasses (help included)."""
    seen: dict[str, str] = {}
    for info in methods.METHODS.values():
        group = None
        for f in dataclasses.fields(info.options):
            if f.name in seen:
                continue
            seen[f.name] = info.name
            group = group or sub.add_argument_group(f"{info.title} options (--method {info.name})")
            flag, kind = fields.flag(f), fields.kind(f)
            if kind is bool:  # an option on by default is turned off with --no-...
                action = argparse.BooleanOptionalAction if f.default else "store_true"
                group.add_argument(flag, dest=f"opt_{f.name}", action=action, default=None,
                                   help=f.metadata["help"])
            else:
                group.add_argument(flag, dest=f"opt_{f.name}", type=kind, default=None,
                                   choices=f.metadata.get("choices"),
                                   metavar=None if f.metadata.get("choices") else
                                   {int: "N", float: "X"}.get(kind, "TEXT"),
                                   help=f.metadata["help"] + ("" if f.default in ("", None) else
                                                              f" (default {f.default})"))


def _mask_argument(value: str):
    """--mask: a mask file, or AUTO_MASK."""
    return AUTO_MASK if value == AUTO_MASK else Path(value)


def _method_options(args) -> dict:
    """The method options given on the command line; an option of another method is an error.
    ``--mask auto`` turns on the option by which a method finds its own mask (``auto_when``)."""
    info = methods.info(args.method)
    own = {f.name for f in dataclasses.fields(info.options)}
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    foreign = sorted(set(given) - own)
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise InputError(f"{flags} do not apply to --method {args.method}")
    if getattr(args, "mask", None) == AUTO_MASK and info.mask != "auto":
        if info.auto_when is None:
            raise InputError(f"--mask auto: {info.title} finds no mask of its own; give a mask "
                             "file (--mask MASK.png)")
        option, values = info.auto_when
        given[option] = values[0]
    return given


def _target_text(args) -> str:
    """The run's target text: --instruction for a method that takes one, else --target; the
    other flag given is an error naming the right one."""
    wanted = methods.info(args.method).target_name
    texts = {"target": args.target, "instruction": args.instruction}
    for name, text in texts.items():
        if name != wanted and text:
            raise InputError(f"--{name} does not apply to --method {args.method}: give "
                             f"--{wanted} TEXT")
    return texts[wanted]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv:
            raise InputError(f"give a command: {', '.join(SUBCOMMANDS)} (see `diffedit-studio --help`)")
        if argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
            raise InputError(f"unknown command {argv[0]!r}: use {', '.join(SUBCOMMANDS)}, or give "
                             "an existing photo to open it in the app")
        args = build_parser().parse_args(argv)
        if args.command == "models":
            return _models()
        if args.command == "batch":
            return _batch(args)
        return _run(args)
    except InputError as exc:
        print(f"error: {_in_cli_words(exc)}", file=sys.stderr)
        return 2
    except EngineError as exc:  # e.g. out of memory at every tier: not a usage mistake
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment failure, not the user's mistake
        if os.environ.get("DIFFEDIT_DEBUG"):
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc} (set DIFFEDIT_DEBUG=1 for details)",
              file=sys.stderr)
        return 1


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _in_cli_words(exc: InputError) -> str:
    """The engine's sentence with the CLI's names: option fields become flags (``extend_left`` ->
    ``--extend-left``), and the input at fault (``exc.field``) is named by its flag."""
    names = set(field_table())
    for info in methods.METHODS.values():
        names |= set(info.option_names())
    field = getattr(exc, "field", None)
    message = str(exc)
    for name in sorted(names | {field} - {None}, key=len, reverse=True):
        # One-word names are prose elsewhere ("steps"); an input's name ("mask") always is.
        if "_" in name or (name == field and field not in _CLI_INPUTS):
            message = re.sub(rf"(?<![\w/\\.-]){name}\b", _flag(name), message)
    if field and _flag(field) not in message:
        message += f" ({_CLI_INPUTS.get(field, _flag(field))})"
    return message


_CLI_INPUTS = {"mask": "--mask MASK.png", "source": "--source TEXT", "target": "--target TEXT",
               "instruction": "--instruction TEXT"}


def _models() -> int:
    from engine.catalog import discover_models, format_table

    print(format_table(discover_models(_settings())))
    return 0


def _params(args, defaults: EditParams | None = None) -> EditParams:
    """EditParams from the flags _add_params made; the others keep ``defaults`` (before the model
    loads: the method's own, MethodInfo.default_params; after: with the model family's too,
    Backbone.defaults)."""
    given = {name: getattr(args, name) for name in field_table()
             if getattr(args, name, None) is not None}
    if defaults is None:
        defaults = methods.info(getattr(args, "method", "diffedit")).default_params()
    return defaults.replace(**given).validate()


def _run(args) -> int:
    from engine import imaging, masks
    from engine.runtime import set_threads

    # 1. Everything that needs no model, so that a mistake costs no model load.
    settings = _settings()  # read once: a bad value is reported before any other work
    threads = set_threads(settings.threads if args.threads is None else args.threads)
    params = _params(args)
    target = _target_text(args)
    if not target.strip():
        if methods.info(args.method).target_name == "instruction":
            raise InputError("--instruction is missing: say what to change, e.g. --instruction "
                             "'make the car red'")
        raise InputError("--target is empty: say what the photo should become")
    for flag, text in (("--target", args.target), ("--instruction", args.instruction),
                       ("--source", args.source), ("--negative", params.negative_prompt)):
        _check_text(flag, text)
    _check_outputs(args)
    photo = imaging.load_photo(args.image)
    user_mask = None
    if isinstance(getattr(args, "mask", None), Path):
        user_mask = files.load_mask(args.mask, photo.size)
    request = None
    if args.command == "edit":  # checked before the model loads, in the app's and worker's words
        from engine.runs import RunRequest

        request = RunRequest(photo, str(args.image), args.method, args.source, target,
                             user_mask, params, _method_options(args), args.variations,
                             methods.PAINT_IN_PHOTO)
        request.check()
    load_kwargs = _load_kwargs(args, settings)  # last: with no model, the other mistakes are still named
    for warning in photo.warnings:
        print(f"warning: {warning}", file=sys.stderr)

    # 2. The model, then the run.
    model = _load(args, load_kwargs, threads)
    from engine.session import EditSession

    session = EditSession(model, photo)
    # Unset flags take the family's defaults (a 4-step model's steps are its own).
    params = _params(args, methods.info(getattr(args, "method", "diffedit")).default_params()
                     .replace(**session.backbone.defaults))
    if request is not None:
        request = dataclasses.replace(request, params=params)
    progress = None if args.quiet else _ProgressBar()
    if args.command == "mask":
        heatmap = session.estimate_mask(args.source, target, params, method=args.method,
                                        on_step=progress)
        _finish(progress)
        _save_mask(args.output, masks.threshold(heatmap, params.mask_threshold))
        written = [args.output]
        if args.heatmap:
            _save_mask(args.heatmap, heatmap)
            written.append(args.heatmap)
        for warning in session.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        report = {"command": "mask", "output": str(args.output), **session.mask_stats}
    else:
        from engine.runs import execute

        results = execute(request, lambda key, pixels: session, on_step=progress)
        _finish(progress)
        margins = methods.info(args.method).canvas_margins(request.options)
        outputs = files.output_names(args.output, len(results))
        for path, each in zip(outputs, files.best_first(results)):
            files.export(path, photo, each, margins, args.strip_gps)
        written = list(outputs)
        result = results[0]
        if args.save_mask:
            _save_mask(args.save_mask, result.mask)
            written.append(args.save_mask)
        if args.save_heatmap:
            if result.heatmap is None:
                print("warning: --save-heatmap: no heatmap, the mask came from --mask", file=sys.stderr)
            else:
                _save_mask(args.save_heatmap, result.heatmap)
                written.append(args.save_heatmap)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        report = {"command": "edit", "method": args.method, "outputs": [str(p) for p in outputs],
                  **result.stats}
    if args.report:
        report.update(model=model.name, params=session.resolved(params).to_dict())
        text = json.dumps(report, indent=2).encode("utf-8")
        imaging.atomic_write(args.report, lambda stream: stream.write(text))
        written.append(args.report)
    if not args.quiet:
        print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _save_mask(path: Path, mask) -> None:
    """A greyscale mask or heatmap image, written atomically in the format its suffix names."""
    from engine import imaging, masks

    image = masks.to_image(mask)
    imaging.atomic_write(path, lambda stream: image.save(stream, format=imaging.SAVE_FORMATS[
        path.suffix.lower()]))


def _load(args, load_kwargs: dict, threads: int):
    from engine.models import load_model

    kwargs = dict(load_kwargs)
    source = kwargs.pop("source")
    plural = "s" if threads > 1 else ""
    _status(args, f"loading model {source} (device {kwargs['device']}, {threads} CPU thread{plural})...")
    started = time.perf_counter()
    model = load_model(source, **kwargs, on_download=None if args.quiet else _DownloadBar())
    _status(args, f"model ready: {model.name} on {model.device.type}, "
                  f"{str(model.dtype).replace('torch.', '')} ({time.perf_counter() - started:.1f} s)")
    return model


def _status(args, line: str) -> None:
    if not args.quiet:
        print(line, file=sys.stderr, flush=True)


def _settings():
    """The shared settings (app and CLI); a damaged value is an error naming it, not a guess."""
    from engine.config import Settings

    settings = Settings.load()
    if settings.problems:
        raise InputError(settings.problems[0])
    return settings


def _load_kwargs(args, settings) -> dict:
    """load_model's arguments from the flags and the settings (no model loaded yet)."""
    source = args.model or settings.default_model
    if not source:
        raise InputError("no model: pass --model (a diffusers folder, a .safetensors file or a hub id "
                         "in your cache; see `diffedit-studio models`), set a default in the app's "
                         "Settings, or try --model tiny (random weights, output is noise)")
    return dict(source=source, device=args.device or settings.device,
                dtype=args.dtype or settings.dtype,
                allow_download=args.allow_download or settings.allow_download,
                allow_pickle=args.allow_pickle, memory_tier=args.memory or settings.memory,
                loras=tuple(lora.parse(spec) for spec in args.lora), scheduler=args.scheduler,
                # the saved file belongs to the saved model: another --model goes without it
                transformer=args.transformer if args.transformer is not None
                else "" if args.model else settings.transformer)


def _batch(args) -> int:
    """`batch`: the flags are every item's defaults (engine.batch does the rest)."""
    defaults = batch.Defaults(method=args.method, source=args.source, target=_target_text(args),
                              params=_params(args), options=_method_options(args),
                              strip_gps=args.strip_gps)
    settings = _settings()
    threads = args.threads if args.threads is not None else settings.threads or None
    spec = batch.ModelSpec(**_load_kwargs(args, settings), threads=threads)
    return batch.run(args.manifest, args.out_dir, defaults, spec,
                     ray=args.ray, actors=args.actors, report=args.report, quiet=args.quiet,
                     on_download=None if args.quiet else _DownloadBar())


def _check_text(flag: str, text: str) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates; the tokenizer and the metadata
    writers would fail on them only after the model is loaded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{flag} is not valid UTF-8 text (at character {exc.start + 1}); check "
                         "the encoding of the terminal or script that passed it") from None


def _check_outputs(args) -> None:
    """Every file the command will write, checked before any work (files.check_writes): none is
    the input photo or the mask (only -o may replace the photo, with --overwrite, and only when it
    is written under its own name). A run with several results writes OUT and OUT-1..OUT-N
    beside it (files.output_names): those are the names checked."""
    mask = getattr(args, "mask", None)
    inputs = {"the input photo": args.image, "the --mask file": mask if isinstance(mask, Path) else None}
    count = (methods.result_count(args.method, _method_options(args)) * args.variations
             if args.command == "edit" else 1)
    names = files.output_names(args.output, count)
    writes = [("-o", names[0], True)] + [(f"-o (result {i} of {count})", path, True)
                                         for i, path in enumerate(names[1:], 1)]
    for flag in ("save_mask", "save_heatmap", "heatmap", "report"):
        path = getattr(args, flag, None)
        if path is not None:
            writes.append(("--" + flag.replace("_", "-"), path, flag != "report"))
    files.check_writes(writes, inputs, overwritable=("-o", "the input photo"),
                       overwrite=getattr(args, "overwrite", False))


class _DownloadBar:
    """Download progress on stderr (bytes), for a hub id fetched with --allow-download."""

    def __init__(self):
        self.interactive = sys.stderr.isatty()
        self.reported = -1

    def __call__(self, done: int, total: int, name: str) -> None:
        percent = int(100 * done / max(total, 1))
        if self.interactive:
            print(f"\rdownload {done / 1e9:5.2f}/{total / 1e9:.2f} GB {percent:3d}% {name[-40:]:<40}",
                  end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif percent // 10 != self.reported // 10 or done == total:  # logs: every 10%
            print(f"download {done / 1e9:.2f}/{total / 1e9:.2f} GB ({percent}%)", file=sys.stderr,
                  flush=True)
        self.reported = percent


class _ProgressBar:
    """A one-line progress bar on stderr: stage, bar, step/total, elapsed."""

    def __init__(self):
        self.started = time.perf_counter()
        self.interactive = sys.stderr.isatty()
        self.last_stage = None

    def __call__(self, stage: str, step: int, total: int, preview=None) -> None:
        width = 30
        filled = int(width * step / max(total, 1))
        line = (f"{stage:<7}[{'#' * filled}{'.' * (width - filled)}] {step}/{total} "
                f"{time.perf_counter() - self.started:6.1f}s")
        if self.interactive:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif step == total:  # logs get one line per stage, not one per step
            print(line, file=sys.stderr, flush=True)
        self.last_stage = stage


def _finish(progress) -> None:
    if progress is not None and progress.interactive:
        print(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
