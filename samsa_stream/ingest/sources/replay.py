"""Replays a recorded capture file or folder through the same pipeline as a live camera."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..capture import Capture, SourceError
from ..formats import ReadOptions, open_captures
from .base import Source


class ReplaySource(Source):
    name = "replay"

    def __init__(self, path: str | Path, loop: bool = False, options: ReadOptions | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"replay source {self.path}: no such file or folder")
        self.loop = loop
        self.options = options or ReadOptions()

    def captures(self) -> Iterator[Capture | SourceError]:
        while True:
            good = 0
            for capture in open_captures(self.path, self.options):
                good += not isinstance(capture, SourceError)
                yield capture
            if not self.loop or good == 0:
                return

    def describe(self) -> dict[str, object]:
        return {"source": "replay", "path": str(self.path), "loop": self.loop}
