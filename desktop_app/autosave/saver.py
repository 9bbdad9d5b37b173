"""The Autosaver: saves the document and the parameter panel as they change, on a writer thread."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PySide6.QtCore import QLockFile, QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import (QAbstractButton, QComboBox, QDoubleSpinBox, QLineEdit,
                               QPlainTextEdit, QSpinBox)

from desktop_app.autosave import schema, storage

DEBOUNCE_MS = 1500  # after the last change: a brush stroke or slider drag saves once, at its end
MIN_FREE_BYTES = 1 << 30  # leave the disk at least 1 GiB: a full disk must not also fail exports
# What the parameter panel's editors say when the user changes them (the panel has no signal of
# its own for "anything shown changed"; every editor in it is one of these).
PANEL_EDITORS = ((QLineEdit, "textChanged"), (QPlainTextEdit, "textChanged"),
                 (QSpinBox, "valueChanged"), (QDoubleSpinBox, "valueChanged"),
                 (QComboBox, "currentIndexChanged"), (QAbstractButton, "toggled"))


def panel_state(panel) -> dict:
    """What the parameter panel shows: prompts, method, parameters, options, seed lock, variations."""
    if panel is None:
        return {}
    return {"source": panel.source.text(), "target": panel.target.text(),
            "method": panel.method_key(), "params": panel.params().to_dict(),
            "variations": panel.variations.value(), "lock_seed": panel.lock_seed.isChecked(),
            "options": panel.options()}


class Autosaver(QObject):
    """Saves ``doc`` (and ``panel``) into its own folder under ``root`` as they change.

    A change starts a debounce timer; when it fires the GUI thread takes a snapshot (the
    manifest's plain values, plus copies of the arrays the document paints into in place and that
    changed since the last save), and the writer thread hashes and writes the arrays whose content
    is not on disk yet, then the manifest, then deletes the files no manifest needs.

    Disk use is capped: one folder per running app; content-addressed files, so an array is
    written once however many saves follow; pictures stored as XOR against the opened photo and
    compressed, so they cost about the edited pixels only; autosave pauses (with a status message)
    while the disk has less than MIN_FREE_BYTES free.
    """

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
        self._written.connect(self._on_written)
        doc.photo_changed.connect(self.schedule)
        doc.base_changed.connect(self._on_base)
        doc.mask_changed.connect(self._on_mask)
        doc.paint_changed.connect(self._on_paint)
        for signal in (doc.heatmap_changed, doc.threshold_changed, doc.history_changed,
                       doc.preview_changed, doc.work_changed):
            signal.connect(self.schedule)
        for kind, signal in PANEL_EDITORS if panel is not None else ():
            for editor in panel.findChildren(kind):
                getattr(editor, signal).connect(self._on_panel)

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
        paint = self.doc.paint
        if paint is not None:
            self._forget(paint.rgb)
            self._forget(paint.coverage)
        self.schedule()

    def _on_panel(self, *_args) -> None:
        # Typing into a prompt of a photo with nothing else to protect starts no save.
        if self.folder is not None and self._worth_saving() and panel_state(self.panel) != self._last_panel:
            self.schedule()

    def _in_place_arrays(self) -> list:
        doc = self.doc
        arrays = [doc.base]
        for seg in doc.mask.segments:
            arrays += [seg.added, seg.erased]
        if doc.paint is not None:
            arrays += [doc.paint.rgb, doc.paint.coverage]
        return [a for a in arrays if a is not None]

    def _worth_saving(self) -> bool:
        doc = self.doc
        return doc.has_photo and bool(doc.history or doc.has_mask() or doc.paint is not None
                                      or doc.has_unexported_work())

    # ------------------------------------------------------------------ saving

    def _ensure_folder(self) -> Path:
        if self.folder is None:
            root = self.root or storage.autosave_root()
            root.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"session-{time.strftime('%Y%m%d-%H%M%S')}-"
                                                  f"{os.getpid()}-", dir=root))
            lock = storage.lock(folder)
            if lock is None:
                raise OSError(f"cannot lock {folder}")
            self.folder, self._lock = folder, lock
        return self.folder

    def snapshot(self):
        """(manifest, its array references, the photo's pixels and reference, what to remember
        once written): GUI thread, quick.

        Arrays whose content is on disk already are named; the others are held for the writer,
        copied when the document paints into them (the rest never change once made)."""
        in_place = {id(a) for a in self._in_place_arrays()}
        refs: dict[int, schema.ArrayRef] = {}
        pending = []  # (reference, id, weakref, in-place epoch): named once written, if unchanged

        def ref(array: np.ndarray) -> schema.ArrayRef:
            if id(array) not in refs:
                known = self._names.get(id(array))
                if known is not None and known[0]() is array:
                    refs[id(array)] = schema.ArrayRef(None, known[1])
                else:
                    held = array.copy() if id(array) in in_place else array
                    refs[id(array)] = schema.ArrayRef(held, None)
                    pending.append((refs[id(array)], id(array), weakref.ref(array),
                                    self._epochs.get(id(array), 0)))
            return refs[id(array)]

        panel = panel_state(self.panel)
        self._last_panel = panel
        manifest = schema.manifest(self.doc, panel, ref, time.time())
        photo = self.doc.photo.rgb  # never changed in place: the writer may read it
        photo_ref = ref(photo)  # the manifest names it too (photo.rgb)
        return manifest, list(refs.values()), photo, photo_ref, pending

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
        self._future = self._executor.submit(self._write, folder, *self.snapshot())

    def _write(self, folder, manifest, refs, photo, photo_ref, pending):
        """Writer thread: the photo (pictures are stored as XOR against it), the arrays not yet
        on disk, then the manifest, then cleanup."""
        started = time.perf_counter()
        written = 0
        try:
            for slot in [photo_ref] + refs:
                if slot.name is None:
                    slot.name = storage.array_name(slot.array)
                    if not (folder / slot.name).exists():
                        against = (photo, photo_ref.name) if slot is not photo_ref else None
                        written += storage.write_array(folder, slot.name, slot.array, against)
            text = json.dumps(manifest, separators=(",", ":"), default=lambda r: r.name)
            storage.write_manifest(folder, text)
            written += len(text)
            storage.clean(folder, [r.name for r in refs])
            result = ("ok", pending, time.perf_counter() - started, written)
        except Exception as exc:  # noqa: BLE001 - reported on the GUI thread, never fatal
            result = ("error", f"{type(exc).__name__}: {exc}")
        self._written.emit(result)
        return result

    @Slot(object)
    def _on_written(self, result) -> None:
        self._future = None
        if result[0] == "ok":
            _, pending, seconds, written = result
            for slot, key, array_ref, epoch in pending:
                if array_ref() is not None and self._epochs.get(key, 0) == epoch:
                    self._names[key] = (array_ref, slot.name)
            self.last_seconds, self.last_bytes = seconds, written
            self._warned = ""
            if self.folder is not None:
                self.saved.emit(str(self.folder / storage.MANIFEST))
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

    def adopt(self, session: storage.SavedSession, names: dict) -> None:
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
            (self.folder / storage.MANIFEST).unlink(missing_ok=True)
            for path in self.folder.glob("*.arr"):
                path.unlink(missing_ok=True)
            self._names.clear()

    def remove(self) -> None:
        """Clean close: the work was exported or discarded, so the autosave goes."""
        self._timer.stop()
        self._closed = True
        self.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self._lock is not None:
                self._lock.unlock()
            self.folder = self._lock = None
        self._names.clear()
        self._executor.shutdown(wait=True)
