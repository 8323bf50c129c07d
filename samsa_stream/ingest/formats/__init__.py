"""Capture file formats. Each reader turns a path into captures; ``open_captures`` picks one.

A reader is registered with the file suffixes it handles. Folders replay every capture
file inside them in name order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ..sources.base import Capture, SourceError
from .npz import read_npz

Reader = Callable[[Path], Iterator[Capture]]
READERS: dict[str, Reader] = {".npz": read_npz}


def reader_for(path: Path) -> Reader:
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise SourceError(f"{path}: no reader for '{suffix}' files (known: {', '.join(sorted(READERS))})")
    return READERS[suffix]


def capture_files(folder: Path) -> list[Path]:
    """Files in ``folder`` that some reader handles, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READERS)


def open_captures(path: str | Path) -> Iterator[Capture | SourceError]:
    """Every capture in a file or a folder of files, in order. A file that cannot be read yields
    its SourceError in its place, so one bad file in a recording does not end the replay."""
    path = Path(path)
    if not path.exists():
        yield SourceError(f"{path}: no such file or folder")
        return
    files = capture_files(path) if path.is_dir() else [path]
    if not files:
        yield SourceError(f"{path}: folder holds no capture files (known: {', '.join(sorted(READERS))})")
    for file in files:
        try:
            yield from reader_for(file)(file)
        except SourceError as exc:
            yield exc
