"""The worker process: freshest frame in, every object's mask out; answers prompt requests.

Frames that arrive while a frame is being segmented are dropped and counted (never queued).
The state and segmentation live in ``core.Worker``; this module is the loop around its links:
the frame link (``transport.FrameReceiver``), the prompt socket and the result sink, all
waited on by one ``transport.PollLoop``. Any link can be in-process, so the loop runs in a test
thread without sockets for frames and results.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import zmq

from .. import supervision
from ..errors import ProtocolError
from ..protocol import CubeFrame, PromptReply, stamp
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import (
    FrameLink,
    FrameReceiver,
    PollLoop,
    ResultSink,
    SocketFactory,
    SocketResultSink,
    drain,
    frame_link,
    send_nowait,
)
from .core import Worker
from .engines import Engine

log = logging.getLogger(__name__)


def _take_frames(frames: FrameReceiver, worker: Worker) -> None:
    """Receive every waiting frame; only the newest per stream is kept for segmentation."""
    newest: dict[str, CubeFrame] = {}
    for frame in frames.receive():
        if frame.stream_id in newest:
            worker.stats.count("frames_stale")  # superseded before it could be segmented
        newest[frame.stream_id] = frame
    for frame in newest.values():
        try:
            worker.accept(frame)
        except ProtocolError as exc:
            worker.stats.error("frames_rejected", str(exc))


def _serve_prompts(sock: zmq.Socket, worker: Worker) -> None:
    """Answer every waiting prompt request: each gets exactly one reply (``Worker.answer`` never raises),
    echoing its request id whenever that could be read."""
    for parts in drain(sock):
        identity, body = parts[0], parts[1:]
        reply = worker.answer(body)
        try:
            out = reply.to_parts()
        except Exception:  # an unencodable reply still gets the console an answer
            worker.stats.count("replies_unencodable")
            log.exception("the reply to prompt request %d could not be encoded", reply.request_id)
            out = PromptReply(reply.request_id, False, error="the worker's reply could not be encoded").to_parts()
        if not send_nowait(sock, [identity, *out]):
            worker.stats.count("replies_dropped")  # the console stopped reading; it times out and asks again


def _send_events(worker: Worker, results: ResultSink) -> None:
    """Send the prompts just handled, ahead of the results they lead to."""
    for event in worker.take_events():
        if results.send(event):
            worker.stats.count("prompt_events_sent")
        else:
            worker.stats.count("prompt_events_dropped")


def _publish_dirty(worker: Worker, frames: FrameReceiver, results: ResultSink, between: Callable[[], None]) -> None:
    """Segment every stream with a new frame or changed prompts and send the results; ``between``
    runs after each stream (serving prompts), so it may add, change or evict streams."""
    stats = worker.stats
    dirty = worker.dirty_streams()  # a snapshot: prompts served in between may change the dict
    worker.prepare_streams(dirty)  # frames of several streams through the image encoder at once
    for stream_id in dirty:
        stream = worker.streams.get(stream_id)
        if stream is None or not stream.dirty or not stream.frames:
            continue  # evicted or reset meanwhile
        frame = stream.frames[-1]
        try:
            result = worker.segment(stream_id)
        except Exception:  # an engine fault costs this frame, never the stream
            stream.dirty = False
            stats.count("frames_failed")
            log.exception("segmenting stream %s frame %s failed", stream_id, frame.frame_id)
            continue
        if not frames.intact(frame):
            stats.count("frames_overwritten")  # its cube changed under the engine: the result is void
            continue
        stamp(result.hops, "worker_out")
        worker.observe_result(result)
        if results.send(result):
            stats.count("results_sent")
        else:
            stats.count("results_dropped")  # publisher absent or behind; the next frame replaces it
        between()


def run_worker(settings: Settings, stop: threading.Event, stats_file: Path | None = None, *,
               engine: Engine | None = None, link: FrameLink | None = None, results: ResultSink | None = None,
               context: zmq.Context | None = None) -> ProcessStats:
    """Serve until ``stop`` is set; returns the final counters.

    By default every link comes from the settings; a test passes ``engine``, an in-process ``link``
    and ``results`` sink, and a zmq ``context`` shared with its console for an inproc:// prompt endpoint."""
    stats = ProcessStats("worker", settings.log.stats_interval_s)
    with SocketFactory(settings, context) as sockets:
        frames = (link or frame_link(settings, sockets)).receiver(stats, settings.worker.streams or None)
        try:
            worker = Worker(settings, engine=engine, stats=stats, intact=frames.intact)
        except BaseException:
            frames.close()
            raise
        log.info("worker up: engine=%s frames<-%s prompts@%s results->%s", worker.engine.name,
                 "in-process link" if link else settings.endpoints.frames, settings.endpoints.prompts,
                 "in-process sink" if results else settings.endpoints.results)
        for notice in worker.engine.notices:
            log.warning("notice: %s", notice)
        try:
            prompts = sockets.socket("prompts_server")
            sink = results or SocketResultSink(sockets.socket("results_out"))
            loop = PollLoop(stop, settings.sockets.poll_ms, stats)
            def serve_prompts() -> None:
                _serve_prompts(prompts, worker)
                _send_events(worker, sink)

            loop.add(prompts, serve_prompts)
            loop.add(frames.pollable, lambda: _take_frames(frames, worker))
            # Ready once the engine (and its model) is loaded and warmed up and the sockets are bound and connected.
            warmed = worker.warm_up()
            supervision.current().ready(f"engine {worker.engine.name} loaded, warmed up on {warmed} frame(s); "
                                        "serving prompts and frames")

            def serve_waiting_prompts() -> None:
                if loop.ready(prompts):
                    serve_prompts()  # keep clicks responsive between streams

            # A prompt served between streams leaves its stream dirty: segment it at once, not after the next poll.
            loop.run(lambda: _publish_dirty(worker, frames, sink, serve_waiting_prompts), pending=worker.has_dirty)
        finally:
            worker.close()  # frames go first: their cubes are views of the receiver's rings
            frames.close()
    stats.write(stats_file)
    log.info("worker stopped: %s", dict(stats.counters))
    return stats
