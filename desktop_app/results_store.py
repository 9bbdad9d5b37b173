"""History results within a memory budget: the newest stay in memory, older ones move to disk.

At 12 MP one result holds about 84 MB (the picture and its float mask), so a long session grew
without end (3.2 GB at 60 results). Beyond the budget the oldest results' arrays are written to
a private temporary folder and read back through read-only memory maps: the OS pages them in
when a result is shown and drops them again when memory is short. The folder goes with the app.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

MB = 1024**2
DEFAULT_BUDGET_MB = 1024  # about 12 results of a 12 MP photo
ARRAYS = ("image", "mask", "heatmap")  # the large arrays of a HistoryEntry


def resident_bytes(entry) -> int:
    """Bytes of ``entry``'s large arrays held in memory (a memory map holds none of its own)."""
    return sum(array.nbytes for array in (getattr(entry, name, None) for name in ARRAYS)
               if array is not None and not isinstance(array, np.memmap))


class ResultStore:
    """Keeps the results of one window within ``budget`` bytes of memory (see the module text)."""

    def __init__(self, budget: int = DEFAULT_BUDGET_MB * MB, root: Path | None = None) -> None:
        self.budget = int(budget)
        self._root = root  # where the temporary folder is made; None: the system's
        self._folder: Path | None = None
        self._names = itertools.count()

    def fit(self, entries: list) -> int:
        """Move the oldest entries' arrays to disk while the ones in memory exceed the budget;
        the newest entry always stays. Returns how many entries moved."""
        total = sum(resident_bytes(e) for e in entries)
        moved = 0
        for entry in entries[:-1]:
            if total <= self.budget:
                break
            size = resident_bytes(entry)
            if not size:
                continue
            try:
                self._spill(entry)
            except OSError:
                break  # a full or read-only disk: keep them in memory rather than lose them
            total -= size
            moved += 1
        return moved

    def _spill(self, entry) -> None:
        folder = self._ensure_folder()
        for name in ARRAYS:
            array = getattr(entry, name, None)
            if array is None or isinstance(array, np.memmap):
                continue
            path = folder / f"{next(self._names)}.npy"
            np.save(path, np.ascontiguousarray(array))
            setattr(entry, name, np.load(path, mmap_mode="r"))

    def _ensure_folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="diffedit-history-", dir=self._root))
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        return self._folder
