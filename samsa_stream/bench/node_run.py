"""Driving the node's real processes for ``bench``: start them, click, listen as a display, read the hop times.

``measure_node`` runs one case (a transport, a frame rate, one or several phantom cameras) through
``LocalNode`` and returns what a display saw: per-stage latencies from each masks message's hop
timestamps, masks per second, click-to-mask samples, every process's drop counters and peak memory.
Every wait is on an observable event (a reply, a message) with a generous deadline; the processes
are stopped on any error.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..display.console import PromptConsole, PromptTimeout
from ..display.subscriber import Subscriber
from ..ingest.sources.phantom import PhantomCamera
from ..node import LocalNode, free_tcp_ports
from ..protocol import PromptReply, now_ns
from ..settings import PhantomSettings
from .options import BenchError
from .stats import process_peak_rss_mib

# (stage, from hop, to hop): ``capture`` is the masks message's capture time, ``display`` its receipt here.
STAGES = (("ingest", "capture", "ingest_out"), ("frame link", "ingest_out", "worker_in"),
          ("worker", "worker_in", "worker_out"), ("result link", "worker_out", "publisher_in"),
          ("publisher", "publisher_in", "publisher_out"), ("broadcast", "publisher_out", "display"),
          ("end to end", "capture", "display"))

# bench transport -> (LocalNode transport, sockets.shared_memory)
TRANSPORT_MODES = {"shm": ("ipc", "on"), "ipc": ("ipc", "off"), "tcp": ("tcp", "off")}

# Counters that say a frame, result or broadcast was lost on the way (whatever process reports them).
DROP_WORDS = ("drop", "stale", "lapped", "superseded", "missed", "overwritten", "override", "rejected", "failed")

START_S = 180.0  # a process's start-up (imports, model load, warm-up) on a small, busy machine
CLICK_S = 120.0  # from a click to the first masks message holding its object
POLL_S = 0.1


@dataclass(frozen=True)
class NodeCase:
    """One node run: ``streams`` phantom cameras at ``fps`` over ``transport``, ``frames`` masks measured per
    stream after each stream's object is clicked, then ``clicks`` click-to-mask samples on the first stream."""

    transport: str
    fps: float
    streams: tuple[str, ...]
    frames: int
    clicks: int
    phantom: PhantomSettings
    worker: dict[str, Any]  # worker settings for the node (engine, device, model)
    carried: dict[str, Any] = field(default_factory=dict)  # the run's other settings, nested

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORT_MODES:
            raise BenchError(f"transport {self.transport!r} is not one of {', '.join(TRANSPORT_MODES)}")
        if not self.streams:
            raise BenchError("a node run needs at least one stream")


@dataclass
class NodeMeasure:
    """What one node run measured (times in ms)."""

    stages: dict[str, list[float]]  # stage -> one time per measured masks message, every stream
    masks: dict[str, int]  # stream -> masks messages measured
    window_s: dict[str, float]  # stream -> seconds from its first to its last measured message
    click_to_mask: list[float]  # click sent -> the first masks message holding the new object at the display
    click_to_worker_out: list[float]  # click sent -> the worker sent that message
    counters: dict[str, dict[str, int]]  # process (ingest-camK, worker, publisher, display) -> counters
    rss_mib: dict[str, float | None]  # process -> peak resident memory while it ran
    worker_latency: dict[str, Any]  # the worker's own latency summaries (segment, wait, frame link)
    notes: list[str] = field(default_factory=list)

    def throughput(self, stream: str) -> float | None:
        """Masks per second one display received on ``stream`` (None with fewer than two messages)."""
        n, span = self.masks.get(stream, 0), self.window_s.get(stream, 0.0)
        return round((n - 1) / span, 3) if n >= 2 and span > 0 else None

    def drops(self) -> dict[str, int]:
        """Every loss counter of every process, as ``process.counter``."""
        return {f"{proc}.{name}": int(value) for proc, counters in self.counters.items()
                for name, value in sorted(counters.items()) if any(w in name for w in DROP_WORDS)}


def _overrides(case: NodeCase) -> dict[str, Any]:
    _, shared_memory = TRANSPORT_MODES[case.transport]
    carried = dict(case.carried)
    return {**carried,
            "ingest": {**carried.get("ingest", {}), "fps": case.fps, "frames": 0,
                       "phantom": case.phantom.model_dump(mode="json")},
            "worker": {**carried.get("worker", {}), **case.worker},
            "sockets": {**carried.get("sockets", {}), "shared_memory": shared_memory},
            "log": {**carried.get("log", {}), "level": "WARNING"}}


def _status(console: PromptConsole) -> dict[str, Any]:
    try:
        reply = console.request("status", timeout_ms=2000)
    except PromptTimeout:
        return {}
    return reply.state if reply.ok else {}


