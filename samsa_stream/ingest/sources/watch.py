"""Watches a folder for new captures, e.g. a push-broom camera writing a file every few seconds.

Each new capture file (or HELICoiD capture folder) is read once it is complete: its size and
modification time (for ENVI, the header's and the data file's; for a folder, every file's) have
not changed for ``settle_s``. Captures are read in name order; one that cannot be read is
yielded as its SourceError and the watch goes on. Captures present at start are skipped
unless ``existing`` is set. The watch ends only when ``stop`` is set (or ``close()`` is called).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..capture import Capture, SourceError
from ..formats import ReadOptions, capture_files, read_entry
from ..formats.envi import data_candidates
from .base import Source

Signature = tuple[tuple[str, int, int], ...]


def _stat(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return path.name, st.st_size, st.st_mtime_ns


def capture_signature(entry: Path) -> Signature | None:
    """What changes while ``entry`` is still being written; None when it is not complete yet (an ENVI
    header whose data file has not appeared) or has vanished."""
    try:
        if entry.is_dir():
            return tuple(_stat(p) for p in sorted(entry.iterdir()) if p.is_file())
        if entry.suffix.lower() == ".hdr":
            data = next((p for p in data_candidates(entry) if p.is_file() and p != entry), None)
            return None if data is None else (_stat(entry), _stat(data))
        return (_stat(entry),)
    except FileNotFoundError:
        return None


class WatchFolderSource(Source):
    """Yields the captures of every complete new file in ``folder`` as it appears."""

    name = "watch"

    def __init__(self, folder: str | Path, options: ReadOptions | None = None, poll_s: float = 0.5,
                 settle_s: float = 1.0, existing: bool = False, stop: threading.Event | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"watch source {self.folder}: not a folder")
        self.options = options or ReadOptions()
        self.poll_s, self.settle_s, self.existing = poll_s, settle_s, existing
        self.stop = stop or threading.Event()

    def _entries(self) -> list[Path]:
        try:
            return capture_files(self.folder)
        except OSError:  # the folder may be mid-rename or on a flaky share; try again next poll
            return []

    def captures(self) -> Iterator[Capture | SourceError]:
        done: set[Path] = set() if self.existing else set(self._entries())
        pending: dict[Path, tuple[Signature, float]] = {}
        while not self.stop.is_set():
            now = time.monotonic()
            ready: list[Path] = []
            for entry in self._entries():
                if entry in done:
                    continue
                signature = capture_signature(entry)
                if signature is None:
                    pending.pop(entry, None)
                    continue
                seen = pending.get(entry)
                if seen is None or seen[0] != signature:
                    pending[entry] = (signature, now)  # new or still growing: start (again) waiting
                elif now - seen[1] >= self.settle_s:
                    ready.append(entry)
            for entry in ready:
                done.add(entry)
                pending.pop(entry, None)
                try:
                    yield from read_entry(entry, self.options)
                except SourceError as exc:
                    yield exc
                if self.stop.is_set():
                    return
            if not ready:
                self.stop.wait(self.poll_s)

    def close(self) -> None:
        self.stop.set()

    def describe(self) -> dict[str, object]:
        return {"source": "watch", "path": str(self.folder), "settle_s": self.settle_s, "existing": self.existing}
