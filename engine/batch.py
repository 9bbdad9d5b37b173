"""Batch editing: manifests (JSON Lines, CSV or a folder) checked before any work, a journal that
makes a batch resumable, and local or Ray Data execution through the engine's run path."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path

from engine import fields, files, methods
from engine.errors import Cancelled, EngineError, InputError
from engine.params import EditParams

JOURNAL = "batch-journal.jsonl"  # in the output folder: one JSON line per started/finished item
SOME_FAILED = 3  # exit code: the batch ran to its end but some items failed (journal, --report)
MANIFEST_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CLUSTER_HINT = ("--ray needs Ray Data, an optional extra: pip install 'diffedit-studio[cluster]' "
                "(or pip install 'ray[data]') in this environment and on every node")

_ITEM_FIELDS = ("image", "source", "target", "instruction", "method", "mask", "output")
_PARAM_FIELDS = {f.name: f for f in dataclasses.fields(EditParams)}
_OPTION_FIELDS = {f.name: f for info in methods.METHODS.values()
                  for f in dataclasses.fields(info.options)}
KNOWN_FIELDS = (*_ITEM_FIELDS, *_PARAM_FIELDS, *_OPTION_FIELDS)


@dataclass(frozen=True)
class Defaults:
    """What the command's flags give every item; a manifest's own columns override them."""

    method: str = "diffedit"
    source: str = ""
    target: str = ""
    params: EditParams = EditParams()
    options: dict = field(default_factory=dict)  # options of ``method`` (other methods' items skip them)
    strip_gps: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """How to load the model, as plain values: every Ray actor loads the same one from it."""

    source: str
    device: str = "auto"
    dtype: str = "auto"
    allow_download: bool = False
    allow_pickle: bool = False
    memory_tier: str = "auto"
    loras: tuple = ()  # engine.lora.LoraSpec of each LoRA to apply
    scheduler: str = "auto"  # engine.schedulers choice
    transformer: str = ""  # a flow model's transformer file (engine.transformer_file)
    # torch CPU threads: float sums depend on how work is split, so the same count is what makes
    # a Ray actor's or a batch's bytes equal an `edit` run's (None or 0: the physical cores, as
    # `edit` uses; never whatever count the process was left at).
    threads: int | None = None

    def load(self, on_download=None):
        from engine.models import load_model
        from engine.runtime import set_threads

        set_threads(self.threads or 0)
        return load_model(self.source, device=self.device, dtype=self.dtype,
                          allow_download=self.allow_download, allow_pickle=self.allow_pickle,
                          memory_tier=self.memory_tier, on_download=on_download,
                          loras=self.loras, scheduler=self.scheduler, transformer=self.transformer)


@dataclass(frozen=True)
class Item:
    """One photo's edit, checked: absolute paths, settings with the defaults filled in."""

    where: str  # how messages name it: "photos.csv line 4", or the photo of a folder
    image: Path
    mask: Path | None
    outputs: tuple[Path, ...]  # files.output_names: OUT, and OUT-1..OUT-N for several results
    method: str
    source: str
    target: str
    params: EditParams
    options: dict  # the method's options, defaults filled in
    strip_gps: bool
    digest: str  # hash of everything that shapes the output bytes (the journal compares it)

    @property
    def key(self) -> str:
        """The item's name in the journal: its output's file name (unique within a batch)."""
        return self.outputs[0].name

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data.update(image=str(self.image), mask=self.mask and str(self.mask),
                    outputs=[str(p) for p in self.outputs])
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "Item":
        data = json.loads(text)
        data.update(image=Path(data["image"]), mask=data["mask"] and Path(data["mask"]),
                    outputs=tuple(Path(p) for p in data["outputs"]),
                    params=EditParams.from_dict(data["params"]))
        return cls(**data)


# ---- reading and checking a manifest -----------------------------------------------------------