def _wait(what: str, predicate: Any, timeout_s: float, node: LocalNode, log: str) -> Any:
    """``predicate()``'s first truthy value; BenchError naming ``what`` (and the process log's end) past the
    deadline or once a process of the node has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        ended = [name for name, proc in node.procs.items() if proc.poll() is not None]
        if ended:
            raise BenchError(f"{what}: {', '.join(ended)} ended; its log ends:\n{node.log_text(ended[0])[-1500:]}")
        time.sleep(POLL_S)  # between status requests, so the worker is not kept busy answering them
    raise BenchError(f"{what}: not within {timeout_s:.0f} s; the {log} log ends:\n{node.log_text(log)[-1500:]}")


def _newest_frames(console: PromptConsole, streams: tuple[str, ...], at_least: int = 0) -> dict[str, int] | None:
    """Each stream's newest frame id at the worker, once every stream has one (numbered ``at_least`` or later)."""
    seen = _status(console).get("streams", {})
    newest = {sid: seen.get(sid, {}).get("last_frame_id") for sid in streams}
    if any(v is None or v < at_least for v in newest.values()):
        return None
    return {sid: int(v) for sid, v in newest.items()}


def _camera_endpoint(frames: str, stream_id: str) -> str:
    """A frame endpoint of its own for camera ``stream_id``, beside the node's ``frames`` endpoint."""
    if frames.startswith("tcp://"):
        return f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"
    return f"{frames}-{stream_id}"


@contextlib.contextmanager
def _started(case: NodeCase) -> Iterator[tuple[LocalNode, list[str]]]:
    """The node's processes running (publisher, worker, one ingest per stream); yields the node and the ingest keys."""
    transport, _ = TRANSPORT_MODES[case.transport]
    with LocalNode(_overrides(case), transport=transport) as node:
        node.start("publisher")
        keys = [f"ingest-{sid}" for sid in case.streams]
        if len(case.streams) == 1:
            node.start("worker")
            node.start("ingest", "--stream", case.streams[0], key=keys[0])
        else:  # each camera's ingest binds its own frame endpoint; the worker connects to every one
            sources = [_camera_endpoint(node.settings.endpoints.frames, sid) for sid in case.streams]
            node.start("worker", "--set", "endpoints.frame_sources=" + ",".join(sources))
            for key, sid, source in zip(keys, case.streams, sources, strict=True):
                node.start("ingest", "--stream", sid, "--set", f"endpoints.frames={source}", key=key)
        yield node, keys


def measure_node(case: NodeCase) -> NodeMeasure:
    """Run ``case`` on this machine's real processes and return what a display of it saw.

    BenchError (saying which process ended or what did not happen in time) where the node cannot run
    the case; its processes are stopped either way."""
    try:
        return _measure(case)
    except PromptTimeout as exc:
        raise BenchError(f"{case.transport}@{case.fps:g}fps: {exc}") from None


def _measure(case: NodeCase) -> NodeMeasure:
    camera = PhantomCamera(case.phantom)
    objects = case.phantom.objects
    with _started(case) as (node, ingest_keys), contextlib.ExitStack() as stack:
        consoles = {sid: stack.enter_context(contextlib.closing(PromptConsole(node.settings, sid)))
                    for sid in case.streams}
        first = consoles[case.streams[0]]
        display = stack.enter_context(Subscriber(node.settings, case.streams, kinds=("mask",)))
        _wait("the worker answering", first.answers, START_S, node, "worker")
        # Start-up is not measured: every shared-memory slot written once (its pages faulted in) first.
        warm = node.settings.sockets.shm_slots + 1
        newest = _wait("frames of every stream at the worker", lambda: _newest_frames(first, case.streams, warm),
                       START_S, node, ingest_keys[0])
        for k, sid in enumerate(case.streams):  # object k of the phantom on camera k
            x, y = camera.centre(k % objects, newest[sid])
            reply = consoles[sid].click(1, x, y, frame_id=newest[sid])
            if not reply.ok:
                raise BenchError(f"the click on stream {sid} was refused: {reply.error}")
        stages, masks, window = _collect(display, case, node)
        samples, at_worker = _click_to_mask(consoles[case.streams[0]], display, case, camera, node)
        state = _status(first)
        rss = {key: process_peak_rss_mib(proc.pid) for key, proc in node.procs.items()}
        display_counters = dict(display.stats.counters)
        for key in ingest_keys:
            node.stop(key)
        node.stop("worker")
        node.stop("publisher")
        counters = {key: dict(node.stats(key).get("counters", {})) for key in (*ingest_keys, "publisher")}
    counters["worker"] = dict(state.get("counters", {}))
    counters["display"] = display_counters
    notes = []
    short = {sid: n for sid, n in masks.items() if n < case.frames}
    if short:
        notes.append(f"{case.transport}@{case.fps:g}fps: fewer masks than asked within the deadline: {short}")
    return NodeMeasure(stages, masks, window, samples, at_worker, counters, rss, dict(state.get("latency_ms", {})),
                       notes)


