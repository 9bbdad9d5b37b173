"""Autosave folders on disk: content-addressed array files, the manifest, the lock, crashed sessions."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QLockFile

from desktop_app.autosave import schema
from desktop_app.autosave.schema import AutosaveError
from engine import config
from engine.imaging import atomic_write

# Layout: autosave_root()/<session>/ holds manifest.json and <hash>.arr files. A running app
# holds <session>/instance.lock (QLockFile: a dead pid frees it), so a folder whose lock can be
# taken belongs to a session that did not close cleanly.
MANIFEST = "manifest.json"
LOCK = "instance.lock"
DAMAGED = ".damaged"  # suffix of a folder set aside: kept for the user, never offered again
DAMAGED_MAX_AGE_DAYS = 30
MAGIC = b"DEA1"
ARRAY_FILE = re.compile(r"[0-9a-f]{32}\.arr")  # no other name is read: no path from a file
ARRAY_DTYPES = ("|u1", "<u2", "<f4")  # 8- and 16-bit pictures, float masks
MAX_ARRAY_ITEMS = 1 << 31  # a bound on what a header can ask to inflate (8 GB of float32)
MAX_MANIFEST_BYTES = 64 << 20  # 10,000 results take about 10 MB


def autosave_root() -> Path:
    return config.data_dir() / "autosave"


# ============================================================================ array files


def array_name(array: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest() + ".arr"


def write_array(folder: Path, name: str, array: np.ndarray, reference=None) -> int:
    """Write ``array`` as ``name``: header, then zlib of the filtered bytes. Returns bytes written.

    Filters make the data compress: uint8 pictures are XORed with ``reference`` (the opened
    photo and its file name: unchanged pixels become zeros), float32 masks have their bytes
    regrouped by significance.
    """
    array = np.ascontiguousarray(array)
    header = {"dtype": array.dtype.str, "shape": list(array.shape), "filter": "none"}
    data = array
    if reference is not None and reference[0].shape == array.shape and reference[0].dtype == array.dtype:
        data = np.bitwise_xor(array, reference[0])
        header.update(filter="xor", ref=reference[1])
    elif array.dtype == np.float32:
        data = _shuffle(array)
        header["filter"] = "shuffle"
    body = zlib.compress(np.ascontiguousarray(data).tobytes(), 1)
    head = json.dumps(header).encode()
    # Without the folder fsync: the manifest written after it syncs the folder once for all.
    atomic_write(folder / name, lambda stream: stream.write(MAGIC + struct.pack("<I", len(head))
                                                            + head + body), sync_folder=False)
    return len(body) + len(head) + 8


def _shuffle(array: np.ndarray) -> np.ndarray:
    """The bytes of each value regrouped by significance (byte k of every value, then k + 1):
    masks then compress well. Strided copies, three times faster than a transpose."""
    raw = array.reshape(-1).view(np.uint8)
    planes = np.empty((array.itemsize, array.size), np.uint8)
    for k in range(array.itemsize):
        planes[k] = raw[k::array.itemsize]
    return planes


def _unshuffle(data: bytes, dtype: np.dtype) -> np.ndarray:
    planes = np.frombuffer(data, np.uint8).reshape(dtype.itemsize, -1)
    raw = np.empty(planes.size, np.uint8)
    for k in range(dtype.itemsize):
        raw[k::dtype.itemsize] = planes[k]
    return raw.view(dtype)


def _read_header(raw: bytes, name: str) -> tuple[dict, int]:
    if raw[:4] != MAGIC or len(raw) < 8:
        raise AutosaveError(f"the file {name} is damaged (not an autosave array file)")
    (length,) = struct.unpack("<I", raw[4:8])
    try:
        header = json.loads(raw[8:8 + length])
        dtype, shape = np.dtype(header["dtype"]).str, header["shape"]
        valid = (dtype in ARRAY_DTYPES and isinstance(shape, list) and len(shape) <= 3
                 and all(type(n) is int and 0 <= n <= 1 << 20 for n in shape)
                 and int(np.prod(shape, dtype=np.int64)) <= MAX_ARRAY_ITEMS
                 and header["filter"] in ("none", "shuffle", "xor")
                 and (header["filter"] != "xor" or ARRAY_FILE.fullmatch(str(header.get("ref")))))
    except (ValueError, KeyError, TypeError) as exc:
        raise AutosaveError(f"the file {name} is damaged ({exc})") from None
    if not valid:
        raise AutosaveError(f"the file {name} is damaged (an unexpected header)")
    return header, 8 + length


def read_array(folder: Path, name: str, cache: dict, as_reference: bool = False) -> np.ndarray:
    """The array in file ``name`` (verified against its name), through ``cache``."""
    if name in cache:
        return cache[name]
    if not ARRAY_FILE.fullmatch(name):
        raise AutosaveError(f"it names the file {name[:80]!r}, which is not an autosave array file")
    try:
        raw = (folder / name).read_bytes()
    except OSError as exc:
        raise AutosaveError(f"the file {name} is missing or unreadable ({exc.strerror or exc})") from None
    header, start = _read_header(raw, name)
    dtype, shape = np.dtype(header["dtype"]), tuple(header["shape"])
    size = int(np.prod(shape)) * dtype.itemsize
    try:
        inflate = zlib.decompressobj()
        data = inflate.decompress(raw[start:], size + 1)  # no more than the header promises
        if len(data) != size or not inflate.eof:
            raise ValueError("its length does not match its header")
        if header["filter"] == "shuffle":
            array = _unshuffle(data, dtype).reshape(shape)
        elif header["filter"] == "xor":
            if as_reference:  # a reference is stored plain: no chains, no loops
                raise ValueError("a reference that needs a reference")
            reference = read_array(folder, header["ref"], cache, as_reference=True)
            array = np.bitwise_xor(np.frombuffer(data, dtype).reshape(shape), reference)
        else:
            array = np.frombuffer(data, dtype).reshape(shape).copy()  # writable
    except (ValueError, zlib.error) as exc:
        raise AutosaveError(f"the file {name} is damaged ({exc})") from None
    if array_name(array) != name:
        raise AutosaveError(f"the file {name} is damaged (its content does not match its checksum)")
    cache[name] = array
    return array


class ArrayReader:
    """``load(name, where)`` for schema.read_session; remembers what it handed out, for adopting;
    ``on_read(n)`` hears the bytes of each file read (a restore's progress)."""

    def __init__(self, folder: Path, on_read=None):
        self.folder = folder
        self.cache: dict[str, np.ndarray] = {}
        self.used: list[tuple[np.ndarray, str]] = []
        self.on_read = on_read

    def __call__(self, name: str, where: str) -> np.ndarray:
        fresh = name not in self.cache
        array = read_array(self.folder, name, self.cache)
        if fresh and self.on_read is not None:
            self.on_read((self.folder / name).stat().st_size)
        # Equal content (the base and the photo, two empty layers) is one file but must be
        # separate arrays again: the document paints into some of them in place.
        if any(a is array for a, _ in self.used):
            array = array.copy()
        self.used.append((array, name))
        return array

    def names(self) -> dict:
        """id(array) -> (weakref, file name) of every array handed out: content already on disk."""
        return {id(a): (weakref.ref(a), name) for a, name in self.used}


def clean(folder: Path, names) -> None:
    """Delete array files the manifest does not need (an XOR file needs its reference) and the
    half-written files a killed writer left behind."""
    needed = set(names)
    for name in list(needed):
        try:
            with open(folder / name, "rb") as stream:
                header, _ = _read_header(stream.read(4096), name)
            if header["filter"] == "xor":
                needed.add(header["ref"])
        except (OSError, AutosaveError):
            pass
    for path in folder.iterdir():
        if (path.name.endswith(".arr") and path.name not in needed) or path.name.endswith(".part"):
            path.unlink(missing_ok=True)


# ============================================================================ the manifest


def write_manifest(folder: Path, text: str) -> None:
    """Last of a save, atomically (temporary file, fsync, rename, fsync of the folder): a kill at
    any moment leaves the previous manifest and every file it names intact."""
    atomic_write(folder / MANIFEST, lambda stream: stream.write(text.encode("utf-8")))


def read_manifest(folder: Path) -> dict:
    try:
        with open(folder / MANIFEST, "rb") as stream:
            raw = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise AutosaveError(f"its list of contents cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise AutosaveError(f"its list of contents is over {MAX_MANIFEST_BYTES >> 20} MB")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise AutosaveError("its list of contents is nested too deeply to read") from None
    except ValueError as exc:
        raise AutosaveError(f"its list of contents is damaged ({exc})") from None
    if not isinstance(data, dict):
        raise AutosaveError("its list of contents is damaged (unexpected structure)")
    return data


def lock(folder: Path) -> QLockFile | None:
    lock_file = QLockFile(str(folder / LOCK))
    lock_file.setStaleLockTime(0)  # a live app's lock never goes stale by age; a dead pid frees it
    return lock_file if lock_file.tryLock(0) else None


# ============================================================================ crashed sessions


@dataclass
class SavedSession:
    """A crashed session's autosave, locked for us: its manifest read and its header checked."""

    folder: Path
    manifest: dict = field(repr=False)
    lock: QLockFile | None = None

    def __post_init__(self):
        header = schema.read_header(self.manifest)
        self.saved: float = float(header["saved"])
        self.photo_name: str = header["summary"]["photo"]
        self.entries: int = header["summary"]["entries"]

    def stored_bytes(self) -> int:
        """The size of its array files: what a load reads."""
        return sum(p.stat().st_size for p in self.folder.glob("*.arr"))

    def load(self, on_read=None) -> dict:
        """Every document field and the panel state, arrays loaded and verified; "_names" maps the
        arrays to their files (Autosaver.adopt). ``on_read(n)``: n more bytes were read."""
        reader = ArrayReader(self.folder, on_read)
        state = schema.read_session(self.manifest, reader)
        state["_names"] = reader.names()
        return state

    def release(self) -> None:
        if self.lock is not None:
            self.lock.unlock()
            self.lock = None

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def set_aside(self) -> Path:
        """Rename the folder ``*.damaged`` (never offered again); returns where its files are."""
        self.release()
        return set_aside(self.folder)


def set_aside(folder: Path) -> Path:
    damaged = folder.with_name(folder.name + DAMAGED)
    try:
        os.replace(folder, damaged)
    except OSError:
        return folder
    return damaged


def find_orphans(root: Path | None = None) -> tuple[list[SavedSession], list[str]]:
    """Autosaves of sessions that did not close cleanly, newest first, each locked for us.

    Returns (sessions, problems): one whose manifest cannot be read is set aside and described in
    ``problems``. Nothing that can be offered is deleted here: the user decides about each.
    """
    root = root or autosave_root()
    found: list[SavedSession] = []
    problems: list[str] = []
    if not root.is_dir():
        return found, problems
    now = time.time()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.suffix == DAMAGED:
            if now - folder.stat().st_mtime > DAMAGED_MAX_AGE_DAYS * 86400:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        lock_file = lock(folder)
        if lock_file is None:
            continue  # another running app owns it
        if not (folder / MANIFEST).exists():  # killed before its first complete save: nothing to offer
            shutil.rmtree(folder, ignore_errors=True)
            lock_file.unlock()
            continue
        try:
            found.append(SavedSession(folder, read_manifest(folder), lock_file))
        except AutosaveError as exc:
            lock_file.unlock()
            problems.append(f"The autosaved session in {folder} cannot be restored: {exc}. Its "
                            f"files were kept in {set_aside(folder)}.")
    found.sort(key=lambda s: s.saved, reverse=True)
    return found, problems
