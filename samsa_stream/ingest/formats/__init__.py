"""Capture file formats. Each reader turns a path into captures; ``open_captures`` picks one.

A reader is registered with the file suffixes it handles (``READERS``). A folder is either one
HELICoiD capture (``raw`` + references) or a recording: every capture file and capture folder
inside it, recursively, in name order. Files that belong to another capture (an ENVI header's
data file, a cube's wavelength or label file) are not captures of their own.

Formats: ENVI (``.hdr``), TIVITA (``.dat``; a ``.dat`` with an ENVI header next to it is ENVI
data), NumPy (``.npy`` with side files, ``.npz``), HELICoiD folders. See docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ..capture import READ_ERRORS, Capture, SourceError
from .envi import data_candidates, read_envi_captures
from .helicoid import is_helicoid_folder, read_helicoid
from .npy import is_sidecar, read_npy
from .npz import read_npz
from .options import ReadOptions
from .tivita import read_tivita

Reader = Callable[[Path, ReadOptions], Iterator[Capture]]


def read_hdr(path: Path, options: ReadOptions) -> Iterator[Capture]:
    """``.hdr``: an ENVI image; ``raw.hdr`` in a HELICoiD capture folder is that folder's capture."""
    if path.name == "raw.hdr" and is_helicoid_folder(path.parent):
        return read_helicoid(path.parent, options)
    return read_envi_captures(path, options)


def read_dat(path: Path, options: ReadOptions) -> Iterator[Capture]:
    """``.dat``: ENVI data when a header of the same stem lies next to it, else a TIVITA cube."""
    for header in (path.with_suffix(".hdr"), path.with_name(path.name + ".hdr")):
        if header.is_file():
            return read_envi_captures(path, options)
    return read_tivita(path, options)


READERS: dict[str, Reader] = {".hdr": read_hdr, ".dat": read_dat, ".npy": read_npy, ".npz": read_npz}


def reader_for(path: Path) -> Reader:
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise SourceError(f"{path}: no reader for '{suffix}' files (known: {', '.join(sorted(READERS))}, "
                          "or a HELICoiD capture folder)")
    return READERS[suffix]


def _is_envi_data(path: Path) -> bool:
    """True for the binary half of an ENVI pair (found from its header), which is read via the header."""
    for header in (path.with_suffix(".hdr"), path.with_name(path.name + ".hdr")):
        if header.is_file() and header != path and path in data_candidates(header):
            return True
    return False


def capture_entries(folder: Path) -> list[Path]:
    """The captures of ``folder`` in name order: itself if it is a HELICoiD capture folder, else every
    capture file (not side or data files) and every sub-folder that holds captures."""
    if is_helicoid_folder(folder):
        return [folder]
    entries: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            if not path.name.startswith(".") and (is_helicoid_folder(path) or capture_entries(path)):
                entries.append(path)
        elif path.suffix.lower() in READERS and not is_sidecar(path) and not _is_envi_data(path):
            entries.append(path)
    return entries


def capture_files(folder: Path) -> list[Path]:
    """Every capture file or HELICoiD capture folder below ``folder``, in name order (depth first)."""
    out: list[Path] = []
    for entry in capture_entries(folder):
        if entry.is_dir() and not is_helicoid_folder(entry):
            out.extend(capture_files(entry))
        else:
            out.append(entry)
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def read_entry(path: Path, options: ReadOptions | None = None) -> Iterator[Capture]:
    """The captures of one file or HELICoiD folder. Any failure to read it, while opening or while
    iterating, is a SourceError naming ``path``."""
    options = options or ReadOptions()
    try:
        if path.is_dir():
            if not is_helicoid_folder(path):
                raise SourceError(f"{path}: not a HELICoiD capture folder (needs raw.hdr with "
                                  "whiteReference.hdr and darkReference.hdr)")
            yield from read_helicoid(path, options)
        else:
            yield from reader_for(path)(path, options)
    except SourceError:
        raise
    except READ_ERRORS as exc:
        raise SourceError(f"{path}: cannot be read ({_describe(exc)})") from exc


def _entries(path: Path) -> list[Path]:
    """The capture files and folders ``path`` stands for; SourceError when there are none to read."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if not path.is_dir():
        return [path]
    try:
        entries = capture_files(path)
    except OSError as exc:  # an unreadable folder: nothing in it can be played
        raise SourceError(f"{path}: cannot be listed ({_describe(exc)})") from exc
    if not entries:
        raise SourceError(f"{path}: folder holds no capture files (known: {', '.join(sorted(READERS))}, "
                          "or HELICoiD capture folders)")
    return entries


def open_captures(path: str | Path, options: ReadOptions | None = None) -> Iterator[Capture | SourceError]:
    """Every capture in a file or a folder, in order. A file that cannot be read yields its
    SourceError in its place (once), so one bad file in a recording does not end the replay."""
    try:
        entries = _entries(Path(path))
    except SourceError as exc:
        yield exc
        return
    for entry in entries:
        try:
            yield from read_entry(entry, options)
        except SourceError as exc:
            yield exc


def read_capture(path: str | Path, index: int, options: ReadOptions | None = None) -> Capture:
    """Capture ``index`` (0-based) of a file or folder, counted as ``open_captures`` yields them (a file
    that cannot be read takes one place). SourceError when that place is a bad file or is out of range
    (the message says how many captures ``path`` holds)."""
    path = Path(path)
    if index < 0:
        raise SourceError(f"{path}: capture index must be >= 0, got {index}")
    held = 0
    for entry in _entries(path):
        try:
            for capture in read_entry(entry, options):
                if held == index:
                    return capture
                held += 1
        except SourceError:
            if held == index:
                raise
            held += 1
    raise SourceError(f"{path}: holds {held} capture(s) (0..{held - 1}); there is no capture {index}")


__all__ = ["READERS", "ReadOptions", "Reader", "capture_files", "open_captures", "read_capture",
           "read_entry", "reader_for"]