def _collect(display: Subscriber, case: NodeCase,
             node: LocalNode) -> tuple[dict[str, list[float]], dict[str, int], dict[str, float]]:
    """Hop times of ``case.frames`` masks messages per stream, each of a frame after the one its click was on."""
    stages: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    clicked: dict[str, int] = {}  # stream -> frame id of the first message holding its object
    masks = dict.fromkeys(case.streams, 0)
    first_ns: dict[str, int] = {}
    last_ns: dict[str, int] = {}
    deadline = time.monotonic() + CLICK_S + case.frames * max(2.0, 2.0 / case.fps)
    while min(masks.values()) < case.frames and time.monotonic() < deadline:
        update = display.receive(500)
        msg = update.masks if update is not None else None
        if update is None or msg is None or not msg.objects:
            if any(proc.poll() is not None for proc in node.procs.values()):
                break
            continue
        sid = update.stream_id
        if sid not in clicked:
            clicked[sid] = msg.frame_id  # may be the clicked frame segmented again: not a frame of the stream
            continue
        if msg.frame_id <= clicked[sid] or masks[sid] >= case.frames:
            continue
        hops = {"capture": msg.capture_ns, "display": update.received_ns, **{h: v for h, v in msg.hops}}
        for stage, a, b in STAGES:
            if a in hops and b in hops:
                stages[stage].append((hops[b] - hops[a]) / 1e6)
        masks[sid] += 1
        first_ns.setdefault(sid, update.received_ns)
        last_ns[sid] = update.received_ns
    if not clicked:
        raise BenchError(f"{case.transport}: no masks message reached the display within the deadline; the worker "
                         f"log ends:\n{node.log_text('worker')[-1500:]}")
    window = {sid: (last_ns[sid] - first_ns[sid]) / 1e9 for sid in last_ns}
    return stages, masks, window


def _click_to_mask(console: PromptConsole, display: Subscriber, case: NodeCase, camera: PhantomCamera,
                   node: LocalNode) -> tuple[list[float], list[float]]:
    """``case.clicks`` samples: a new object clicked, the time until the display gets the first masks message
    holding it (and until the worker sent that message), then the object removed again. The click is sent
    from a thread so the display reads meanwhile."""
    sid = case.streams[0]
    target = 1 % case.phantom.objects  # the other phantom object than the one tracked meanwhile
    samples: list[float] = []
    at_worker: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for k in range(case.clicks):
            oid = 100 + k  # an id never used before: its first masks message is the one with this click
            newest = _wait("a frame to click on", lambda: _newest_frames(console, (sid,)), START_S, node, "worker")
            x, y = camera.centre(target, newest[sid])
            future = pool.submit(_timed_click, console, oid, x, y, newest[sid])
            received, worker_out = _first_holding(display, sid, oid, node)
            sent, reply = future.result(timeout=CLICK_S)
            if not reply.ok:
                raise BenchError(f"click-to-mask click {k + 1} was refused: {reply.error}")
            samples.append((received - sent) / 1e6)
            if worker_out is not None:
                at_worker.append((worker_out - sent) / 1e6)
            removed = console.request("remove", object_id=oid)
            if not removed.ok:
                raise BenchError(f"removing click-to-mask object {oid} was refused: {removed.error}")
    return samples, at_worker


def _timed_click(console: PromptConsole, oid: int, x: float, y: float, frame_id: int) -> tuple[int, PromptReply]:
    """When the click left the console (ns), and the worker's reply."""
    sent = now_ns()
    return sent, console.click(oid, x, y, frame_id=frame_id)


def _first_holding(display: Subscriber, sid: str, oid: int, node: LocalNode) -> tuple[int, int | None]:
    """When this display received the first masks message of ``sid`` that holds object ``oid``, and when the
    worker sent it (ns; None where the message lacks that hop)."""
    deadline = time.monotonic() + CLICK_S
    while time.monotonic() < deadline:
        update = display.receive(500)
        if update is None:
            if any(proc.poll() is not None for proc in node.procs.values()):
                break
            continue
        if update.masks is not None and update.stream_id == sid and any(o.object_id == oid
                                                                        for o in update.masks.objects):
            worker_out = next((ns for hop, ns in reversed(update.masks.hops) if hop == "worker_out"), None)
            return update.received_ns, worker_out
    raise BenchError(f"no masks message with clicked object {oid} within {CLICK_S:.0f} s; the worker log ends:\n"
                     f"{node.log_text('worker')[-1500:]}")


__all__ = ["STAGES", "TRANSPORT_MODES", "NodeCase", "NodeMeasure", "measure_node"]