def read_manifest(manifest: Path, out_dir: Path, defaults: Defaults, model: str) -> list[Item]:
    """Every item of ``manifest`` (a .jsonl or .csv file, or a folder of photos), checked.

    Raises InputError naming the line (or photo) and the field of the first problem: a photo or
    mask that does not open, an unknown field, a value out of range, an option of another method,
    an output that is not a plain file name. ``model`` (its source) is part of each item's hash.
    """
    folder = manifest if manifest.is_dir() else manifest.parent
    items = [_item(where, row, folder, out_dir, defaults, model) for where, row in _rows(manifest)]
    if not items:
        raise InputError(f"{manifest}: no items; give one photo per line (an 'image' field), or a "
                         "folder with photos in it")
    return items


def _rows(manifest: Path):
    """(where, fields) for each item: typed values from JSON Lines, text from CSV (an empty cell is
    no value), the photo alone for a folder."""
    from engine.imaging import PHOTO_SUFFIXES

    if manifest.is_dir():
        photos = sorted(p for p in manifest.iterdir() if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() in PHOTO_SUFFIXES)
        yield from ((str(p), {"image": p.name}) for p in photos)
        return
    kind = MANIFEST_KINDS.get(manifest.suffix.lower())
    if kind is None:
        raise InputError(f"{manifest}: a manifest is a .jsonl (one JSON object per photo) or .csv "
                         "file, or a folder of photos")
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{manifest}: the manifest does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{manifest}: cannot read the manifest ({exc}); save it as UTF-8 text") from None
    if kind == "jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{manifest.name} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise InputError(f"{where}: each line must be a JSON object such as "
                                 '{"image": "photo.jpg", "target": "..."}')
            yield where, row
        return
    reader = csv.DictReader(text.splitlines())
    for name in reader.fieldnames or ():
        if name is not None and name.strip() not in KNOWN_FIELDS:
            raise _bad(f"{manifest.name} line 1", name.strip(), _unknown())
    for row in reader:
        where = f"{manifest.name} line {reader.line_num}"
        if None in row:
            raise InputError(f"{where}: more cells than the header has columns")
        yield where, {k.strip(): v for k, v in row.items() if v is not None and v.strip() != ""}


def _item(where: str, row: dict, folder: Path, out_dir: Path, defaults: Defaults,
          model: str) -> Item:
    from engine import imaging

    unknown = [name for name in row if name not in KNOWN_FIELDS]
    if unknown:
        raise _bad(where, unknown[0], _unknown())
    # 1. The photo: opens, within the size limits (header only: no pixels decoded here).
    if "image" not in row:
        raise _bad(where, "image", "missing: every item names the photo to edit")
    image = _path(where, "image", row["image"], folder)
    with _field(where, "image"):
        size = imaging.probe_photo(image)
    # 2. The method, its texts and its options (the flags' options only for the flags' method).
    method = _text(where, "method", row.get("method", defaults.method))
    with _field(where, "method"):
        info = methods.info(method)
    source = _text(where, "source", row.get("source", defaults.source)).strip()
    # The target text's column: "instruction" for a method that takes one, else "target".
    text = info.target_name
    other = "target" if text == "instruction" else "instruction"
    if other in row:
        raise _bad(where, other, f"method {method} takes no {other}: give the {text!r} field")
    fallback = defaults.target if methods.info(defaults.method).target_name == text else ""
    target = _text(where, text, row.get(text, fallback)).strip()
    if not target:
        what = ("say what to change, e.g. 'make the car red'" if text == "instruction"
                else "say what the photo should become")
        raise _bad(where, text, f"empty: {what} (a {text!r} field, or --{text} for every item)")
    params = methods.carry_params(defaults.params, defaults.method, method)
    for name in row.keys() & _PARAM_FIELDS.keys():
        with _field(where, name):
            params = params.replace(**{name: _typed(_PARAM_FIELDS[name], row[name])}).validate()
    own = {f.name for f in dataclasses.fields(info.options)}
    options = dict(defaults.options) if method == defaults.method else {}
    for name in row.keys() & _OPTION_FIELDS.keys():
        if name not in own:
            raise _bad(where, name, f"not an option of method {method} (its options: "
                       f"{', '.join(sorted(own)) or 'none'})")
        options[name] = _typed(_OPTION_FIELDS[name], row[name])
        with _field(where, name):
            info.parse_options(options)
    options = dataclasses.asdict(info.parse_options(options))
    # 3. The mask: opens and has the photo's size; then the method's own needs, as `edit` checks
    # them (a mask where one is needed, not empty; a source text for Prompt-to-Prompt...).
    mask = mask_pixels = None
    if "mask" in row:
        mask = _path(where, "mask", row["mask"], folder)
        with _field(where, "mask"):
            mask_pixels = files.load_mask(mask, size, label="mask")
    try:
        methods.check_inputs(method, source, target, mask_pixels, params, options,
                             methods.PAINT_IN_PHOTO)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    # 4. The outputs: plain file names in the output folder (the photo's name by default).
    name = _text(where, "output", row.get("output", _default_output(image)))
    if Path(name).name != name or name in ("", ".", ".."):
        raise _bad(where, "output", f"{name!r} is not a file name; outputs go into --out-dir, "
                   "so give a name such as 'photo-edited.png'")
    outputs = tuple(files.output_names(out_dir / name, methods.result_count(method, options)))
    digest = _digest(model=model, method=method, source=source, target=target,
                     params=params.to_dict(), options=options,
                     strip_gps=defaults.strip_gps,
                     image=_file_hash(image), mask=mask and _file_hash(mask),
                     outputs=[p.name for p in outputs])
    return Item(where, image, mask, outputs, method, source, target, params, options,
                defaults.strip_gps, digest)


