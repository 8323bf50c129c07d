"""Timed click scripts: the prompts a replay of a capture (or the demo) sends, and on which frames.

A script is a TOML or JSON file with one table array per op (docs/replay.md)::

    [[click]]
    frame = 5            # the frame it is made on (a replay: the frame index; the demo: frames after the first)
    object = 1
    positive = true      # default true
    x = 40               # column and row in image pixels ...
    y = 30
    # object_centre = 0  # ... or the centre of labelled object 0 (label value 1) on that frame
    # at = "background"  # ... or the background pixel farthest from every object
    label = "tumour"     # optional

    [[undo]]             # frame, optional object
    [[remove]]           # frame, object
    [[reset]]            # frame

``frame_fraction = 0.2`` instead of ``frame`` places an entry at that fraction of the run's frames
(the demo's clicks follow its ``--frames``). Positions from labels need the frame's label map
(the phantom's, or a capture that has one). Every mistake is a ScriptError naming the entry.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import CommandError
from ..protocol import ClickPrompt, PromptRequest, RemovePrompt, ResetPrompt, UndoPrompt
from ..protocol.messages import MAX_OBJECT_ID

OPS = ("click", "undo", "remove", "reset")
_FIELDS = {"click": {"frame", "frame_fraction", "object", "positive", "x", "y", "object_centre", "at", "label"},
           "undo": {"frame", "frame_fraction", "object"}, "remove": {"frame", "frame_fraction", "object"},
           "reset": {"frame", "frame_fraction"}}


class ScriptError(CommandError):
    """A click script that cannot be used; the text names the file, the entry and the problem."""


@dataclass(frozen=True)
class ScriptEntry:
    """One scripted prompt. Exactly one way to place a click: ``x``/``y``, ``object_centre`` or ``at``."""

    op: str
    where: str  # "click #2" etc., for messages
    frame: int | None = None
    frame_fraction: float | None = None
    object_id: int | None = None
    positive: bool = True
    x: float | None = None
    y: float | None = None
    object_centre: int | None = None  # labelled object index (0-based; label value index + 1)
    at: str | None = None  # "background"
    label: str | None = None

    def frame_in(self, frames: int) -> int:
        """The frame this entry is made on, in a run of ``frames`` frames."""
        if self.frame is not None:
            return self.frame
        return int(round((self.frame_fraction or 0.0) * frames, 6))  # 0.2 * 35 is 7, not 6.99...

    def action(self) -> str:
        """A short name: ``object 1 positive``, ``undo object 2``, ``reset``."""
        if self.op == "click":
            return f"object {self.object_id} {'positive' if self.positive else 'negative'}"
        return self.op + ("" if self.object_id is None else f" object {self.object_id}")

    def request(self, stream_id: str, frame_id: int,
                position: Callable[[ScriptEntry], tuple[float, float]] | None = None) -> PromptRequest:
        """The prompt request on ``frame_id``; ``position`` places clicks given by ``object_centre`` or ``at``."""
        if self.op == "click":
            assert self.object_id is not None  # checked when parsed
            if self.x is not None and self.y is not None:
                x, y = self.x, self.y
            elif position is None:
                raise ScriptError(f"{self.where}: a click placed by object_centre or at needs a label map "
                                  "(the phantom, or a capture with labels)")
            else:
                x, y = position(self)
            return ClickPrompt(stream_id=stream_id, object_id=self.object_id, x=float(x), y=float(y),
                               positive=self.positive, frame_id=frame_id, label=self.label)
        if self.op == "undo":
            return UndoPrompt(stream_id=stream_id, object_id=self.object_id)
        if self.op == "remove":
            assert self.object_id is not None
            return RemovePrompt(stream_id=stream_id, object_id=self.object_id)
        return ResetPrompt(stream_id=stream_id)


@dataclass(frozen=True)
class ClickScript:
    """The entries of a script, in the order they are sent (by frame, then as written)."""

    entries: tuple[ScriptEntry, ...]
    source: str = ""

    def on_frame(self, frame: int, frames: int) -> list[ScriptEntry]:
        """The entries made on ``frame`` of a run of ``frames`` frames."""
        return [e for e in self.entries if e.frame_in(frames) == frame]

    def ordered(self, frames: int) -> list[ScriptEntry]:
        return sorted(self.entries, key=lambda e: e.frame_in(frames))


def load_script(path: Path) -> ClickScript:
    """Read and check a script (.toml or .json)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"click script {path} cannot be read ({exc})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ScriptError(f"click script {path} is not valid {kind}: {exc}") from None
    return parse_script(data, str(path))


