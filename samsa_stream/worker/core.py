"""The worker's state, independent of sockets: streams, their frames and prompts, segmentation, persistence.

Streams and memory:
- A stream comes into being with its first frame (``accept``) or from the state file. Prompts
  never create one: queries (``state``, ``status``) change nothing, a click needs a frame to take
  its reference spectrum from, and undo/remove/reset on an unknown stream change nothing.
- At most ``worker.max_streams`` streams are kept. A frame of a new stream beyond that evicts the
  least recently seen stream (a frame or a prompt change counts as seen), streams without objects
  before streams with objects; the evicted stream's prompts go with it (``streams_evicted``).
- A stream that has seen nothing for ``worker.stream_idle_s`` (0 = never) lets go of its frames
  and the engine's state for it: one without objects is forgotten (``streams_expired``); one with
  objects keeps its prompts, so a paused camera resumes with its objects (``streams_idled``),
  until the cap evicts it. Prompts are small; frames are what cost memory.

Persistence (``worker.state_file``): every prompt change rewrites the prompt state file; a write that
failed (disk full, read-only) is counted (``state_save_failed``), said in the reply's warnings, and
tried again every ``STATE_SAVE_RETRY_S`` until it succeeds (``state_save_retried``; a retry that fails
too counts ``state_save_retries_failed``). Engines with memory worth keeping (SAM2's conditioning
frames and object pointers) have each object's memory saved in
``<state_file>.tracks/<stream>.<object>.track`` after its clicks change (at most every
``worker.track_save_interval_s`` per object, on a later frame when sooner). On start the
prompts are restored first, then each object's memory if its file holds up; a file that does not
(damaged, another model, other clicks) is set aside as ``<name>.bad-<time>`` and counted
(``track_load_failed``), and that object is found from its clicks again.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from ..errors import ProtocolError
from ..protocol import (
    ClickPrompt,
    CubeFrame,
    ObjectMask,
    PromptEvent,
    PromptReply,
    PromptRequest,
    RemovePrompt,
    ResetPrompt,
    SegmentationResult,
    StatePrompt,
    StatusPrompt,
    StreamPrompt,
    UndoPrompt,
    check_stream_id,
    decode_prompt,
    now_ns,
)
from ..runtime import ProcessStats, shorten, write_bytes_atomic, write_json_atomic
from ..settings import Settings
from ..spectral.angles import SpectralError, reference_spectrum
from .engines import Engine, EngineError, ObjectMemory, make_engine
from .prompts import MAX_LABEL, MAX_OBJECT_ID, STATE_VERSION, Click, PromptBook, PromptError, restore_state

log = logging.getLogger(__name__)

MAX_FRAME_JUMP = 1_000_000  # frames; a larger step forward is a camera that jumped or restarted, not drops
MAX_REPLY_TEXT = 1000  # characters of an error or notice text the worker sends
STATUS_BYTES = 256 * 1024  # a status reply above this lists less per stream (see Worker.status)
STATUS_DETAIL = ("clicks", "objects", "counts")
TRACK_SUFFIX = ".track"
MAX_TRACK_FILE = 64 * 2**20  # bytes; a saved SAM2 track at 1024 px is about 6 MiB
STATE_SAVE_RETRY_S = 5.0  # a prompt state that could not be written is tried again this often
MAX_PROMPT_EVENTS = 1024  # handled prompts waiting to go out on the results link
UNCALIBRATED_NOTICE = ("uncalibrated: raw counts scaled to [0, 1] (ingest.raw_counts = scale); "
                       "spectra are not reflectance")


def _empty_state() -> dict[str, Any]:
    """The prompt state of a stream this worker does not hold."""
    return {"objects": [], "revision": 0}


def _bounded(text: str) -> str:
    return shorten(text, MAX_REPLY_TEXT)


@dataclass
class StreamState:
    book: PromptBook = field(default_factory=PromptBook)
    frames: deque[CubeFrame] = field(default_factory=deque)  # recent frames, newest last, for late clicks
    memory: dict[int, ObjectMemory] = field(default_factory=dict)
    last_frame_id: int | None = None
    segmented_frame_id: int | None = None
    dirty: bool = False  # a new frame or changed prompts since the last segmentation
    last_seen: float = 0.0  # clock time of the last frame or prompt change (for eviction and idling)
    segment_started_ns: int | None = None  # wall clock when the last segmentation began (for its latency)
    refresh: bool = False  # the last segmentation re-ran a frame already segmented (a prompt change)
    saved: dict[int, tuple[int, float]] = field(default_factory=dict)  # object -> (memory revision saved, when)

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

    def clear_tracks(self) -> None:
        """The stream restarted or paused: every object is found again on the next frame, from its clicks
        or from what its engine keeps across a restart."""
        for memory in self.memory.values():
            memory.clear_track(restart=True)


class Worker:
    """Prompt state, frame bookkeeping and segmentation, independent of sockets.

    The socket loop calls ``accept`` for each received frame, ``answer`` for each prompt request,
    segments each id of ``dirty_streams()`` and hands each result it sends to ``observe_result``."""

    def __init__(self, settings: Settings, engine: Engine | None = None, stats: ProcessStats | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 intact: Callable[[CubeFrame], bool] | None = None) -> None:
        """``clock`` (seconds, monotonic) times idleness; ``intact`` tells whether a received frame's cube
        is still what it was (the frame link's receiver knows; default: frames that carry their cube are)."""
        self.settings = settings
        self.intact: Callable[[CubeFrame], bool] = intact or (lambda frame: frame.cube_ref is None)
        self.engine = engine or make_engine(settings.worker)
        self.stats = stats or ProcessStats("worker", settings.log.stats_interval_s)
        self.stats.info["engine"] = self.engine.name
        self.clock = clock
        self.streams: dict[str, StreamState] = {}
        self.events: deque[PromptEvent] = deque()  # handled prompts for the results link (``take_events``)
        self.state_file: Path | None = settings.worker.state_file
        self.tracks_dir: Path | None = None
        self._save_failed_at: float | None = None  # clock time of the last failed state write; None once written
        if self.state_file is not None:
            self.tracks_dir = self.state_file.with_name(self.state_file.name + ".tracks")
        self._load_state()
        self._load_tracks()

    # -- prompts -----------------------------------------------------------------------------
    def answer(self, parts: list[Any]) -> PromptReply:
        """The reply to one received prompt request (its parts, without the routing identity).

        Never raises: a request that cannot be decoded is a counted rejection (``prompts_rejected``)
        whose reply echoes the request id whenever it could be read; a fault while applying a
        request is counted (``prompts_failed``) and logged with its traceback."""
        try:
            request = decode_prompt(parts)
        except ProtocolError as exc:
            self.stats.error("prompts_rejected", f"malformed prompt request: {exc}")
            return PromptReply(exc.request_id or 0, False, error=_bounded(f"malformed prompt request: {exc}"))
        except Exception as exc:  # decoding raises only ProtocolError; anything else still costs one request
            log.exception("decoding a prompt request failed")
            self.stats.error("prompts_rejected", f"malformed prompt request: {type(exc).__name__}: {exc}")
            return PromptReply(0, False, error=_bounded(f"malformed prompt request: {type(exc).__name__}"))
        try:
            return self.handle_prompt(request)
        except Exception as exc:  # a fault costs this request, never the worker
            log.exception("prompt %s failed", request.OP)
            self.stats.error("prompts_failed", f"{request.OP}: {type(exc).__name__}: {exc}")
            why = f"internal error: {type(exc).__name__}: {exc}"
            return PromptReply(request.request_id, False, error=_bounded(why))

    def handle_prompt(self, request: PromptRequest) -> PromptReply:
        """Apply one prompt. Queries change nothing; a refused prompt is a reply with ``ok`` false and
        the reason (counted ``prompts_rejected``); a change that could not be saved still applies and
        the reply says so in ``warnings``."""
        if isinstance(request, StatusPrompt):
            return PromptReply(request.request_id, True, state=self.status())
        if not isinstance(request, StreamPrompt):
            return self._reject(request, f"op {request.OP!r} is not served by this worker")
        try:
            check_stream_id(request.stream_id, "prompt: stream")
        except ProtocolError as exc:
            return self._reject(request, str(exc))
        served = self.settings.worker.streams
        if served and request.stream_id not in served:
            return self._reject(request, f"stream {request.stream_id!r} is served by another worker; this one serves "
                                         f"{', '.join(served)} (endpoints.prompts_by_stream says which)")
        stream = self.streams.get(request.stream_id)
        if isinstance(request, StatePrompt):
            return PromptReply(request.request_id, True, state=stream.book.state() if stream else _empty_state())
        # Without a stream, undo/remove/reset run on an empty book: the same answer, nothing kept.
        book = stream.book if stream is not None else PromptBook()
        applied_on = stream.last_frame_id if stream is not None else None
        try:
            if isinstance(request, ClickPrompt):
                applied_on = self._click(stream, request)
            elif isinstance(request, UndoPrompt):
                book.undo(request.object_id)
            elif isinstance(request, RemovePrompt):
                book.remove(request.object_id)
            elif isinstance(request, ResetPrompt):
                book.reset()
            else:
                raise PromptError(f"op {request.OP!r} is not served by this worker")
        except (PromptError, SpectralError) as exc:
            self._event(request, False, str(exc), applied_on, book.revision)
            return self._reject(request, str(exc), book)
        self._event(request, True, None, applied_on, book.revision)
        self.stats.count("prompts_applied")
        if stream is None:  # a reset of a stream never seen: nothing to keep
            return PromptReply(request.request_id, True, state=book.state())
        for oid in [o for o in set(stream.memory) | set(stream.saved) if o not in stream.book.objects]:
            stream.memory.pop(oid, None)  # undone, removed or reset objects take their tracking state with them
            self._drop_track(request.stream_id, stream, oid)
        stream.dirty = True
        stream.last_seen = self.clock()
        unsaved = self._save_state()
        warnings = [f"{request.OP} applied but not saved: {unsaved}"] if unsaved else []
        return PromptReply(request.request_id, True, state=stream.book.state(), warnings=warnings)

    def _event(self, request: StreamPrompt, ok: bool, error: str | None, frame_id: int | None, revision: int) -> None:
        """Queue what came of a prompt for the results link (recorders see the session's clicks there)."""
        if len(self.events) >= MAX_PROMPT_EVENTS:
            self.events.popleft()
            self.stats.count("prompt_events_dropped")
        fields = {k: v for k, v in request.header().items() if v is not None and k not in ("type", "stream")}
        self.events.append(PromptEvent(stream_id=request.stream_id, request=fields, ok=ok,
                                       error=None if error is None else _bounded(error), frame_id=frame_id,
                                       revision=revision, handled_ns=now_ns()))

    def take_events(self) -> list[PromptEvent]:
        """The handled prompts not yet sent, oldest first (and forget them)."""
        out = list(self.events)
        self.events.clear()
        return out

    def _reject(self, request: PromptRequest, why: str, book: PromptBook | None = None) -> PromptReply:
        where = f" on {request.stream_id}" if isinstance(request, StreamPrompt) else ""
        self.stats.error("prompts_rejected", f"{request.OP}{where}: {why}")
        return PromptReply(request.request_id, False, error=_bounded(why),
                           state=book.state() if book is not None else _empty_state())

    def _click(self, stream: StreamState | None, request: ClickPrompt) -> int:
        """Apply a click; the id of the frame it was applied on."""
        oid = request.object_id
        if not isinstance(oid, int) or isinstance(oid, bool) or not 1 <= oid <= MAX_OBJECT_ID:
            raise PromptError(f"object id must be an integer 1..{MAX_OBJECT_ID}, got {oid!r:.40}")
        try:
            x, y = float(request.x), float(request.y)
        except (TypeError, ValueError):
            raise PromptError("click x and y must be numbers") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise PromptError(f"click ({x}, {y}) is not a finite position")
        label = request.label
        if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL):
            raise PromptError(f"label must be text of at most {MAX_LABEL} characters")
        if stream is None:
            raise PromptError("no frame has arrived on this stream yet: nothing to click on")
        frame = stream.frame(request.frame_id, self.intact)
        positive = bool(request.positive)
        reference = reference_spectrum(frame.cube, x, y, self.settings.worker.spectral.reference_radius)
        click = Click(x=x, y=y, positive=positive, frame_id=frame.frame_id, reference=reference,
                      wavelengths_nm=np.asarray(frame.wavelengths_nm, dtype=np.float64))
        stream.book.add_click(oid, click, label)
        memory = stream.memory.setdefault(oid, ObjectMemory())
        if positive and frame is not stream.frames[-1]:
            memory.clear_track()  # re-anchor on the click, not on a mask from before it
        return frame.frame_id

    def status(self) -> dict[str, Any]:
        """Counters, latencies, recent errors and every stream's state, small enough for one reply.

        ``streams_detail`` says how much each stream lists: ``clicks`` (every object with its
        clicks), else ``objects`` (objects with click counts) when that would pass ``STATUS_BYTES``,
        else ``counts`` (numbers of objects and clicks)."""
        now = self.clock()
        out = self.stats.snapshot()
        for detail in STATUS_DETAIL:
            out["streams_detail"] = detail
            out["streams"] = {sid: self._stream_status(s, now, detail) for sid, s in self.streams.items()}
            try:
                if len(msgpack.packb(out)) <= STATUS_BYTES:
                    break
            except (TypeError, ValueError, OverflowError):
                continue
        return out

    @staticmethod
    def _stream_status(stream: StreamState, now: float, detail: str) -> dict[str, Any]:
        book = stream.book
        out: dict[str, Any] = {"last_frame_id": stream.last_frame_id, "frames_kept": len(stream.frames),
                               "idle_s": round(max(0.0, now - stream.last_seen), 1), "revision": book.revision,
                               "object_count": len(book.objects),
                               "click_count": sum(len(o.clicks) for o in book.objects.values())}
        if detail != "counts":
            objects = []
            for oid in sorted(book.objects):
                obj = book.objects[oid]
                entry = obj.summary() if detail == "clicks" else {"id": oid, "label": obj.label,
                                                                   "colour": list(obj.colour)}
                entry["click_count"] = len(obj.clicks)
                objects.append(entry)
            out["objects"] = objects
        return out

    # -- frames ------------------------------------------------------------------------------
    def accept(self, frame: CubeFrame) -> StreamState:
        """Keep a received frame; count the frames the camera sent that this worker never segmented.

        Raises ProtocolError for a stream id that is not one (a decoded frame never has one). A step
        back in frame ids is a camera restart; a step forward of more than ``MAX_FRAME_JUMP`` a jump
        (``frame_id_jumps``), not drops: either way the objects are found again from their clicks."""
        check_stream_id(frame.stream_id, f"frame {frame.frame_id}: stream")
        served = self.settings.worker.streams
        if served and frame.stream_id not in served:
            raise ProtocolError(f"frame {frame.frame_id} of stream {frame.stream_id!r}: this worker serves "
                                f"{', '.join(served)} only (worker.streams)")
        now = self.clock()
        self.expire_idle(now)
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            self._make_room()
            stream = self.streams[frame.stream_id] = StreamState()
        elif stream.last_frame_id is not None:
            gap = frame.frame_id - stream.last_frame_id - 1
            if gap > MAX_FRAME_JUMP:
                self.stats.count("frame_id_jumps")
                log.warning("stream %s jumped from frame %d to %d: treated as a restart, not as drops",
                            frame.stream_id, stream.last_frame_id, frame.frame_id)
                self._restart(stream)
            elif gap > 0:
                self.stats.count("frames_dropped", gap)
            elif gap < 0:
                self.stats.count("stream_restarts")
                log.info("stream %s restarted at frame %d (was %d)", frame.stream_id, frame.frame_id,
                         stream.last_frame_id)
                self._restart(stream)
        stream.last_frame_id = frame.frame_id
        stream.last_seen = now
        stream.frames.append(frame)
        while len(stream.frames) > self.settings.worker.frame_history:
            stream.frames.popleft()
        stream.dirty = True
        return stream

    def _restart(self, stream: StreamState) -> None:
        stream.frames.clear()  # frames of the previous run may share ids with the new one
        stream.clear_tracks()
        if stream.book.mark_stale():  # their frame ids belong to the previous run: never recent again
            self._save_state()

    def _make_room(self) -> None:
        """Evict streams until a new one fits under ``worker.max_streams`` (see the module doc)."""
        while self.streams and len(self.streams) >= self.settings.worker.max_streams:
            victim = min(self.streams, key=lambda sid: (bool(self.streams[sid].book.objects),
                                                        self.streams[sid].last_seen))
            had_objects = bool(self.streams[victim].book.objects)
            self._forget(victim)
            self.stats.count("streams_evicted")
            log.warning("stream %s evicted (worker.max_streams = %d)%s", victim, self.settings.worker.max_streams,
                        " with its objects" if had_objects else "")
            if had_objects:
                self._save_state()

    def _forget(self, stream_id: str) -> None:
        stream = self.streams.pop(stream_id)
        stream.frames.clear()
        for oid in list(stream.saved):
            self._drop_track(stream_id, stream, oid)
        self.engine.forget(stream_id)

    def expire_idle(self, now: float | None = None) -> None:
        """Let go of streams idle for ``worker.stream_idle_s`` (see the module doc)."""
        idle_s = self.settings.worker.stream_idle_s
        if idle_s <= 0:
            return
        now = self.clock() if now is None else now
        for sid in [sid for sid, s in self.streams.items() if now - s.last_seen >= idle_s]:
            stream = self.streams[sid]
            if not stream.book.objects:
                self._forget(sid)
                self.stats.count("streams_expired")
                log.info("stream %s forgotten after %.0f s without frames", sid, idle_s)
            elif stream.frames or stream.dirty:
                stream.frames.clear()
                stream.clear_tracks()
                stream.dirty = False
                self.engine.forget(sid)
                self.stats.count("streams_idled")
                log.info("stream %s idle for %.0f s: frames released, %d object(s) kept", sid, idle_s,
                         len(stream.book.objects))

    def has_dirty(self) -> bool:
        """Whether a stream waits to be segmented (a new frame or changed prompts, and a frame to segment)."""
        return any(s.dirty and s.frames for s in self.streams.values())

    def dirty_streams(self) -> list[str]:
        """Ids of the streams to segment now (a new frame or changed prompts, and a frame to segment),
        as a snapshot: iterating it is safe while prompts and frames are handled in between. A stream
        may be evicted by ``accept`` in between; check ``stream_id in worker.streams`` if frames are
        accepted during the iteration."""
        self.expire_idle()
        self._retry_save()
        self.stats.gauge("streams", len(self.streams))
        self.stats.gauge("objects", sum(len(s.book.objects) for s in self.streams.values()))
        return [sid for sid, s in self.streams.items() if s.dirty and s.frames]

    def _retry_save(self) -> None:
        """Write the prompt state again if the last write failed ``STATE_SAVE_RETRY_S`` ago or more: a disk
        that was full or read-only keeps the objects once it is back, without waiting for a prompt."""
        if self._save_failed_at is None or self.clock() - self._save_failed_at < STATE_SAVE_RETRY_S:
            return
        if self._save_state("state_save_retries_failed") is None:
            self.stats.count("state_save_retried")
            log.info("prompt state written to %s again after a failed write", self.state_file)

    def warm_up(self) -> int:
        """Run ``worker.warmup_frames`` synthetic frames through the engine (before the worker reports ready);
        the number run (``warmup_frames``). A failure is counted (``warmup_failed``) and the worker serves
        anyway: the first real frames then pay what the warm-up would have."""
        wanted = self.settings.worker.warmup_frames
        if wanted <= 0:
            return 0
        try:
            done = self.engine.warm_up(wanted)
        except Exception as exc:  # an optimisation that failed must not keep the worker from serving
            log.exception("warm-up of engine %s failed", self.engine.name)
            self.stats.error("warmup_failed", _bounded(f"warm-up of engine {self.engine.name}: "
                                                       f"{type(exc).__name__}: {exc}"))
            return 0
        if done:
            self.stats.count("warmup_frames", done)
            log.info("engine %s warmed up on %d synthetic frame(s)", self.engine.name, done)
        return done

    def prepare_streams(self, stream_ids: list[str]) -> int:
        """Prepare the newest frames of ``stream_ids`` (those with objects) together, in batches of
        ``worker.batch_streams``, when the engine gains from it (``batch_prepare``); ``segment`` then finds
        each frame prepared. The number of frames prepared together. A failure is counted
        (``batch_prepare_failed``) and leaves each stream to be prepared alone in ``segment``."""
        if not self.engine.batch_prepare or self.settings.worker.batch_streams <= 1:
            return 0
        frames = [s.frames[-1] for sid in stream_ids
                  if (s := self.streams.get(sid)) is not None and s.dirty and s.frames and s.book.objects]
        if len(frames) < 2:
            return 0
        try:
            self.engine.prepare_many(frames)
        except Exception as exc:  # the streams are prepared one by one instead, each fault on its own stream
            log.exception("preparing %d frames together failed", len(frames))
            self.stats.error("batch_prepare_failed", _bounded(f"{len(frames)} frames: {type(exc).__name__}: {exc}"))
            return 0
        self.stats.count("frames_batched", len(frames))
        return len(frames)

    def segment(self, stream_id: str) -> SegmentationResult:
        """Every object's mask on the stream's newest frame (the stream must be one of ``dirty_streams``)."""
        stream = self.streams[stream_id]
        frame = stream.frames[-1]
        started = now_ns()
        stream.refresh = stream.segmented_frame_id == frame.frame_id
        stream.segment_started_ns = started
        if not stream.refresh:
            self._observe_arrival(frame, started)
        objects: list[ObjectMask] = []
        notices = list(self.engine.notices)
        if frame.calibration == "scaled_counts":
            notices.append(UNCALIBRATED_NOTICE)
        elif frame.calibration != "reflectance":
            notices.append(_bounded(f"calibration {frame.calibration!r}: spectra may not be reflectance"))
        if stream.book.objects:
            ctx = self.engine.prepare(frame)
            for oid, obj in sorted(stream.book.objects.items()):
                memory = stream.memory.setdefault(oid, ObjectMemory())
                try:
                    seg = self.engine.segment(ctx, obj, memory)
                except (PromptError, SpectralError) as exc:
                    notices.append(_bounded(f"object {oid}: {exc}"))
                    self.stats.error("objects_failed", f"stream {stream_id} frame {frame.frame_id} object {oid}: {exc}")
                    continue
                objects.append(ObjectMask(oid, obj.label, obj.colour, seg.mask, seg.score, seg.present))
                self._save_track(stream_id, stream, oid, memory)
        stream.dirty = False
        if stream.refresh:
            self.stats.count("prompt_refreshes")  # same frame again after a prompt change
        else:
            self.stats.count("frames_processed")
            stream.segmented_frame_id = frame.frame_id
        return SegmentationResult(stream_id=stream_id, frame_id=frame.frame_id, capture_ns=frame.capture_ns,
                                  rgb=frame.rgb, objects=objects, engine=self.engine.name,
                                  hops=[list(h) for h in frame.hops], notices=notices,
                                  wavelengths_nm=[float(v) for v in frame.wavelengths_nm])

    # -- latency -----------------------------------------------------------------------------
    def _observe_arrival(self, frame: CubeFrame, started_ns: int) -> None:
        """Frame link (ingest_out -> worker_in) and waiting (worker_in -> segmentation start), in ms."""
        hops = {name: ns for name, ns in frame.hops}
        if "ingest_out" in hops and "worker_in" in hops:
            self.stats.observe("frame_link", (hops["worker_in"] - hops["ingest_out"]) / 1e6)
        if "worker_in" in hops:
            self.stats.observe("wait", (started_ns - hops["worker_in"]) / 1e6)

    def observe_result(self, result: SegmentationResult) -> None:
        """Record a sent result's segmentation time (start -> worker_out) and, the first time its frame
        is segmented, capture -> worker_out, in ms. Call it after stamping ``worker_out``."""
        out = next((ns for name, ns in reversed(result.hops) if name == "worker_out"), None)
        stream = self.streams.get(result.stream_id)
        if out is None or stream is None or stream.segment_started_ns is None:
            return
        self.stats.observe("segment", (out - stream.segment_started_ns) / 1e6)
        if not stream.refresh:
            self.stats.observe("capture_to_worker_out", (out - result.capture_ns) / 1e6)
        stream.segment_started_ns = None  # one observation per segmentation

    def close(self) -> None:
        """Let go of every frame, so the frame link can unmap the shared memory their cubes are views of."""
        for stream in self.streams.values():
            stream.frames.clear()

    # -- persistence -------------------------------------------------------------------------
    def _save_state(self, failure: str = "state_save_failed") -> str | None:
        """Write every stream's prompts to the state file; why not (counted as ``failure``), when it could not
        be written."""
        if self.state_file is None:
            return None
        data = {"version": STATE_VERSION,
                "streams": {sid: s.book.to_dict() for sid, s in self.streams.items() if s.book.objects}}
        try:
            write_json_atomic(self.state_file, data)
        except OSError as exc:
            self._save_failed_at = self.clock()
            why = f"cannot write prompt state to {self.state_file}: {exc}"
            self.stats.error(failure, why)
            return why
        self._save_failed_at = None
        return None

    def _load_state(self) -> None:
        """Restore the prompts saved in the state file. A file that is not a valid state file as a whole
        is set aside (``<name>.bad-<time>``) and the worker starts empty (``state_load_failed``); streams
        and objects that do not hold up are dropped and counted (``state_streams_dropped``,
        ``state_objects_dropped``), a copy of the file set aside, and the rest restored."""
        path = self.state_file
        if path is None:
            return
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.stats.error("state_load_failed", f"cannot read prompt state from {path}, starting empty: {exc}")
            return
        try:
            restored = restore_state(json.loads(text), self.settings.worker.max_streams)
        except (ValueError, RecursionError, PromptError) as exc:  # ValueError: bad JSON or encoding
            kept = self._set_aside(path, text, move=True)
            self.stats.error("state_load_failed", _bounded(f"prompt state in {path} is unusable ({exc}); {kept}, "
                                                           "starting empty"))
            return
        for why in restored.dropped_streams:
            self.stats.error("state_streams_dropped", _bounded(f"prompt state in {path}: {why}"))
        for why in restored.dropped_objects:
            self.stats.error("state_objects_dropped", _bounded(f"prompt state in {path}: {why} (dropped)"))
        if restored.dropped_streams or restored.dropped_objects:
            log.warning("prompt state in %s: %s", path, self._set_aside(path, text, move=False))
        now = self.clock()
        for sid, book in restored.books.items():
            self.streams[sid] = StreamState(book=book, last_seen=now)
        log.info("restored prompts of %d stream(s) from %s", len(self.streams), path)

    def _track_path(self, stream_id: str, oid: int) -> Path | None:
        return None if self.tracks_dir is None else self.tracks_dir / f"{stream_id}.{oid}{TRACK_SUFFIX}"

    def _save_track(self, stream_id: str, stream: StreamState, oid: int, memory: ObjectMemory) -> None:
        """Save the object's engine memory when it changed since the last save (see the module doc)."""
        path = self._track_path(stream_id, oid)
        revision = self.engine.memory_revision(memory)
        if path is None or revision is None:
            return
        last = stream.saved.get(oid)
        now = self.clock()
        if last is not None and (last[0] == revision or now - last[1] < self.settings.worker.track_save_interval_s):
            return
        stream.saved[oid] = (revision, now)  # a failure is retried no sooner than a save would be
        try:
            write_bytes_atomic(path, self.engine.save_memory(memory))
        except (EngineError, OSError) as exc:
            stream.saved[oid] = (-1, now)
            self.stats.error("track_save_failed", _bounded(f"memory of object {oid} on {stream_id} not saved: {exc}"))
            return
        self.stats.count("tracks_saved")

    def _drop_track(self, stream_id: str, stream: StreamState, oid: int) -> None:
        """The object is gone: so is its saved memory."""
        stream.saved.pop(oid, None)
        path = self._track_path(stream_id, oid)
        if path is None:
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            self.stats.error("track_save_failed", _bounded(f"saved memory {path} of a removed object stays: {exc}"))

    def _load_tracks(self) -> None:
        """Give each restored object the memory saved for it, where that holds up (see the module doc)."""
        if self.tracks_dir is None or not self.tracks_dir.is_dir():
            return
        restored = 0
        for sid, stream in self.streams.items():
            for oid, obj in stream.book.objects.items():
                path = self._track_path(sid, oid)
                if path is None or not path.is_file():
                    continue
                if not self.engine.keeps_memory:
                    log.info("saved memory in %s is not used: engine %s keeps none", self.tracks_dir, self.engine.name)
                    return
                try:
                    if path.stat().st_size > MAX_TRACK_FILE:
                        raise EngineError(f"{path.stat().st_size} bytes, more than the {MAX_TRACK_FILE} allowed")
                    data = path.read_bytes()
                    memory = ObjectMemory(engine=self.engine.load_memory(data, obj))
                except (EngineError, OSError) as exc:
                    kept = self._set_aside(path, b"", move=True)
                    self.stats.error("track_load_failed", _bounded(f"saved memory of object {oid} on {sid} in "
                                                                   f"{path.name} is unusable ({exc}); {kept}"))
                    continue
                revision = self.engine.memory_revision(memory)
                stream.memory[oid] = memory
                stream.saved[oid] = (revision if revision is not None else -1, self.clock())
                restored += 1
        if restored:
            self.stats.count("tracks_restored", restored)
            log.info("restored the memory of %d object(s) from %s", restored, self.tracks_dir)

    @staticmethod
    def _set_aside(path: Path, text: bytes, move: bool) -> str:
        """Keep the file's content as ``<name>.bad-<time>`` (renamed, or copied when ``move`` is false);
        says where, in words."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = path.with_name(f"{path.name}.bad-{stamp}")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.bad-{stamp}-{n}")
            n += 1
        try:
            if move:
                path.rename(target)
            else:
                target.write_bytes(text)
        except OSError as exc:
            return f"could not be set aside ({exc})"
        return f"set aside as {target.name}"
