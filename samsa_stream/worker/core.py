"""The worker's state, independent of sockets: streams, their frames and prompts, segmentation, persistence."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ..protocol import CubeFrame, ObjectMask, PromptReply, PromptRequest, SegmentationResult
from ..runtime import ProcessStats, write_json_atomic
from ..settings import Settings
from ..spectral.angles import SpectralError, reference_spectrum
from ..transport import ShmReader, ShmRef
from .engines import Engine, ObjectMemory, make_engine
from .prompts import Click, PromptBook, PromptError

log = logging.getLogger(__name__)


@dataclass
class StreamState:
    book: PromptBook = field(default_factory=PromptBook)
    frames: deque[CubeFrame] = field(default_factory=deque)  # recent frames, newest last, for late clicks
    memory: dict[int, ObjectMemory] = field(default_factory=dict)
    last_frame_id: int | None = None
    segmented_frame_id: int | None = None
    dirty: bool = False  # a new frame or changed prompts since the last segmentation

    def frame(self, frame_id: int | None, intact: Callable[[CubeFrame], bool]) -> CubeFrame:
        """The frame a click was made on (the newest if not given or no longer kept intact)."""
        if not self.frames:
            raise PromptError("no frame has arrived on this stream yet: nothing to click on")
        if frame_id is not None:
            for frame in reversed(self.frames):
                if frame.frame_id == frame_id and intact(frame):
                    return frame
        if not intact(self.frames[-1]):
            raise PromptError("the newest frame was overwritten in shared memory; click again")
        return self.frames[-1]


class Worker:
    """Prompt state, frame bookkeeping and segmentation, independent of sockets."""

    def __init__(self, settings: Settings, engine: Engine | None = None, stats: ProcessStats | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.worker)
        self.stats = stats or ProcessStats("worker", settings.log.stats_interval_s)
        self.stats.info["engine"] = self.engine.name
        self.streams: dict[str, StreamState] = {}
        self.shm = ShmReader()
        self.state_file: Path | None = settings.worker.state_file
        self._load_state()

    # -- prompts -----------------------------------------------------------------------------
    def handle_prompt(self, request: PromptRequest) -> PromptReply:
        if request.op == "status":  # a query creates no stream
            return PromptReply(request.request_id, True, state=self.status())
        stream = self.streams.setdefault(request.stream_id, StreamState())
        try:
            if request.op == "click":
                self._click(stream, request)
            elif request.op == "undo":
                stream.book.undo(request.object_id)
            elif request.op == "remove":
                stream.book.remove(request.object_id)  # type: ignore[arg-type]
                stream.memory.pop(request.object_id, None)  # type: ignore[arg-type]
            elif request.op == "reset":
                stream.book.reset()
                stream.memory.clear()
        except (PromptError, SpectralError) as exc:
            self.stats.error("prompts_rejected", f"{request.op} on {request.stream_id}: {exc}")
            return PromptReply(request.request_id, False, error=str(exc), state=stream.book.state())
        if request.op in ("click", "undo", "remove", "reset"):
            self.stats.count("prompts_applied")
            stream.dirty = True
            self._save_state()
        return PromptReply(request.request_id, True, state=stream.book.state())

    def _click(self, stream: StreamState, request: PromptRequest) -> None:
        frame = stream.frame(request.frame_id, self.intact)
        x, y = float(request.x), float(request.y)  # type: ignore[arg-type]
        reference = reference_spectrum(frame.cube, x, y, self.settings.worker.spectral.reference_radius)
        click = Click(x=x, y=y, positive=request.positive, frame_id=frame.frame_id,
                      reference=reference, wavelengths_nm=np.asarray(frame.wavelengths_nm, dtype=np.float64))
        stream.book.add_click(int(request.object_id), click, request.label)  # type: ignore[arg-type]
        memory = stream.memory.setdefault(int(request.object_id), ObjectMemory())  # type: ignore[arg-type]
        if request.positive and frame is not stream.frames[-1]:
            memory.last_mask = None  # re-anchor on the click, not on a mask from before it

    def intact(self, frame: CubeFrame) -> bool:
        """Whether a frame's cube is still what it was (a shared-memory slot may have been reused)."""
        return frame.cube_ref is None or self.shm.valid(ShmRef.from_header(frame.cube_ref))

    def decode_frame(self, parts: list[Any]) -> CubeFrame:
        """A received frame (without its topic part), its cube mapped from shared memory if it lies there."""
        return CubeFrame.from_parts(parts, lambda ref: self.shm.view(ShmRef.from_header(ref)))

    def status(self) -> dict[str, Any]:
        return {**self.stats.snapshot(),
                "streams": {sid: {"last_frame_id": s.last_frame_id, **s.book.state()} for sid, s in self.streams.items()}}

    # -- frames ------------------------------------------------------------------------------
    def accept(self, frame: CubeFrame) -> StreamState:
        """Keep a received frame; count the frames the camera sent that this worker never segmented."""
        stream = self.streams.setdefault(frame.stream_id, StreamState())
        if stream.last_frame_id is not None:
            gap = frame.frame_id - stream.last_frame_id - 1
            if gap > 0:
                self.stats.count("frames_dropped", gap)
            elif frame.frame_id <= stream.last_frame_id:
                log.info("stream %s restarted at frame %d (was %d)", frame.stream_id, frame.frame_id, stream.last_frame_id)
                for memory in stream.memory.values():
                    memory.last_mask = None
        stream.last_frame_id = frame.frame_id
        stream.frames.append(frame)
        while len(stream.frames) > self.settings.worker.frame_history:
            stream.frames.popleft()
        stream.dirty = True
        return stream

    def segment(self, stream_id: str) -> SegmentationResult:
        """Every object's mask on the stream's newest frame."""
        stream = self.streams[stream_id]
        frame = stream.frames[-1]
        objects: list[ObjectMask] = []
        notices = list(self.engine.notices)
        if stream.book.objects:
            ctx = self.engine.prepare(frame)
            for oid, obj in sorted(stream.book.objects.items()):
                memory = stream.memory.setdefault(oid, ObjectMemory())
                try:
                    seg = self.engine.segment(ctx, obj, memory)
                except (PromptError, SpectralError) as exc:
                    notices.append(f"object {oid}: {exc}")
                    self.stats.error("objects_failed", f"stream {stream_id} frame {frame.frame_id} object {oid}: {exc}")
                    continue
                objects.append(ObjectMask(oid, obj.label, obj.colour, seg.mask, seg.score))
        stream.dirty = False
        if stream.segmented_frame_id == frame.frame_id:
            self.stats.count("prompt_refreshes")  # same frame again after a prompt change
        else:
            self.stats.count("frames_processed")
            stream.segmented_frame_id = frame.frame_id
        return SegmentationResult(stream_id=stream_id, frame_id=frame.frame_id, capture_ns=frame.capture_ns,
                                  rgb=frame.rgb, objects=objects, engine=self.engine.name,
                                  hops=[list(h) for h in frame.hops], notices=notices)

    def close(self) -> None:
        """Let go of every frame, then of the shared-memory rings their cubes were views of."""
        for stream in self.streams.values():
            stream.frames.clear()
        self.shm.close()

    # -- persistence -------------------------------------------------------------------------
    def _save_state(self) -> None:
        if self.state_file is None:
            return
        data = {"version": 1, "streams": {sid: s.book.to_dict() for sid, s in self.streams.items() if s.book.objects}}
        try:
            write_json_atomic(self.state_file, data)
        except OSError as exc:
            self.stats.error("state_save_failed", f"cannot save prompt state to {self.state_file}: {exc}")

    def _load_state(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            data = json.loads(self.state_file.read_text())
            for sid, book in data.get("streams", {}).items():
                self.streams[sid] = StreamState(book=PromptBook.from_dict(book))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.streams.clear()
            self.stats.error("state_load_failed", f"prompt state in {self.state_file} is unreadable, starting empty: {exc}")
            return
        log.info("restored prompts of %d stream(s) from %s", len(self.streams), self.state_file)
