"""Per-stream prompt state: objects, their clicks and the reference spectra taken at each click.

Pure data and transitions, no sockets: the worker loop applies requests here and persists
the result so prompts survive a worker restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ..errors import SamsaError

# Distinct, colour-blind-friendly overlay colours (RGB), cycled by object id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
    (0, 114, 178), (213, 94, 0), (204, 121, 167), (255, 255, 255),
)
MAX_OBJECTS = 64
MAX_CLICKS_PER_OBJECT = 64


class PromptError(SamsaError, ValueError):
    """A prompt that cannot be applied (unknown object, click outside the image, ...)."""


def colour_for(object_id: int) -> tuple[int, int, int]:
    return PALETTE[(object_id - 1) % len(PALETTE)]


@dataclass
class Click:
    x: float  # column, original image pixels
    y: float  # row
    positive: bool
    frame_id: int
    reference: np.ndarray  # (B,) float32 mean spectrum around the click
    wavelengths_nm: np.ndarray  # (B,) the reference's wavelengths, to resample for another camera

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "positive": self.positive, "frame_id": self.frame_id,
                "reference": [float(v) for v in self.reference],
                "wavelengths_nm": [float(v) for v in self.wavelengths_nm]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Click":
        return cls(x=float(data["x"]), y=float(data["y"]), positive=bool(data["positive"]),
                   frame_id=int(data["frame_id"]), reference=np.asarray(data["reference"], dtype=np.float32),
                   wavelengths_nm=np.asarray(data["wavelengths_nm"], dtype=np.float64))

    def reference_on(self, wavelengths_nm: np.ndarray) -> np.ndarray:
        """This click's reference spectrum sampled on another band set (identity when they match)."""
        if self.wavelengths_nm.shape == wavelengths_nm.shape and np.allclose(self.wavelengths_nm, wavelengths_nm):
            return self.reference
        lo, hi = self.wavelengths_nm[0], self.wavelengths_nm[-1]
        if wavelengths_nm[-1] < lo or wavelengths_nm[0] > hi:
            raise PromptError(f"click reference covers {lo:g}-{hi:g} nm; the frame's bands "
                              f"({wavelengths_nm[0]:g}-{wavelengths_nm[-1]:g} nm) do not overlap it")
        return np.interp(wavelengths_nm, self.wavelengths_nm, self.reference).astype(np.float32)


@dataclass
class TrackedObject:
    object_id: int
    label: str
    colour: tuple[int, int, int]
    clicks: list[Click] = field(default_factory=list)

    @property
    def positives(self) -> list[Click]:
        return [c for c in self.clicks if c.positive]

    @property
    def negatives(self) -> list[Click]:
        return [c for c in self.clicks if not c.positive]

    def summary(self) -> dict[str, Any]:
        return {"id": self.object_id, "label": self.label, "colour": list(self.colour),
                "clicks": [{"x": c.x, "y": c.y, "positive": c.positive, "frame_id": c.frame_id} for c in self.clicks]}


class PromptBook:
    """The objects of one stream and the order their clicks came in (for undo)."""

    def __init__(self) -> None:
        self.objects: dict[int, TrackedObject] = {}
        self._order: list[int] = []  # object id of each click, oldest first
        self.revision = 0  # bumped on every change, so engines can tell a new prompt from a new frame

    def add_click(self, object_id: int, click: Click, label: str | None = None) -> TrackedObject:
        if object_id < 1:
            raise PromptError(f"object id must be a positive integer, got {object_id}")
        obj = self.objects.get(object_id)
        if obj is None:
            if len(self.objects) >= MAX_OBJECTS:
                raise PromptError(f"a stream holds at most {MAX_OBJECTS} objects")
            if not click.positive:
                raise PromptError(f"object {object_id} does not exist yet: its first click must be positive")
            obj = TrackedObject(object_id, label or f"object {object_id}", colour_for(object_id))
            self.objects[object_id] = obj
        elif len(obj.clicks) >= MAX_CLICKS_PER_OBJECT:
            raise PromptError(f"object {object_id} already has {MAX_CLICKS_PER_OBJECT} clicks; undo or reset it")
        if label:
            obj.label = label
        obj.clicks.append(click)
        self._order.append(object_id)
        self.revision += 1
        return obj

    def undo(self, object_id: int | None = None) -> None:
        """Remove the last click (of ``object_id`` if given); an object left without clicks is removed."""
        if object_id is not None and object_id not in self.objects:
            raise PromptError(f"unknown object {object_id} (known: {sorted(self.objects) or 'none'})")
        for i in range(len(self._order) - 1, -1, -1):
            if object_id is None or self._order[i] == object_id:
                target = self._order.pop(i)
                obj = self.objects[target]
                obj.clicks.pop()
                if not obj.positives:  # negatives alone describe nothing
                    self._drop(target)
                self.revision += 1
                return
        raise PromptError("nothing to undo")

    def remove(self, object_id: int) -> None:
        if object_id not in self.objects:
            raise PromptError(f"unknown object {object_id} (known: {sorted(self.objects) or 'none'})")
        self._drop(object_id)
        self.revision += 1

    def reset(self) -> None:
        self.objects.clear()
        self._order.clear()
        self.revision += 1

    def _drop(self, object_id: int) -> None:
        del self.objects[object_id]
        self._order = [o for o in self._order if o != object_id]

    def state(self) -> dict[str, Any]:
        return {"objects": [self.objects[k].summary() for k in sorted(self.objects)], "revision": self.revision}

    def to_dict(self) -> dict[str, Any]:
        return {"order": self._order, "revision": self.revision,
                "objects": [{"id": o.object_id, "label": o.label, "clicks": [c.to_dict() for c in o.clicks]}
                            for o in self.objects.values()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptBook":
        book = cls()
        for obj in data.get("objects", []):
            oid = int(obj["id"])
            book.objects[oid] = TrackedObject(oid, str(obj["label"]), colour_for(oid),
                                              [Click.from_dict(c) for c in obj["clicks"]])
        order = [int(o) for o in data.get("order", [])]
        counts = {oid: len(o.clicks) for oid, o in book.objects.items()}
        if sorted(order) != sorted(oid for oid, n in counts.items() for _ in range(n)):
            raise PromptError("saved prompt state is inconsistent: click order does not match the clicks")
        book._order = order
        book.revision = int(data.get("revision", 0))
        return book
