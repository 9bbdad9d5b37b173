"""Crash-safe autosave of the editing session, and the offer to restore it at the next start.

Layout: ``data_dir()/autosave/<session>/`` holds one ``manifest.json`` and content-addressed array
files (``<hash>.arr``). A running app holds ``<session>/instance.lock`` (QLockFile: the pid of a
dead process frees it), so a folder whose lock can be taken belongs to a session that did not
close cleanly.

Writing (background thread, never the GUI's): a change to the Document starts a debounce timer;
when it fires the GUI thread takes a snapshot (JSON-ready structure, plus copies of the arrays the
document changes in place and that changed since the last save), and the writer thread hashes,
compresses and writes the arrays whose content is not on disk yet, then writes the manifest last
(temporary file, fsync, os.replace, fsync of the folder) and deletes files no manifest needs. A
kill -9 at any moment therefore leaves the previous manifest and every file it names intact.

Disk use is capped by: one folder per running app; files are content-addressed, so an array is
written once however many saves follow (history results in particular); results and the base are
stored as XOR against the opened photo and compressed, so they cost about the edited pixels only;
unreferenced files are deleted after every manifest; autosave pauses (with a status message) while
the disk has less than MIN_FREE_BYTES free; at start, orphaned sessions beyond the newest
KEEP_ORPHANS or older than ORPHAN_MAX_AGE_DAYS are deleted.

New document state is saved by listing the attribute in DOC_FIELDS: dataclasses from the engine
or the app, numpy arrays, tuples, bytes and paths inside it are encoded generically.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import struct
import time
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PySide6.QtCore import QLockFile, QObject, QTimer, Signal, Slot
from engine import config
from engine.imaging import atomic_write

FORMAT = 1
MANIFEST = "manifest.json"
LOCK = "instance.lock"
DEBOUNCE_MS = 1500  # after the last change: a brush stroke or slider drag saves once, at its end
PANEL_POLL_MS = 2000  # prompts and parameters have no document signal; they are compared this often
MIN_FREE_BYTES = 1 << 30  # leave the disk at least 1 GiB: a full disk must not also fail exports
KEEP_ORPHANS = 3
ORPHAN_MAX_AGE_DAYS = 30
MAGIC = b"DEA1"
# Document attributes that make up a session (those a Document has are saved). Arrays the
# Document changes *in place* are listed by Autosaver._in_place_arrays and copied when they have
# changed; every other array is treated as immutable once made (history results, heatmaps, the
# opened photo), so it is hashed and written once.
DOC_FIELDS = ("photo", "display_name", "base", "threshold", "mask", "paint", "history",
              "preview_id", "applied")
UNDO_NOTE = ("The undo steps (Ctrl+Z) cannot be brought back; the photo, the mask layers and every "
             "result with its settings are restored as they were.")


class AutosaveError(Exception):
    """An autosave that cannot be read; the message says what is wrong, for the user."""


def autosave_root() -> Path:
    return config.data_dir() / "autosave"


# ============================================================================ array files


def _array_name(array: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest() + ".arr"


def _write_array(folder: Path, name: str, array: np.ndarray, reference=None) -> int:
    """Write ``array`` as ``name``: header, then zlib of the filtered bytes. Returns bytes written.

    Filters make the data compress: uint8 pictures are XORed with the opened photo (unchanged
    pixels become zeros), float32 masks have their bytes regrouped by significance.
    """
    array = np.ascontiguousarray(array)
    header = {"dtype": array.dtype.str, "shape": list(array.shape), "filter": "none"}
    data = array
    if reference is not None and reference[0].shape == array.shape and reference[0].dtype == array.dtype:
        data = np.bitwise_xor(array, reference[0])
        header.update(filter="xor", ref=reference[1])
    elif array.dtype == np.float32:
        data = array.view(np.uint8).reshape(-1, 4).T
        header["filter"] = "shuffle"
    body = zlib.compress(np.ascontiguousarray(data).tobytes(), 1)
    head = json.dumps(header).encode()
    # Without the folder fsync: the manifest written after it syncs the folder once for all.
    atomic_write(folder / name, lambda stream: stream.write(MAGIC + struct.pack("<I", len(head))
                                                            + head + body), sync_folder=False)
    return len(body) + len(head) + 8


def _read_array(folder: Path, name: str, cache: dict) -> np.ndarray:
    if name in cache:
        return cache[name]
    path = folder / name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AutosaveError(f"the file {name} is missing or unreadable ({exc.strerror or exc})") from None
    try:
        if raw[:4] != MAGIC:
            raise ValueError("not an autosave array file")
        (length,) = struct.unpack("<I", raw[4:8])
        header = json.loads(raw[8:8 + length])
        dtype, shape = np.dtype(header["dtype"]), tuple(header["shape"])
        data = zlib.decompress(raw[8 + length:])
        if header["filter"] == "shuffle":
            array = np.frombuffer(data, np.uint8).reshape(4, -1).T.copy().view(dtype).reshape(shape)
        else:
            array = np.frombuffer(data, dtype).reshape(shape).copy()
        if header["filter"] == "xor":
            array ^= _read_array(folder, header["ref"], cache)
    except AutosaveError:
        raise
    except (ValueError, KeyError, TypeError, zlib.error, struct.error) as exc:
        raise AutosaveError(f"the file {name} is damaged ({exc})") from None
    if _array_name(array) != name:
        raise AutosaveError(f"the file {name} is damaged (its content does not match its checksum)")
    cache[name] = array
    return array


# ============================================================================ encoding


def _type_path(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_type(path: str):
    module, _, name = path.partition(":")
    # Only our own dataclasses: an autosave file must never make us import arbitrary code.
    if module.split(".")[0] not in ("engine", "desktop_app"):
        raise AutosaveError(f"it names an unexpected type {path}")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise AutosaveError(f"it names the type {path}, which this version does not have") from None
    if not dataclasses.is_dataclass(cls):
        raise AutosaveError(f"it names {path}, which is not a data type")
    return cls


class _Encoder:
    """Turns document state into JSON, collecting the arrays (by reference) as it goes."""

    def __init__(self, name_of):
        self.name_of = name_of  # array -> file name, or None when it still has to be hashed
        self.pending: list[np.ndarray] = []  # arrays to hash and write, in first-seen order
        self.slots: list[dict] = []  # their placeholders in the JSON, filled in by the writer

    def encode(self, value):
        if isinstance(value, np.ndarray):
            name = self.name_of(value)
            slot = {"$array": name}
            if name is None:
                self.pending.append(value)
                self.slots.append(slot)
            return slot
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            return {"$dict": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if isinstance(value, (bytes, bytearray)):
            return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, os.PathLike):
            return {"$path": os.fspath(value)}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {"$type": _type_path(value),
                    "fields": {f.name: self.encode(getattr(value, f.name))
                               for f in dataclasses.fields(value)}}
        # No such value exists in a Document today; should one appear, its text is kept rather
        # than losing the whole autosave (the round-trip test would show the difference).
        return {"$text": repr(value)}


class _Decoder:
    def __init__(self, folder: Path):
        self.folder = folder
        self.arrays: dict[str, np.ndarray] = {}  # name -> array as read (XOR references too)
        self.used: list[tuple[np.ndarray, str]] = []  # every array handed out, with its name

    def decode(self, value):
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$array" in value:
            name = value["$array"]
            array = _read_array(self.folder, name, self.arrays)
            # Equal content (the base and the photo, two empty layers) is one file but must be
            # separate arrays again: the document paints into some of them in place.
            if any(a is array for a, _ in self.used):
                array = array.copy()
            self.used.append((array, name))
            return array
        if "$tuple" in value:
            return tuple(self.decode(v) for v in value["$tuple"])
        if "$dict" in value:
            return {self.decode(k): self.decode(v) for k, v in value["$dict"]}
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        if "$path" in value:
            return Path(value["$path"])
        if "$text" in value:
            return value["$text"]
        if "$type" in value:
            cls = _load_type(value["$type"])
            known = {f.name for f in dataclasses.fields(cls)}
            fields = {k: self.decode(v) for k, v in value["fields"].items() if k in known}
            try:
                return cls(**fields)
            except TypeError as exc:
                raise AutosaveError(f"it holds a {cls.__name__} this version cannot rebuild ({exc})") from None
        raise AutosaveError("it holds a value of an unknown kind")


# ============================================================================ the session on disk


@dataclasses.dataclass
class SavedSession:
    """An autosave found on disk (manifest read, arrays not yet loaded)."""

    folder: Path
    manifest: dict
    lock: QLockFile | None = None

    @property
    def saved(self) -> float:
        return float(self.manifest.get("saved", 0.0))

    @property
    def photo_name(self) -> str:
        return str(self.manifest.get("summary", {}).get("photo", "Untitled"))

    @property
    def entries(self) -> int:
        return int(self.manifest.get("summary", {}).get("entries", 0))

    def load(self) -> dict:
        """Every document field and the panel state, arrays loaded and verified."""
        decoder = _Decoder(self.folder)
        try:
            state = {key: decoder.decode(value) for key, value in self.manifest["state"].items()}
        except AutosaveError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AutosaveError(f"its list of contents is damaged ({type(exc).__name__}: {exc})") from None
        missing = [key for key in ("photo", "display_name", "base", "mask", "history") if key not in state]
        if missing:
            raise AutosaveError(f"it lacks {', '.join(missing)}")
        state["_names"] = {id(a): (weakref.ref(a), name) for a, name in decoder.used}
        return state

    def release(self) -> None:
        if self.lock is not None:
            self.lock.unlock()
            self.lock = None

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()


def _lock(folder: Path) -> QLockFile | None:
    lock = QLockFile(str(folder / LOCK))
    lock.setStaleLockTime(0)  # a live app's lock never goes stale by age; a dead pid frees it
    return lock if lock.tryLock(0) else None


def _read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except OSError as exc:
        raise AutosaveError(f"its list of contents cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise AutosaveError(f"its list of contents is damaged ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("state"), dict):
        raise AutosaveError("its list of contents is damaged (unexpected structure)")
    if manifest.get("format") != FORMAT:
        raise AutosaveError(f"it was written by a different version (format {manifest.get('format')})")
    return manifest


def find_orphans(root: Path | None = None) -> tuple[list[SavedSession], list[str]]:
    """Autosaves of sessions that did not close cleanly, newest first, each locked for us.

    Returns (sessions, problems): a damaged autosave is renamed ``*.damaged`` (kept for the user,
    never offered again) and described in ``problems``. Old and surplus orphans are deleted.
    """
    root = root or autosave_root()
    found: list[SavedSession] = []
    problems: list[str] = []
    if not root.is_dir():
        return found, problems
    now = time.time()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.suffix == ".damaged":
            if now - folder.stat().st_mtime > ORPHAN_MAX_AGE_DAYS * 86400:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        lock = _lock(folder)
        if lock is None:
            continue  # another running app owns it
        if not (folder / MANIFEST).exists():  # killed before its first complete save: nothing to offer
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlock()
            continue
        try:
            found.append(SavedSession(folder, _read_manifest(folder), lock))
        except AutosaveError as exc:
            lock.unlock()
            damaged = folder.with_name(folder.name + ".damaged")
            try:
                os.replace(folder, damaged)
            except OSError:
                damaged = folder
            problems.append(f"The autosaved session in {folder} cannot be restored: {exc}. Its "
                            f"files were kept in {damaged}.")
    found.sort(key=lambda s: s.saved, reverse=True)
    keep = []
    for index, session in enumerate(found):
        if index >= KEEP_ORPHANS or now - session.saved > ORPHAN_MAX_AGE_DAYS * 86400:
            session.discard()
        else:
            keep.append(session)
    return keep, problems


# ============================================================================ restoring


def panel_state(panel) -> dict:
    """What the parameter panel shows: prompts, method, parameters, seed lock, variations."""
    if panel is None:
        return {}
    state = {"source": panel.source.text(), "target": panel.target.text(),
             "method": panel.method_key(), "params": panel.params().to_dict(),
             "variations": panel.variations.value(), "lock_seed": panel.lock_seed.isChecked()}
    if callable(getattr(panel, "options", None)):  # per-method options, where the panel has them
        state["options"] = panel.options()
    return state


def restore_panel(panel, state: dict) -> None:
    from engine.params import EditParams

    if panel is None or not state:
        return
    panel.set_params(EditParams.from_dict(state["params"]), state.get("source"),
                     state.get("target"), state.get("method"))
    panel.variations.setValue(int(state.get("variations", 1)))
    panel.lock_seed.setChecked(bool(state.get("lock_seed", False)))
    if "options" in state and callable(getattr(panel, "set_options", None)):
        panel.set_options(state["options"])


def install(doc, state: dict) -> None:
    """Put a loaded session into ``doc`` (no undo steps); the Document tells every view."""
    _check_shapes(state)  # before anything changes: a mismatch must not leave half a session
    fields = {key: state[key] for key in DOC_FIELDS
              if key in state and key not in ("photo", "display_name") and hasattr(doc, key)}
    doc.restore_session(state["photo"], state["display_name"], fields, bool(state.get("unexported")))


def _check_shapes(state: dict) -> None:
    base = state["base"]
    if not (isinstance(base, np.ndarray) and base.ndim == 3 and base.shape[2] == 3):
        raise AutosaveError("its base picture is not an RGB image")
    layers = [state["mask"].heatmap] + [a for seg in state["mask"].segments for a in (seg.added, seg.erased)]
    paint = state.get("paint")
    if paint is not None:
        layers += [paint.coverage, paint.rgb[..., 0]]
    if any(a is not None and a.shape[:2] != base.shape[:2] for a in layers):
        raise AutosaveError("its mask layers and its picture differ in size")


def _entries(n: int) -> str:
    return f"{n} history entr{'y' if n == 1 else 'ies'}"


def restore_text(session: SavedSession) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.saved))
    return f"Restore your unsaved session from {when} ({session.photo_name}, {_entries(session.entries)})?"


def offer_restore(window, orphans: tuple[list[SavedSession], list[str]] | None = None) -> bool:
    """At start: ask about the newest orphaned autosave. True when a session was restored."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QMessageBox

    from desktop_app.dialogs import show_error

    sessions, problems = orphans if orphans is not None else find_orphans()
    for problem in problems:
        show_error(window, "Autosave", problem)
    if not sessions:
        return False
    session = sessions[0]
    for other in sessions[1:]:
        other.release()  # offered at a later start
    box = restore_box(session, window)
    answer = box.exec()
    if answer != QMessageBox.StandardButton.Yes:
        if answer == QMessageBox.StandardButton.Discard:
            session.discard()
        else:
            session.release()
        return False

    def set_aside(reason: str) -> None:
        session.release()
        damaged = session.folder.with_name(session.folder.name + ".damaged")
        try:
            os.replace(session.folder, damaged)
        except OSError:
            damaged = session.folder
        show_error(window, "Cannot restore the session",
                   f"The autosaved session cannot be restored: {reason}. The editor starts without "
                   f"it; its files were kept in {damaged}.")

    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # about 2 s for a 12 MP session
    try:
        state = session.load()
        install(window.doc, state)
        restore_panel(getattr(window, "params", None), state.get("panel", {}))
    except AutosaveError as exc:
        set_aside(str(exc))
        return False
    except Exception as exc:  # noqa: BLE001 - a session from another version must not stop the app
        set_aside(f"it does not fit this version of the editor ({type(exc).__name__}: {exc})")
        return False
    finally:
        QApplication.restoreOverrideCursor()
    autosaver = getattr(window, "autosaver", None)
    if autosaver is not None:
        autosaver.adopt(session, state["_names"])
    else:
        session.release()
    window.statusBar().showMessage(f"Restored {session.photo_name} with "
                                   f"{_entries(session.entries)}.", 10000)
    return True


