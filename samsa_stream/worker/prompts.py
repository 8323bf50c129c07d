"""Per-stream prompt state: objects, their clicks and the reference spectra taken at each click.

Pure data and transitions, no sockets: the worker applies requests here and persists the
result so prompts survive a worker restart. Saved state is validated when it is read back
(``restore_state``): a file of the wrong shape is refused as a whole, an object that does not
hold up (a reference spectrum that does not match its wavelengths, a coordinate that is not a
number, ...) is dropped on its own and the others kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ProtocolError, SamsaError
from ..protocol import INT64_MAX, check_stream_id
from ..runtime import shorten

# Distinct, colour-blind-friendly overlay colours (RGB), cycled by object id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
    (0, 114, 178), (213, 94, 0), (204, 121, 167), (255, 255, 255),
)
MAX_OBJECTS = 64
MAX_CLICKS_PER_OBJECT = 64
MAX_OBJECT_ID = 2**31 - 1  # as on the wire (protocol.messages)
MAX_LABEL = 128
MAX_REVISION = 2**62  # a restored revision still has room to count up within int64
STATE_VERSION = 1


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
    stale: bool = False  # made before the stream restarted: its frame id belongs to the previous run

    def recent_on(self, frame_id: int, window: int) -> bool:
        """Whether the click was made within ``window`` frames of frame ``frame_id`` of this run."""
        return not self.stale and abs(frame_id - self.frame_id) <= window

    def to_dict(self) -> dict[str, Any]:
        out = {"x": self.x, "y": self.y, "positive": self.positive, "frame_id": self.frame_id,
               "reference": [float(v) for v in self.reference],
               "wavelengths_nm": [float(v) for v in self.wavelengths_nm]}
        if self.stale:
            out["stale"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Click:
        """A saved click, checked: finite coordinates, a finite non-zero reference with one strictly
        increasing, finite, positive wavelength per value. Raises PromptError naming the problem."""
        if not isinstance(data, dict):
            raise PromptError(f"a click must be a map, got {_brief(data)}")
        x, y = _finite(data, "x"), _finite(data, "y")
        positive = data.get("positive")
        if not isinstance(positive, bool):
            raise PromptError(f"click 'positive' must be true or false, got {_brief(positive)}")
        frame_id = data.get("frame_id")
        if type(frame_id) is not int or not 0 <= frame_id <= INT64_MAX:
            raise PromptError(f"click 'frame_id' must be an integer 0..{INT64_MAX}, got {_brief(frame_id)}")
        reference = _finite_vector(data, "reference")
        wavelengths = _finite_vector(data, "wavelengths_nm")
        if reference.shape != wavelengths.shape:
            raise PromptError(f"click reference has {reference.size} values for {wavelengths.size} wavelengths")
        if wavelengths[0] <= 0 or np.any(np.diff(wavelengths) <= 0):
            raise PromptError("click wavelengths must be positive and strictly increasing")
        if not np.any(reference):
            raise PromptError("click reference spectrum is zero: it has no spectral angle")
        reference32 = reference.astype(np.float32)
        if not np.all(np.isfinite(reference32)):
            raise PromptError("click reference spectrum does not fit float32")
        stale = data.get("stale", False)
        if not isinstance(stale, bool):
            raise PromptError(f"click 'stale' must be true or false, got {_brief(stale)}")
        return cls(x=x, y=y, positive=positive, frame_id=frame_id, reference=reference32, wavelengths_nm=wavelengths,
                   stale=stale)

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
        if not 1 <= object_id <= MAX_OBJECT_ID:
            raise PromptError(f"object id must be a positive integer up to {MAX_OBJECT_ID}, got {object_id}")
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

    def mark_stale(self) -> bool:
        """The stream restarted: every click so far was made in its previous run. Whether any changed."""
        changed = False
        for obj in self.objects.values():
            for click in obj.clicks:
                changed = changed or not click.stale
                click.stale = True
        return changed

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
    def from_dict(cls, data: Any) -> PromptBook:
        """A saved book, every object intact; PromptError if anything in it is wrong."""
        book, dropped = cls.restore(data)
        if dropped:
            raise PromptError(f"saved prompt state: {dropped[0]}")
        return book

    @classmethod
    def restore(cls, data: Any) -> tuple[PromptBook, list[str]]:
        """A saved book and why each object that does not hold up was left out.

        Raises PromptError when the book itself has the wrong shape (not a map, ``objects`` or
        ``order`` not lists, a revision that is not a count, an order that does not match the clicks)."""
        if not isinstance(data, dict):
            raise PromptError(f"a stream's prompts must be a map, got {_brief(data)}")
        objects, order, revision = data.get("objects"), data.get("order"), data.get("revision", 0)
        if not isinstance(objects, list) or not isinstance(order, list):
            raise PromptError("a stream's prompts need 'objects' and 'order' lists")
        if not all(type(o) is int for o in order):
            raise PromptError("a stream's click 'order' must hold object ids (integers)")
        if type(revision) is not int or not 0 <= revision <= MAX_REVISION:
            raise PromptError(f"a stream's 'revision' must be an integer 0..{MAX_REVISION}, got {_brief(revision)}")
        book = cls()
        dropped: list[str] = []
        for i, entry in enumerate(objects):
            try:
                obj = _restore_object(entry)
            except PromptError as exc:
                dropped.append(f"object #{i}: {exc}")
                continue
            if obj.object_id in book.objects:
                dropped.append(f"object #{i}: id {obj.object_id} appears twice")
            elif len(book.objects) >= MAX_OBJECTS:
                dropped.append(f"object #{i}: more than {MAX_OBJECTS} objects")
            else:
                book.objects[obj.object_id] = obj
        expected = sorted(oid for oid, o in book.objects.items() for _ in o.clicks)
        if dropped:  # the dropped objects' clicks go with them; undo order falls back to object by object
            order = [o for o in order if o in book.objects]
            if sorted(order) != expected:
                order = [oid for oid, o in book.objects.items() for _ in o.clicks]
        elif sorted(order) != expected:
            raise PromptError("saved prompt state is inconsistent: click order does not match the clicks")
        book._order = order
        book.revision = revision
        return book, dropped


@dataclass
class RestoredState:
    """Prompt books read back from a state file, and why each left-out stream or object was dropped."""

    books: dict[str, PromptBook] = field(default_factory=dict)
    dropped_streams: list[str] = field(default_factory=list)
    dropped_objects: list[str] = field(default_factory=list)


def restore_state(data: Any, max_streams: int) -> RestoredState:
    """Validate a whole state file (``PromptBook`` per stream under ``streams``).

    Raises PromptError when the file has the wrong shape (not a map, wrong ``version``,
    ``streams`` not a map, a stream entry of the wrong shape): the caller sets the file aside.
    A stream whose id is not one, or beyond ``max_streams``, is dropped with its objects;
    an object that does not hold up is dropped alone."""
    if not isinstance(data, dict):
        raise PromptError(f"the state file must hold a map, got {_brief(data)}")
    if data.get("version") != STATE_VERSION:
        raise PromptError(f"the state file's 'version' must be {STATE_VERSION}, got {_brief(data.get('version'))}")
    streams = data.get("streams")
    if not isinstance(streams, dict):
        raise PromptError(f"the state file's 'streams' must be a map of stream id to prompts, got {_brief(streams)}")
    out = RestoredState()
    for sid, saved in streams.items():
        book, dropped = PromptBook.restore(saved)  # a malformed entry refuses the whole file
        try:
            check_stream_id(sid)
        except ProtocolError as exc:
            out.dropped_streams.append(f"{exc}; its {len(book.objects)} object(s) are dropped")
            continue
        if len(out.books) >= max_streams:
            out.dropped_streams.append(f"stream {sid!r}: more than worker.max_streams = {max_streams} streams")
            continue
        out.dropped_objects += [f"stream {sid!r} {why}" for why in dropped]
        if book.objects:
            out.books[sid] = book
    return out


def _restore_object(data: Any) -> TrackedObject:
    if not isinstance(data, dict):
        raise PromptError(f"must be a map, got {_brief(data)}")
    oid, label, clicks = data.get("id"), data.get("label"), data.get("clicks")
    if type(oid) is not int or not 1 <= oid <= MAX_OBJECT_ID:
        raise PromptError(f"'id' must be an integer 1..{MAX_OBJECT_ID}, got {_brief(oid)}")
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise PromptError(f"object {oid}: 'label' must be text of at most {MAX_LABEL} characters")
    if not isinstance(clicks, list) or not 1 <= len(clicks) <= MAX_CLICKS_PER_OBJECT:
        raise PromptError(f"object {oid}: 'clicks' must be a list of 1..{MAX_CLICKS_PER_OBJECT} clicks")
    try:
        restored = [Click.from_dict(c) for c in clicks]
    except PromptError as exc:
        raise PromptError(f"object {oid}: {exc}") from None
    if not any(c.positive for c in restored):
        raise PromptError(f"object {oid} has no positive click")
    return TrackedObject(oid, label, colour_for(oid), restored)


def _brief(value: Any) -> str:
    """A bounded description of a bad value for a message."""
    return shorten(repr(value), 60)


def _as_finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (not a number, bool, NaN, infinite, an int beyond float range)."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _finite(data: dict[str, Any], name: str) -> float:
    number = _as_finite(data.get(name))
    if number is None:
        raise PromptError(f"click {name!r} must be a finite number, got {_brief(data.get(name))}")
    return number


def _finite_vector(data: dict[str, Any], name: str) -> np.ndarray:
    values = data.get(name)
    if not isinstance(values, list) or not values:
        raise PromptError(f"click {name!r} must be a non-empty list of numbers")
    numbers = [_as_finite(v) for v in values]
    if any(n is None for n in numbers):
        raise PromptError(f"click {name!r} holds a value that is not a finite number")
    return np.asarray(numbers, dtype=np.float64)
