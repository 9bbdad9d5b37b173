"""The files a run reads and writes besides the photo: the user's mask, result names, the export,
and the check that no write replaces an input or another write (shared by `edit` and `batch`)."""

from __future__ import annotations

from pathlib import Path


def load_mask(path: Path, photo_size: tuple[int, int], label: str = "--mask"):
    """A greyscale mask file as a float mask at ``photo_size``; InputError naming ``label``
    (engine.imaging.load_mask: the size is read from the header, a bomb is never decoded)."""
    from engine import imaging
    from engine.errors import InputError

    try:
        return imaging.load_mask(path, photo_size)
    except InputError as exc:
        raise InputError(f"{label}: {exc}") from None


def output_names(output: Path, count: int) -> list[Path]:
    """Where a run with ``count`` results writes them: OUT itself; with several, OUT (the best)
    and OUT-1..OUT-N beside it (every one, in order), so OUT always exists after a run."""
    if count == 1:
        return [output]
    return [output, *(output.with_name(f"{output.stem}-{i + 1}{output.suffix}") for i in range(count))]


def best_first(results: list) -> list:
    """The results in output_names' order: the best (ranked first, else the first seed) as OUT,
    then every one."""
    return [results[0], *results] if len(results) > 1 else list(results)


def export(path: Path, photo, result, margins: tuple[int, int, int, int], strip_gps: bool) -> None:
    """Save with the photo's alpha, EXIF, XMP, DPI and profile; a result on a larger canvas (an
    extended one: ``margins`` left, right, top, bottom, from MethodInfo.canvas_margins) keeps
    them too, its new area in the photo's colour space."""
    from engine import imaging

    if result.image.shape != photo.rgb.shape:
        photo = imaging.extended_photo(photo, result.image, (margins[0], margins[2]))
    imaging.export_photo(path, photo, result.image, metadata=result.metadata(),
                         strip_gps=strip_gps)


def check_writes(writes: list[tuple[str, Path, bool]], inputs: dict[str, Path | None], *,
                 overwritable: tuple[str, str] | None = None, overwrite: bool = False) -> None:
    """Every file a command will write, checked before any work: its folder exists and can be
    written, its name fits the file system, images have a known suffix, none is an input and no
    two are the same file.

    ``writes``: (label, path, is_image) with the label the message names (a flag, a manifest
    line); ``inputs``: description -> path of every file read. The one (write label, input
    description) pair in ``overwritable`` may coincide when ``overwrite`` is set (edit's -o
    replacing its photo with --overwrite); the message otherwise says so.
    """
    from engine.errors import InputError
    from engine.imaging import SAVE_FORMATS, writable_problem

    read: dict[Path, str] = {}
    for what, source in inputs.items():
        if source is not None and source.exists():
            read.setdefault(source.resolve(), what)
    seen: dict[Path, str] = {}
    folders: set[Path] = set()
    for label, path, is_image in writes:
        if path.parent not in folders:
            if not path.parent.is_dir():
                raise InputError(f"{label} {path}: the folder {path.parent} does not exist")
            folders.add(path.parent)
        problem = writable_problem(path)  # first: a name too long fails every other look at it
        if problem:
            raise InputError(f"{label} {path}: {problem}")
        if path.is_dir():
            raise InputError(f"{label} {path} is a folder; give a file name")
        if is_image and path.suffix.lower() not in SAVE_FORMATS:
            raise InputError(f"{label} {path}: unknown image type {path.suffix or '(none)'!r}; "
                             f"use one of {', '.join(SAVE_FORMATS)}")
        resolved = path.resolve()
        what = read.get(resolved)
        if what is not None and not (overwrite and (label, what) == overwritable):
            hint = " or pass --overwrite" if (label, what) == overwritable else ""
            raise InputError(f"{label} {path} is {what}; pick another name{hint}")
        if resolved in seen:
            raise InputError(f"{label} and {seen[resolved]} both name {path}; give each its own file")
        seen[resolved] = label
