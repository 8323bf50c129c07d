"""Replaying a session through a node in lockstep, so a deterministic engine reproduces it exactly.

The worker's state depends on the frames it segments and the prompts it applies, in their order.
A live worker segments only the newest frame it has and re-segments it after a prompt (a refresh,
same frame id). The recording shows which: a ``masks`` message of a frame not seen before is a
frame the worker segmented, a second one of the same frame a refresh. So the replay (docs/replay.md):

- walks the recording in log-time order (``plan``);
- for each recorded result of a new frame, sends that frame (the recorded cube, the same frame id)
  and waits until its result is broadcast;
- for each recorded prompt event, sends its prompt again (``PromptEvent.prompt()``: a click on the
  frame it applied on), waits for the reply and for the refresh it causes.

Frames without a recorded cube cannot be sent: they are skipped and counted. A result that does not
come within ``timeout_s`` is counted and the replay goes on. Cubes travel in the frame message (no
shared memory), so a frame the worker keeps for a late click is never overwritten under it.

A capture (any file or folder the ingest reads) replays the same way, with prompts from a click
script (``script``) sent after the result of the frame they are made on.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..display.console import PromptConsole, PromptTimeout
from ..display.subscriber import Subscriber, Update
from ..errors import CommandError, ProtocolError
from ..node import LocalNode, wait_until
from ..protocol import CubeFrame, MaskBroadcast, PromptEvent, PromptReply, PromptRequest, StreamPrompt, now_ns
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import FrameSender, SocketFactory, SocketFrameLink
from .check import Comparison
from .reader import Entry, Recording, has_cube
from .script import ClickScript, label_position

log = logging.getLogger(__name__)

RETRY_S = 1.0  # a result this late: ask the worker whether the frame arrived, look in the publisher's cache
DEFAULT_TIMEOUT_S = 30.0
WARMUP_STREAM = "replay-warmup"  # the stream of the frames that check the node's links before the replay starts


def _warmup_frame(frame_id: int) -> CubeFrame:
    cube = np.full((8, 8, 4), 0.5, np.float32)
    return CubeFrame(WARMUP_STREAM, frame_id, now_ns(), cube, np.array([500.0, 600.0, 700.0, 800.0]),
                     np.full((8, 8, 3), 128, np.uint8))


# -- the plan: what the recording says happened, in order -----------------------------------------

@dataclass
class FrameStep:
    """A frame the worker segmented live (its first result), with the recorded result."""

    stream: str
    frame_id: int
    capture_ns: int | None  # from the recorded frame; None when no cube was recorded
    result: Entry


@dataclass
class PromptStep:
    """A prompt the worker handled live, and the refresh result it led to when the recording has one."""

    stream: str
    event: Entry
    handled_ns: int
    refresh: Entry | None = None


Step = FrameStep | PromptStep


@dataclass
class Plan:
    steps: list[Step]
    cubes: dict[tuple[str, int], int]  # (stream, frame id) of every recorded cube -> capture_ns
    streams: list[str]
    unmatched_refreshes: int = 0  # a second result of a frame with no prompt before it (its event was not recorded)

    @property
    def frames(self) -> int:
        return sum(isinstance(s, FrameStep) for s in self.steps)


def plan(recording: Recording) -> Plan:
    """The lockstep plan of a recording (one pass over its headers; cubes are not decoded)."""
    steps: list[Step] = []
    cubes: dict[tuple[str, int], int] = {}
    segmented: set[tuple[str, int]] = set()
    waiting: dict[str, PromptStep] = {}  # per stream: the last prompt not yet followed by a result
    streams: dict[str, None] = {}
    unmatched = 0
    for entry in recording.entries(("frame", "masks", "prompt")):
        streams.setdefault(entry.stream)
        try:
            if entry.kind == "frame":
                header = entry.frame_header()
                if has_cube(header) and isinstance(header.get("frame_id"), int):
                    cubes[(entry.stream, header["frame_id"])] = int(header.get("capture_ns") or 0)
            elif entry.kind == "prompt":
                event = entry.decode()
                step = PromptStep(entry.stream, entry, event.handled_ns)
                steps.append(step)
                waiting[entry.stream] = step
            else:
                masks = entry.decode()
                key = (entry.stream, masks.frame_id)
                prompt = waiting.pop(entry.stream, None)
                if key not in segmented:
                    segmented.add(key)
                    steps.append(FrameStep(entry.stream, masks.frame_id, None, entry))
                elif prompt is not None:
                    prompt.refresh = entry
                else:
                    unmatched += 1
        except ProtocolError:
            recording.unreadable[entry.kind] += 1
    for planned in steps:
        if isinstance(planned, FrameStep):
            planned.capture_ns = cubes.get((planned.stream, planned.frame_id))
    return Plan(steps, cubes, list(streams), unmatched)


class FrameSupply:
    """The recorded cubes the plan needs, read in log-time order with a look-ahead for any recorded
    after their result."""

    def __init__(self, recording: Recording, needed: set[tuple[str, int]]) -> None:
        self.recording, self.needed = recording, needed
        self._entries = recording.entries(("frame",))
        self._ahead: dict[tuple[str, int], CubeFrame] = {}

    def get(self, stream: str, frame_id: int) -> CubeFrame | None:
        key = (stream, frame_id)
        if key in self._ahead:
            return self._ahead.pop(key)
        for entry in self._entries:
            try:
                header = entry.frame_header()
                found = (entry.stream, header.get("frame_id"))
                if found not in self.needed or not has_cube(header):
                    continue
                frame = entry.decode()
            except ProtocolError:
                self.recording.unreadable["frame"] += 1
                continue
            if found == key:
                return frame
            self._ahead[(entry.stream, frame.frame_id)] = frame
        return None


# -- pacing ---------------------------------------------------------------------------------------

class Pace:
    """When to send: ``speed`` x the recorded pace (capture-time offsets), ``fast`` (0), or ``step``
    (Enter on ``stdin`` before each frame)."""

    def __init__(self, speed: float = 1.0, step: bool = False, prompt: Callable[[str], Any] | None = None) -> None:
        if speed < 0:
            raise CommandError(f"--speed must be positive, got {speed}")
        self.speed, self.step = speed, step
        self.prompt = prompt or (lambda text: input(text))
        self._start: float | None = None
        self._first_ns: int | None = None

    def wait(self, at_ns: int | None, what: str, is_frame: bool = True) -> None:
        if self.step:
            if is_frame:
                try:
                    self.prompt(f"{what}: press Enter to send ")
                except EOFError:
                    self.step = False  # stdin closed: go on as fast as possible
            return
        if self.speed == 0 or not at_ns:
            return
        now = time.monotonic()
        if self._start is None or self._first_ns is None:
            self._start, self._first_ns = now, at_ns
            return
        offset = (at_ns - self._first_ns) / 1e9
        if not 0 <= offset < 86400:  # a clock that disagrees (another host): do not wait on it
            return
        due = self._start + offset / self.speed
        if due > now:
            time.sleep(due - now)


# -- the node end: frames out, prompts out, results in ---------------------------------------------

@dataclass
class Tally:
    """What the replay did, for its summary."""

    frames_sent: int = 0
    results: int = 0
    refreshes: int = 0
    extra_refreshes: int = 0  # a refresh the recording does not have (prompts handled together live)
    frames_without_cube: list[int] = field(default_factory=list)
    frames_sent_for_prompts: int = 0  # a prompt applied on a frame with no recorded result
    prompts_sent: int = 0
    prompts_refused: int = 0
    prompt_outcomes_differ: list[str] = field(default_factory=list)
    prompts_on_missing_frames: int = 0
    frame_resends: int = 0
    timeouts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        frames = self.frames_sent
        return {"frames": frames, "results": self.results, "refreshes": self.refreshes,
                "extra_refreshes": self.extra_refreshes, "frames_without_cube": len(self.frames_without_cube),
                "frames_sent_for_prompts": self.frames_sent_for_prompts, "prompts": self.prompts_sent,
                "prompts_refused": self.prompts_refused, "prompt_outcomes_differ": len(self.prompt_outcomes_differ),
                "prompts_on_missing_frames": self.prompts_on_missing_frames, "frame_resends": self.frame_resends,
                "timeouts": len(self.timeouts), "seconds": round(self.seconds, 3),
                "ms_per_frame": round(1000 * self.seconds / frames, 2) if frames else None}


class NodeLink:
    """The replay's sockets to a node: it binds the frame link as the ingest does, sends prompts as a
    console and reads the broadcast as a display. ``frame``/``prompt`` block until their result."""

    def __init__(self, settings: Settings, streams: list[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.settings, self.timeout_s = settings, timeout_s
        self.stats = ProcessStats("replay", settings.log.stats_interval_s)
        self.sockets = SocketFactory(settings)
        self.sender: FrameSender = SocketFrameLink(self.sockets, settings.endpoints.frames).sender(self.stats)
        self.consoles = {s: PromptConsole(settings, s, self.sockets) for s in streams}
        self.display = Subscriber(settings, [*streams, WARMUP_STREAM], kinds=("mask", "prompt"), sockets=self.sockets)
        self.last: dict[str, MaskBroadcast] = {}  # newest result per stream
        self.events: dict[int, PromptEvent] = {}  # replayed prompt events by request id

    def ready(self, timeout_s: float = 20.0) -> bool:
        """Whether the worker answers and a frame's result comes back through the publisher: a small frame
        of stream ``WARMUP_STREAM`` goes round until one does (a result the worker sends before its link
        to the publisher is up is dropped, and a recorded frame cannot be sent twice)."""
        console = next(iter(self.consoles.values()))
        deadline = time.monotonic() + timeout_s
        if not wait_until(console.answers, timeout=timeout_s, interval=0.2):
            return False
        for frame_id in itertools.count():
            if time.monotonic() > deadline:
                return False
            probe = _warmup_frame(frame_id)
            self.sender.send(probe)
            until = time.monotonic() + 0.5
            while time.monotonic() < until:
                update = self.display.receive(50)
                # this very frame's result, not one the publisher kept from an earlier replay
                if update is not None and update.masks is not None and update.stream_id == WARMUP_STREAM \
                        and update.masks.capture_ns == probe.capture_ns:
                    return True
        return False

    def _newer(self, stream: str, frame_id: int) -> Callable[[MaskBroadcast], bool]:
        before = self.last.get(stream)

        def newer(m: MaskBroadcast) -> bool:
            return m.frame_id == frame_id and (before is None or m.publisher != before.publisher or m.seq > before.seq)
        return newer

    def _take(self, update: Update) -> MaskBroadcast | None:
        if update.event is not None:
            self.events[int(update.event.request.get("request_id", 0))] = update.event
            return None
        return update.masks

    def _await(self, stream: str, wanted: Callable[[MaskBroadcast], bool], resend: Callable[[], bool] | None,
               tally: Tally) -> MaskBroadcast | None:
        """The next broadcast result of ``stream`` that ``wanted`` accepts, or None at the timeout.
        When late, ``resend()`` sends the frame again if the worker never got it, and the publisher's
        cache is read (a result broadcast before this display's subscription took hold)."""
        deadline = time.monotonic() + self.timeout_s
        retry_at = time.monotonic() + RETRY_S
        while time.monotonic() < deadline:
            update = self.display.receive(100)
            masks = self._take(update) if update is not None else None
            if masks is not None and masks.stream_id == stream and wanted(masks):
                self.last[stream] = masks
                return masks
            if time.monotonic() >= retry_at:
                retry_at = time.monotonic() + RETRY_S
                if resend is not None and resend():
                    tally.frame_resends += 1
                cached = self._cached(stream)
                if cached is not None and wanted(cached):
                    self.last[stream] = cached
                    return cached
        return None

    def _cached(self, stream: str) -> MaskBroadcast | None:
        with Subscriber(self.settings, [stream], kinds=("mask",), sockets=self.sockets) as probe:
            update = probe.receive(300)
        return None if update is None else update.masks

    def _worker_has(self, stream: str, frame_id: int) -> bool | None:
        try:
            state = self.consoles[stream].request("status", timeout_ms=2000).state
        except PromptTimeout:
            return None
        # In lockstep nothing newer is sent before this frame's result: the worker has it if it is its newest.
        return bool(state.get("streams", {}).get(stream, {}).get("last_frame_id") == frame_id)

    def frame(self, frame: CubeFrame, tally: Tally) -> MaskBroadcast | None:
        """Send ``frame`` and wait for its result."""
        frame.hops = []
        frame.cube_ref = None
        wanted = self._newer(frame.stream_id, frame.frame_id)

        def resend() -> bool:
            if self._worker_has(frame.stream_id, frame.frame_id) is False:  # lost before the worker subscribed
                frame.hops = []
                self.sender.send(frame)
                return True
            return False

        self.sender.send(frame)
        tally.frames_sent += 1
        result = self._await(frame.stream_id, wanted, resend, tally)
        if result is None:
            tally.timeouts.append(f"{frame.stream_id} frame {frame.frame_id}")
        else:
            tally.results += 1
        return result

    def prompt(self, request: PromptRequest, tally: Tally) -> tuple[PromptReply | None, MaskBroadcast | None]:
        """Send ``request``; its reply and, when applied on a stream with a frame, the refresh it causes."""
        assert isinstance(request, StreamPrompt)
        stream = request.stream_id
        fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name != "request_id"}
        tally.prompts_sent += 1
        try:
            reply = self.consoles[stream].request(request.OP, timeout_ms=int(self.timeout_s * 1000), **fields)
        except PromptTimeout as exc:
            tally.timeouts.append(f"{stream} {request.OP}: {exc}")
            return None, None
        if not reply.ok:
            tally.prompts_refused += 1
            return reply, None
        newest = self.last.get(stream)
        if newest is None:
            return reply, None  # no frame on the stream yet: nothing to segment again
        refresh = self._await(stream, self._newer(stream, newest.frame_id), None, tally)
        if refresh is None:
            tally.timeouts.append(f"{stream} refresh of frame {newest.frame_id} after {request.OP}")
        else:
            tally.refreshes += 1
        return reply, refresh

    def close(self) -> None:
        self.sender.close()
        for console in self.consoles.values():
            console.close()
        self.display.close()
        self.sockets.close()