def check_writes(items: list[Item], manifest: Path, out_dir: Path, report: Path | None) -> None:
    """No two items write the same file, and no output is a photo, a mask, the manifest or the
    journal (files.check_writes, as `edit` checks its own). The output folder must exist."""
    inputs: dict[str, Path | None] = {"the manifest": manifest if manifest.is_file() else None}
    for item in items:
        inputs[f"the photo of {item.where}"] = item.image
        inputs[f"the mask of {item.where}"] = item.mask
    writes = [(f"{item.where}, output", path, True) for item in items for path in item.outputs]
    writes.append(("the journal", out_dir / JOURNAL, False))
    if report is not None:
        writes.append(("--report", report, False))
    files.check_writes(writes, inputs)


def _default_output(image: Path) -> str:
    from engine.imaging import SAVE_FORMATS

    return image.name if image.suffix.lower() in SAVE_FORMATS else image.stem + ".png"


def _path(where: str, name: str, value, folder: Path) -> Path:
    text = _text(where, name, value).strip()
    if not text:
        raise _bad(where, name, "empty: give a file path (relative to the manifest's folder)")
    path = Path(text).expanduser()
    return (path if path.is_absolute() else folder / path).absolute()


def _text(where: str, name: str, value) -> str:
    if not isinstance(value, str):
        raise _bad(where, name, f"must be text, got {value!r}")
    return value


def _typed(f: dataclasses.Field, value):
    """A CSV cell's text as the field's type (JSON values are typed already); text that does not
    convert is passed on, so the field's own check names what it should be."""
    if not isinstance(value, str):
        return value
    kind, text = fields.kind(f), value.strip()
    if kind is bool:
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False
                }.get(text.lower(), value)
    with contextlib.suppress(ValueError):
        return kind(text)
    return value


def _unknown() -> str:
    return f"unknown field; the fields are {', '.join(KNOWN_FIELDS)}"


def _bad(where: str, name: str, message: str) -> InputError:
    return InputError(f"{where}, field {name!r}: {message}")


@contextlib.contextmanager
def _field(where: str, name: str):
    """An InputError raised inside says which line and field it is about."""
    try:
        yield
    except InputError as exc:
        raise _bad(where, name, str(exc)) from None


def _digest(**settings) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- the journal -------------------------------------------------------------------------------