def restore_box(session: SavedSession, parent=None):
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Question, "Restore unsaved session", restore_text(session),
                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Discard, parent)
    box.button(QMessageBox.StandardButton.Yes).setText("Restore")
    discard = box.button(QMessageBox.StandardButton.Discard)
    discard.setText("Discard")
    discard.setToolTip("Delete the autosaved session for good")
    box.setDefaultButton(QMessageBox.StandardButton.Yes)
    box.setInformativeText("DiffEdit Studio did not close normally last time. " + UNDO_NOTE)
    return box


# ============================================================================ the autosaver


class Autosaver(QObject):
    """Saves ``doc`` (and the panel's prompts and parameters) as it changes; see the module text."""

    saved = Signal(str)  # the manifest written
    problem = Signal(str)  # a save that could not be written, for the status bar
    _written = Signal(object)  # writer thread -> GUI thread

    def __init__(self, doc, panel=None, status_bar=None, root: Path | None = None, parent=None):
        super().__init__(parent)
        self.doc = doc
        self.panel = panel
        self.status_bar = status_bar
        self.root = root
        self.folder: Path | None = None
        self._lock: QLockFile | None = None
        self._names: dict[int, tuple] = {}  # id(array) -> (weakref, file name): content on disk
        self._epochs: dict[int, int] = {}  # id(array) -> times it was changed in place
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffedit-autosave")
        self._future = None
        self._again = False
        self._last_panel: dict | None = None
        self._warned = ""
        self._closed = False
        self.last_seconds = 0.0  # writer time of the last save (arrays + manifest), for reports
        self.last_bytes = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.save_now)
        self._poll = QTimer(self)
        self._poll.setInterval(PANEL_POLL_MS)
        self._poll.timeout.connect(self._check_panel)
        self._poll.start()
        self._written.connect(self._on_written)
        doc.photo_changed.connect(self.schedule)
        doc.base_changed.connect(self._on_base)
        doc.mask_changed.connect(self._on_mask)
        for signal in (doc.heatmap_changed, doc.history_changed, doc.preview_changed,
                       doc.work_changed):
            signal.connect(self.schedule)
        if hasattr(doc, "paint_changed"):  # the scribble paint layer, painted into in place
            doc.paint_changed.connect(self._on_paint)

    # ------------------------------------------------------------------ change tracking

    @Slot()
    def schedule(self, *_args) -> None:
        self._timer.start()  # restarts: saves DEBOUNCE_MS after the last change

    def _forget(self, array) -> None:
        if array is not None:
            self._names.pop(id(array), None)
            self._epochs[id(array)] = self._epochs.get(id(array), 0) + 1

    def _on_base(self, _rect=None) -> None:
        self._forget(self.doc.base)
        self.schedule()

    def _on_mask(self, rect=None) -> None:
        # A rectangle means strokes on the top segment; None may be any structural change.
        segments = self.doc.mask.segments if rect is None else self.doc.mask.segments[-1:]
        for seg in segments:
            self._forget(seg.added)
            self._forget(seg.erased)
        self.schedule()

    def _on_paint(self, _rect=None) -> None:
        paint = getattr(self.doc, "paint", None)
        if paint is not None:
            self._forget(paint.rgb)
            self._forget(paint.coverage)
        self.schedule()

    def _in_place_arrays(self) -> list:
        doc = self.doc
        arrays = [doc.base]
        for seg in doc.mask.segments:
            arrays += [seg.added, seg.erased]
        paint = getattr(doc, "paint", None)
        if paint is not None:
            arrays += [paint.rgb, paint.coverage]
        return [a for a in arrays if a is not None]

    def _check_panel(self) -> None:
        if self.folder is not None and self._worth_saving() and panel_state(self.panel) != self._last_panel:
            self.schedule()

    def _worth_saving(self) -> bool:
        doc = self.doc
        painted = getattr(doc, "paint", None) is not None
        return doc.has_photo and bool(doc.history or doc.has_mask() or painted
                                      or doc.has_unexported_work())

    # ------------------------------------------------------------------ saving

    def _name_of(self, array: np.ndarray):
        known = self._names.get(id(array))
        if known is not None and known[0]() is array:
            return known[1]
        return None

    def _ensure_folder(self) -> Path:
        if self.folder is None:
            root = self.root or autosave_root()
            folder = root / f"session-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            folder.mkdir(parents=True, exist_ok=True)
            lock = _lock(folder)
            if lock is None:
                raise OSError(f"cannot lock {folder}")
            self.folder, self._lock = folder, lock
        return self.folder

    def snapshot(self):
        """(manifest, pending arrays, their slots, array epochs): GUI thread, quick."""
        doc = self.doc
        in_place = {id(a) for a in self._in_place_arrays()}
        encoder = _Encoder(self._name_of)
        state = {key: encoder.encode(getattr(doc, key)) for key in DOC_FIELDS if hasattr(doc, key)}
        state["unexported"] = doc.has_unexported_work()
        panel = panel_state(self.panel)
        state["panel"] = encoder.encode(panel)
        self._last_panel = panel
        # Arrays the document paints into are copied now; the rest are never changed once made.
        pending = [a.copy() if id(a) in in_place else a for a in encoder.pending]
        originals = [(id(a), weakref.ref(a), self._epochs.get(id(a), 0)) for a in encoder.pending]
        photo = getattr(doc.photo, "rgb", None)
        reference = (photo, self._name_of(photo)) if photo is not None else None
        manifest = {"format": FORMAT, "app": "DiffEdit Studio", "saved": time.time(),
                    "pid": os.getpid(), "state": state,
                    "summary": {"photo": doc.display_name, "entries": len(doc.history)}}
        return manifest, pending, encoder.slots, originals, reference

    @Slot()
    def save_now(self) -> None:
        """Write the session now (in the background); a save already running is followed by one."""
        self._timer.stop()
        if self._closed:
            return
        if self._future is not None:
            self._again = True
            return
        if not self._worth_saving():
            self._remove_files()
            return
        try:
            folder = self._ensure_folder()
            if shutil.disk_usage(folder).free < MIN_FREE_BYTES:
                self._report(f"Autosave paused: less than {MIN_FREE_BYTES >> 30} GiB free on the "
                             f"disk of {folder}. Free some space; it resumes at the next change.")
                return
        except OSError as exc:
            self._report(f"Autosave failed: {exc}. Your work is not protected against a crash; "
                         "export it to keep it.")
            return
        job = self.snapshot()
        self._future = self._executor.submit(self._write, folder, *job)

    def _write(self, folder, manifest, pending, slots, originals, reference):
        """Writer thread: arrays not yet on disk, then the manifest, then cleanup."""
        started = time.perf_counter()
        written = 0
        try:
            ref = None
            if reference is not None:
                ref_name = reference[1] or _array_name(reference[0])
                if not (folder / ref_name).exists():
                    written += _write_array(folder, ref_name, reference[0])
                ref = (reference[0], ref_name)
            names = []
            for array, slot in zip(pending, slots):
                name = _array_name(array)
                if not (folder / name).exists():
                    use_ref = ref if array.dtype == np.uint8 and ref is not None and ref[1] != name else None
                    written += _write_array(folder, name, array, use_ref)
                slot["$array"] = name
                names.append(name)
            text = json.dumps(manifest, separators=(",", ":"))
            atomic_write(folder / MANIFEST, lambda stream: stream.write(text.encode("utf-8")))
            written += len(text)
            self._clean(folder, text)
            result = ("ok", names, originals, ref, time.perf_counter() - started, written)
        except Exception as exc:  # noqa: BLE001 - reported on the GUI thread, never fatal
            result = ("error", f"{type(exc).__name__}: {exc}")
        self._written.emit(result)
        return result

    @staticmethod
    def _clean(folder: Path, manifest_text: str) -> None:
        needed = set()
        for name in set(_names_in(manifest_text)):
            needed.add(name)
            try:  # an XOR file needs its reference
                with open(folder / name, "rb") as stream:
                    head = stream.read(8)
                    header = json.loads(stream.read(struct.unpack("<I", head[4:8])[0]))
                if header.get("ref"):
                    needed.add(header["ref"])
            except (OSError, ValueError, struct.error):
                pass
        for path in folder.iterdir():
            # .part files are what a killed writer left half-written (only this thread writes).
            if (path.name.endswith(".arr") and path.name not in needed) or path.name.endswith(".part"):
                path.unlink(missing_ok=True)

    @Slot(object)
    def _on_written(self, result) -> None:
        self._future = None
        if result[0] == "ok":
            _, names, originals, ref, seconds, written = result
            for (key, ref_obj, epoch), name in zip(originals, names):
                array = ref_obj()
                if array is not None and self._epochs.get(key, 0) == epoch:
                    self._names[key] = (ref_obj, name)
            if ref is not None:
                self._names[id(ref[0])] = (weakref.ref(ref[0]), ref[1])
            self.last_seconds, self.last_bytes = seconds, written
            self._warned = ""
            if self.folder is not None:
                self.saved.emit(str(self.folder / MANIFEST))
        else:
            self._report(f"Autosave failed: {result[1]}. Your work is not protected against a "
                         "crash; export it to keep it.")
        if self._again:
            self._again = False
            self.save_now()

    def _report(self, message: str) -> None:
        if message != self._warned:  # once per kind of problem, not at every change
            self._warned = message
            self.problem.emit(message)
            if self.status_bar is not None:
                self.status_bar.showMessage(message, 15000)

    # ------------------------------------------------------------------ lifecycle

    def wait(self) -> None:
        """Block until the running write (and a follow-up it queued) has finished: tests, close."""
        from PySide6.QtCore import QCoreApplication

        while self._future is not None:
            self._future.result()
            QCoreApplication.processEvents()  # delivers _written, which may queue one more save

    def flush(self) -> None:
        """Save now and wait for it."""
        self.save_now()
        self.wait()

    def adopt(self, session: SavedSession, names: dict) -> None:
        """Continue saving into a restored session's folder; its arrays need no rewriting."""
        self.wait()
        previous = self.folder
        if self._lock is not None:
            self._lock.unlock()
        if previous is not None and previous != session.folder:
            shutil.rmtree(previous, ignore_errors=True)
        self.folder, self._lock = session.folder, session.lock
        session.lock = None
        self._names.update(names)
        self._last_panel = panel_state(self.panel)

    def _remove_files(self) -> None:
        if self.folder is not None:
            (self.folder / MANIFEST).unlink(missing_ok=True)
            for path in self.folder.glob("*.arr"):
                path.unlink(missing_ok=True)
            self._names.clear()

    def remove(self) -> None:
        """Clean close: the work was exported or discarded, so the autosave goes."""
        self._timer.stop()
        self._poll.stop()
        self._closed = True
        self.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self._lock is not None:
                self._lock.unlock()
            self.folder = self._lock = None
        self._names.clear()
        self._executor.shutdown(wait=True)


def _names_in(text: str):
    start = 0
    key = '"$array":"'
    while (index := text.find(key, start)) >= 0:
        end = text.find('"', index + len(key))
        yield text[index + len(key):end]
        start = end