# -- replaying -------------------------------------------------------------------------------------

def replay_recording(recording: Recording, link: NodeLink, pace: Pace, check: Comparison | None = None,
                     on_step: Callable[[str], None] | None = None) -> Tally:
    """Drive ``link``'s node through the recording in lockstep (module doc); compare into ``check``."""
    the_plan = plan(recording)
    supply = FrameSupply(recording, set(the_plan.cubes))
    tally = Tally()
    sent: dict[str, int] = {}  # newest frame id sent per stream
    rgb: dict[str, np.ndarray] = {}
    results: dict[tuple[str, int], int] = {}  # results compared per frame (the first, then refreshes)

    def compare(stream: str, frame_id: int, recorded: Entry, replayed: MaskBroadcast | None) -> None:
        if check is None:
            return
        k = results.get((stream, frame_id), 0)
        results[(stream, frame_id)] = k + 1
        try:
            check.add(stream, frame_id, k, recorded.decode(), replayed, rgb.get(stream))
        except ProtocolError:
            recording.unreadable["masks"] += 1

    def send(stream: str, frame_id: int, capture_ns: int | None) -> MaskBroadcast | None | bool:
        """Send a recorded frame; False when its cube is not in the recording."""
        frame = supply.get(stream, frame_id) if capture_ns is not None else None
        if frame is None:
            return False
        pace.wait(frame.capture_ns, f"{stream} frame {frame_id}")
        rgb[stream] = frame.rgb
        sent[stream] = frame_id
        if on_step:
            on_step(f"{stream} frame {frame_id}")
        return link.frame(frame, tally)

    for step in the_plan.steps:
        if isinstance(step, FrameStep):
            got = send(step.stream, step.frame_id, step.capture_ns)
            if got is False:
                tally.frames_without_cube.append(step.frame_id)
                continue
            compare(step.stream, step.frame_id, step.result, got if isinstance(got, MaskBroadcast) else None)
            continue
        try:
            event = step.event.decode()
        except ProtocolError:
            recording.unreadable["prompt"] += 1
            continue
        applied_on = event.frame_id
        if applied_on is not None and applied_on > sent.get(step.stream, -1):
            key = (step.stream, applied_on)
            if send(step.stream, applied_on, the_plan.cubes.get(key)) is False:
                tally.prompts_on_missing_frames += 1
            else:
                tally.frames_sent_for_prompts += 1
        elif applied_on is not None and applied_on != sent.get(step.stream) and event.request.get("op") == "click":
            if (step.stream, applied_on) not in the_plan.cubes:
                tally.prompts_on_missing_frames += 1
        pace.wait(step.handled_ns, f"{step.stream} {event.request.get('op')}", is_frame=False)
        try:
            request = event.prompt()
        except ProtocolError:
            recording.unreadable["prompt"] += 1
            continue
        reply, refresh = link.prompt(request, tally)
        if reply is not None and reply.ok != event.ok:
            tally.prompt_outcomes_differ.append(f"{step.stream} {request.OP} on frame {applied_on}: recorded "
                                                f"{'applied' if event.ok else 'refused'}, replayed "
                                                f"{'applied' if reply.ok else 'refused: ' + str(reply.error)}")
        if step.refresh is not None:
            compare(step.stream, refresh.frame_id if refresh is not None else sent.get(step.stream, -1),
                    step.refresh, refresh)
        elif refresh is not None:
            tally.extra_refreshes += 1
    tally.seconds = time.monotonic() - tally.started
    return tally