class Journal:
    """The batch's record in its output folder: one JSON line per item started, finished or failed,
    appended and synced, so a rerun after a crash, kill -9 or Ctrl+C knows which items finished
    (and with which settings) and never rewrites them."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / JOURNAL
        self.last: dict[str, dict] = {}
        with contextlib.suppress(FileNotFoundError), open(self.path, encoding="utf-8") as stream:
            for line in stream:
                with contextlib.suppress(ValueError):  # a line cut short by a kill
                    record = json.loads(line)
                    self.last[record["key"]] = record

    def plan(self, items: list[Item]) -> tuple[list[Item], list[Item]]:
        """(items to run, items finished before with the same settings); InputError for an output
        that exists but is not this batch's, or was made with other settings."""
        todo, finished = [], []
        for item in items:
            record = self.last.get(item.key)
            present = [path for path in item.outputs if path.exists()]
            if record and record["state"] == "done" and record["hash"] == item.digest \
                    and len(present) == len(item.outputs):
                finished.append(item)
                continue
            if present and record is None:
                raise _bad(item.where, "output", f"{present[0]} already exists and is not from "
                           "this batch (not in its journal); move it away or choose another "
                           "--out-dir")
            if present and record["state"] == "done" and record["hash"] != item.digest:
                raise _bad(item.where, "output", f"{present[0]} was made by this batch with other "
                           "settings; delete it to make it again with these, or choose another "
                           "--out-dir")
            todo.append(item)  # new, failed, unfinished, or its output was deleted
        return todo, finished

    def record(self, items: list[Item], state: str, outcome: dict | None = None) -> None:
        lines = []
        for item in items:
            entry = {"key": item.key, "hash": item.digest, "state": state, "where": item.where,
                     "time": time.time()}
            if outcome is not None:
                entry.update(seconds=outcome["seconds"], error=outcome.get("error"))
            lines.append(json.dumps(entry) + "\n")
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write("".join(lines))
            stream.flush()
            os.fsync(stream.fileno())
        if new:
            from engine.imaging import fsync_folder

            fsync_folder(self.path.parent)


# ---- running -----------------------------------------------------------------------------------

def process(model, item: Item) -> dict:
    """Edit one item and write its outputs atomically; a failure is returned, not raised, so the
    batch goes on. The outcome: ok, seconds, unet_evals, warnings, error."""
    started = time.perf_counter()
    try:
        photo, results = _edit(model, item)
        written = files.best_first(results)
        margins = methods.info(item.method).canvas_margins(item.options)
        if len(written) != len(item.outputs):
            raise EngineError(f"{item.method} gave {len(results)} results, "
                              f"{methods.result_count(item.method, item.options)} were expected")
        for path, result in zip(item.outputs, written):
            files.export(path, photo, result, margins, item.strip_gps)
        return {"ok": True, "seconds": round(time.perf_counter() - started, 3),
                "unet_evals": results[0].stats.get("unet_evals", {}),
                "warnings": list(results[0].warnings)}
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - recorded with the item; the batch goes on
        message = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        return {"ok": False, "seconds": round(time.perf_counter() - started, 3), "error": message}


def _edit(model, item: Item):
    """One item through the engine's run path, exactly as `edit` runs one photo."""
    from engine import imaging
    from engine.runs import RunRequest, execute
    from engine.session import EditSession

    photo = imaging.load_photo(item.image)
    mask = files.load_mask(item.mask, photo.size, label="mask") if item.mask else None
    session = EditSession(model, photo)
    request = RunRequest(photo, str(item.image), item.method, item.source, item.target, mask,
                         item.params, dict(item.options), paint=methods.PAINT_IN_PHOTO)
    return photo, execute(request, lambda key, pixels: session)


def run_local(spec: ModelSpec, items: list[Item], on_download=None):
    """(item, outcome) for each item in order, on one model loaded once."""
    model = spec.load(on_download)
    for item in items:
        yield item, process(model, item)


class _RayEditor:
    """A Ray Data actor: loads the model once (on its own GPU when it has one) and edits the items
    of each batch it is given."""

    def __init__(self, spec: dict):
        self.model = ModelSpec(**spec).load()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        outcomes = [json.dumps(process(self.model, Item.from_json(text))) for text in batch["item"]]
        return {"index": batch["index"], "outcome": np.array(outcomes, dtype=object)}