def parse_script(data: Any, source: str = "click script") -> ClickScript:
    """A script from its parsed TOML/JSON data; ScriptError naming the first problem."""
    if not isinstance(data, dict):
        raise ScriptError(f"{source}: expected tables [[click]], [[undo]], [[remove]], [[reset]]")
    unknown = sorted(set(data) - set(OPS))
    if unknown:
        raise ScriptError(f"{source}: unknown section(s) {', '.join(map(repr, unknown))} "
                          f"(expected {', '.join(OPS)})")
    entries: list[tuple[int, int, ScriptEntry]] = []
    order = 0
    for op in OPS:
        items = data.get(op, [])
        if not isinstance(items, list):
            raise ScriptError(f"{source}: {op} must be an array of tables ([[{op}]])")
        for n, item in enumerate(items, 1):
            entry = _entry(op, item, f"{source}: {op} #{n}")
            entries.append((entry.frame if entry.frame is not None else -1, order, entry))
            order += 1
    if not entries:
        raise ScriptError(f"{source}: holds no prompts")
    return ClickScript(tuple(e for _, _, e in entries), source)


def _int(item: dict[str, Any], key: str, where: str, lo: int, hi: int | None = None) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if type(value) is not int or value < lo or (hi is not None and value > hi):
        top = "" if hi is None else f"..{hi}"
        raise ScriptError(f"{where}: {key} must be an integer {lo}{top}, got {value!r}")
    return value


def _entry(op: str, item: Any, where: str) -> ScriptEntry:
    if not isinstance(item, dict):
        raise ScriptError(f"{where}: must be a table of fields, got {item!r:.60}")
    extra = sorted(set(item) - _FIELDS[op])
    if extra:
        raise ScriptError(f"{where}: unknown field(s) {', '.join(extra)} (allowed: {', '.join(sorted(_FIELDS[op]))})")
    frame = _int(item, "frame", where, 0)
    fraction = item.get("frame_fraction")
    if (frame is None) == (fraction is None):
        raise ScriptError(f"{where}: give either frame (a frame index) or frame_fraction (0..1 of the run)")
    if fraction is not None and not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
                                     and 0 <= fraction < 1):
        raise ScriptError(f"{where}: frame_fraction must be a number from 0 up to (not including) 1, got {fraction!r}")
    object_id = _int(item, "object", where, 1, MAX_OBJECT_ID)
    if op in ("click", "remove") and object_id is None:
        raise ScriptError(f"{where}: needs object (the object id, 1 or more)")
    fields: dict[str, Any] = {"op": op, "where": where.rsplit(": ", 1)[-1], "frame": frame,
                              "frame_fraction": None if fraction is None else float(fraction), "object_id": object_id}
    if op == "click":
        positive = item.get("positive", True)
        if not isinstance(positive, bool):
            raise ScriptError(f"{where}: positive must be true or false, got {positive!r}")
        placed = [k for k in (("x", "y"), ("object_centre",), ("at",)) if any(n in item for n in k)]
        if len(placed) != 1:
            raise ScriptError(f"{where}: place the click one way: x and y, object_centre, or at = \"background\"")
        if placed[0] == ("x", "y"):
            for name in ("x", "y"):
                value = item.get(name)
                if not (isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
                        and value >= 0):
                    raise ScriptError(f"{where}: {name} must be a pixel position >= 0 (x the column, y the row), "
                                      f"got {value!r}")
            fields |= {"x": float(item["x"]), "y": float(item["y"])}
        elif placed[0] == ("object_centre",):
            fields["object_centre"] = _int(item, "object_centre", where, 0)
        elif item["at"] != "background":
            raise ScriptError(f"{where}: at must be \"background\", got {item['at']!r}")
        else:
            fields["at"] = "background"
        label = item.get("label")
        if label is not None and not (isinstance(label, str) and len(label) <= 128):
            raise ScriptError(f"{where}: label must be text of at most 128 characters")
        fields |= {"positive": positive, "label": label}
    return ScriptEntry(**fields)


# -- placing clicks from a label map (pure) -------------------------------------------------------

def background_point(labels: np.ndarray) -> tuple[float, float]:
    """(x, y) of the background pixel farthest from every object: a safe negative click."""
    return _deepest(labels == 0, "background", border=False)


def interior_point(labels: np.ndarray, value: int) -> tuple[float, float]:
    """(x, y) of the pixel of label ``value`` farthest from its boundary (the image border included)."""
    return _deepest(labels == value, f"label {value}", border=True)


def _deepest(region: np.ndarray, what: str, border: bool) -> tuple[float, float]:
    if not region.any():
        raise ScriptError(f"{what} is not on this frame's label map: nowhere to click")
    pad = 1 if border else 0
    padded = np.pad(region.astype(np.uint8), pad)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[pad:pad + region.shape[0], pad:pad + region.shape[1]]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(col), float(row)


def label_position(labels: np.ndarray | None) -> Callable[[ScriptEntry], tuple[float, float]] | None:
    """Places ``object_centre`` and ``at`` clicks on a frame with label map ``labels`` (None: cannot)."""
    if labels is None:
        return None

    def place(entry: ScriptEntry) -> tuple[float, float]:
        if entry.at == "background":
            return background_point(labels)
        assert entry.object_centre is not None
        return interior_point(labels, entry.object_centre + 1)

    return place


__all__ = ["OPS", "ClickScript", "ScriptEntry", "ScriptError", "background_point", "interior_point",
           "label_position", "load_script", "parse_script"]