def replay_capture(frames: Iterator[CubeFrame], script: ClickScript | None, frame_count: int, link: NodeLink,
                   pace: Pace) -> Tally:
    """Send every frame of a capture in lockstep; after frame t's result, the script's prompts made on t."""
    tally = Tally()
    for index, frame in enumerate(frames):
        pace.wait(frame.capture_ns, f"{frame.stream_id} frame {frame.frame_id}")
        link.frame(frame, tally)
        if script is None:
            continue
        for entry in script.on_frame(index, frame_count):
            request = entry.request(frame.stream_id, frame.frame_id, label_position(frame.labels))
            link.prompt(request, tally)
    tally.seconds = time.monotonic() - tally.started
    return tally


# -- the node to replay into -------------------------------------------------------------------------

def private_node(overrides: dict[str, Any], run_dir: Path, config: Path | None = None) -> LocalNode:
    """A worker and a publisher on private endpoints, with no saved prompts; the replay is its ingest."""
    overrides = dict(overrides)
    overrides["worker"] = {**overrides.get("worker", {}), "state_file": str(run_dir / "worker-state.json")}
    node = LocalNode(overrides, run_dir=run_dir, config=config)
    try:
        for name in ("publisher", "worker"):
            node.start(name)
    except BaseException:
        node.close()
        raise
    return node


def node_failure(node: LocalNode) -> str | None:
    """Which process of ``node`` stopped, with the end of its log; None while both run."""
    for name in ("worker", "publisher"):
        if not node.running(name):
            tail = "\n".join(node.log_text(name).splitlines()[-15:])
            return f"{name} stopped unexpectedly:\n{tail}"
    return None


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


__all__ = ["DEFAULT_TIMEOUT_S", "FrameStep", "FrameSupply", "NodeLink", "Pace", "Plan", "PromptStep", "Tally",
           "node_failure", "plan", "private_node", "replay_capture", "replay_recording"]