def import_ray():
    """The ray module, or InputError saying how to install the optional extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(CLUSTER_HINT) from None
    return ray


def run_ray(spec: ModelSpec, items: list[Item], address: str | None, actors: int | None):
    """(item, outcome) for each item as actors finish them: Ray Data's map_batches over an actor
    pool, one actor per GPU of the cluster (``actors`` CPU actors, default 1, where it has none).
    Without ``address`` a local Ray instance is started on loopback; every node must see the
    photos and the output folder at the same paths."""
    import logging

    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level=logging.WARNING)
    try:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts items; Ray's would count blocks
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        count = actors or gpus or 1
        # CPU actors share the cluster's cores between them (ModelSpec.threads sets torch's count).
        per_actor = {"num_gpus": 1, "num_cpus": 1} if gpus else {
            "num_cpus": max(1, int(resources.get("CPU", 1)) // count)}
        rows = [{"index": i, "item": item.to_json()} for i, item in enumerate(items)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _RayEditor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=count),
            fn_constructor_kwargs={"spec": dataclasses.asdict(spec)}, **per_actor)
        for row in dataset.iter_rows():
            yield items[int(row["index"])], json.loads(row["outcome"])
    finally:
        if started_here:
            ray.shutdown()


# ---- the command -------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    """The batch command's own arguments (cli.py adds the edit flags, which give every item its
    defaults)."""
    parser.add_argument("manifest", type=Path, help="a .jsonl file (one JSON object per photo), a "
                        ".csv file with the same columns, or a folder of photos; fields: "
                        + ", ".join(_ITEM_FIELDS) + ", seed and any parameter or method option")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the results and the "
                        f"journal ({JOURNAL}) that lets a rerun skip finished photos")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run on a Ray cluster (ADDRESS, e.g. ray://head:10001) or a local Ray "
                        "instance (no ADDRESS); needs pip install 'diffedit-studio[cluster]'")
    parser.add_argument("--actors", type=int, default=None, metavar="N",
                        help="with --ray: editing actors (default: one per GPU, else 1)")


def command_line(model: str, method: str, source: str, target: str, params: EditParams,
                 options: dict, photos: str = "PHOTOS_FOLDER", out_dir: str = "RESULTS_FOLDER") -> str:
    """The `batch` command that applies these settings to every photo of a folder, quoted for
    this system's shell (the app's File > Batch... offers it to copy); only values that differ
    from the method's defaults are spelled out (an AUTO feather is the default: each photo gets
    its own)."""
    words = ["diffedit-studio", "batch", photos, "--out-dir", out_dir]
    if model:
        words += ["--model", model]
    if method != Defaults.method:
        words += ["--method", method]
    target_flag = "--" + methods.info(method).target_name
    words += [word for flag, text in (("--source", source), (target_flag, target)) if text
              for word in (flag, text)]
    default_params = methods.info(method).default_params()
    for f in dataclasses.fields(EditParams):
        value = getattr(params, f.name)
        if value != getattr(default_params, f.name):
            words += [fields.flag(f), str(value)]
    default_options = methods.info(method).default_options()
    for name, value in options.items():
        if value != default_options[name]:
            flag = "--" + name.replace("_", "-")
            words += [flag] if value is True else [flag, str(value)]
    if os.name == "nt":
        import subprocess

        return subprocess.list2cmdline(words)
    import shlex

    return shlex.join(words)


def run(manifest: Path, out_dir: Path, defaults: Defaults, spec: ModelSpec, *,
        ray: str | None = None, actors: int | None = None, report: Path | None = None,
        quiet: bool = False, on_download=None) -> int:
    """The batch command: check everything, then edit what is not finished yet.

    Returns 0 when every item is finished, SOME_FAILED when some failed (each recorded with its
    error); a bad manifest raises InputError before anything is written.
    """
    # 1. Check everything before any work.
    if actors is not None and actors < 1:
        raise InputError(f"--actors must be 1 or more, got {actors}")
    if spec.threads is not None and spec.threads < 1:
        raise InputError(f"--threads must be 1 or more, got {spec.threads}")
    if ray is not None:
        import_ray()
        if spec.threads is None:  # actors compute with this process's split: the same bytes
            import torch

            spec = dataclasses.replace(spec, threads=torch.get_num_threads())
    elif actors is not None:
        raise InputError("--actors applies to --ray runs only")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir} is a file; give a folder")
    if not out_dir.parent.is_dir():
        raise InputError(f"--out-dir {out_dir}: the folder {out_dir.parent} does not exist")
    items = read_manifest(manifest, out_dir, defaults, spec.source)
    created = not out_dir.exists()
    if created:
        out_dir.mkdir()
    try:
        check_writes(items, manifest, out_dir, report)
        journal = Journal(out_dir)
        todo, finished = journal.plan(items)
    except InputError:
        if created:
            out_dir.rmdir()  # nothing written for a bad manifest, not even the folder
        raise
    # 2. Edit, journalling each item as it finishes.
    progress = Progress(len(items), len(finished), quiet)
    outcomes: dict[str, dict] = {}
    started = time.perf_counter()
    try:
        if todo:
            journal.record(todo, "started")
            _remove_partial_writes(todo)
            runner = (run_ray(spec, todo, ray or None, actors) if ray is not None
                      else run_local(spec, todo, on_download))
            for item, outcome in runner:
                journal.record([item], "done" if outcome["ok"] else "failed", outcome)
                outcomes[item.key] = outcome
                progress.update(item, outcome)
    finally:
        progress.close()
        if report is not None:
            _write_report(report, items, finished, outcomes, manifest, out_dir, spec,
                          "ray" if ray is not None else "local", time.perf_counter() - started)
    return 0 if all(o["ok"] for o in outcomes.values()) and len(outcomes) == len(todo) else SOME_FAILED


def _remove_partial_writes(items: list[Item]) -> None:
    """Temporary files that a killed run's atomic writes left beside these items' outputs."""
    for item in items:
        for path in item.outputs:
            for partial in path.parent.glob(f".{glob_escape(path.name)}.*.part"):
                partial.unlink(missing_ok=True)


def _write_report(path: Path, items, finished, outcomes, manifest, out_dir, spec, mode,
                  seconds) -> None:
    from engine import imaging

    skipped = {item.key for item in finished}
    rows = []
    for item in items:
        outcome = outcomes.get(item.key, {})
        status = ("skipped" if item.key in skipped else "done" if outcome.get("ok")
                  else "failed" if outcome else "not run")
        rows.append({"where": item.where, "image": str(item.image),
                     "outputs": [str(p) for p in item.outputs], "status": status,
                     "seconds": outcome.get("seconds"), "unet_evals": outcome.get("unet_evals"),
                     "error": outcome.get("error"), "warnings": outcome.get("warnings", [])})
    counts = {status: sum(row["status"] == status for row in rows)
              for status in ("done", "skipped", "failed", "not run")}
    evals = sum(sum((o.get("unet_evals") or {}).values()) for o in outcomes.values())
    report = {"command": "batch", "manifest": str(manifest), "out_dir": str(out_dir),
              "model": spec.source, "mode": mode, "total": len(items), "counts": counts,
              "seconds": round(seconds, 3), "unet_evals": evals,
              "photos_per_minute": round(60 * len(outcomes) / seconds, 3) if outcomes else None,
              "items": rows}
    text = json.dumps(report, indent=2).encode("utf-8")
    imaging.atomic_write(path, lambda stream: stream.write(text))


class Progress:
    """Items done, failed, rate and time left on one stderr line (a line per item in logs); a
    failed item's error is always printed."""

    def __init__(self, total: int, skipped: int, quiet: bool):
        self.total, self.skipped, self.quiet = total, skipped, quiet
        self.done = self.failed = 0
        self.started = time.perf_counter()
        self.interactive = sys.stderr.isatty()
        if skipped and not quiet:
            print(f"batch: {skipped} of {total} finished before, skipped", file=sys.stderr)

    def update(self, item: Item, outcome: dict) -> None:
        if outcome["ok"]:
            self.done += 1
        else:
            self.failed += 1
            print(("\n" if self.interactive and not self.quiet else "")
                  + f"failed: {item.where}: {outcome['error']}", file=sys.stderr, flush=True)
        if self.quiet:
            return
        ran = self.done + self.failed
        finished = self.skipped + ran
        elapsed = time.perf_counter() - self.started
        rate = 60 * ran / elapsed if elapsed > 0 else 0.0
        left = (self.total - finished) * elapsed / ran
        width = 30
        filled = int(width * finished / self.total)
        line = (f"batch [{'#' * filled}{'.' * (width - filled)}] {finished}/{self.total} "
                f"done, {self.failed} failed, {rate:.1f}/min, {_duration(left)} left")
        print("\r" + line if self.interactive else line, end="" if self.interactive else "\n",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.interactive and not self.quiet and self.done + self.failed:
            print(file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
