"""The worker process: freshest frame in, every object's mask out; answers prompt requests.

Frames that arrive while a frame is being segmented are dropped and counted (never queued).
The state and segmentation live in ``core.Worker``; this module is the loop around its sockets.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import zmq

from ..protocol import CubeFrame, PromptReply, PromptRequest, ProtocolError, now_ns, stamp
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import SocketFactory, drain, send_nowait
from .core import Worker

log = logging.getLogger(__name__)


def _drain_frames(sock: zmq.Socket, worker: Worker) -> set[str]:
    """Read every frame waiting on ``sock``; only the newest per stream will be segmented."""
    touched: set[str] = set()
    newest: dict[str, CubeFrame] = {}
    for parts in drain(sock):
        received = now_ns()  # before decoding, so the frame link's hop is transport alone
        worker.stats.count("frames_received")
        try:
            frame = worker.decode_frame(parts[1:])  # parts[0] is the topic
        except ProtocolError as exc:
            worker.stats.error("frames_rejected", str(exc))
            continue
        frame.hops.append(["worker_in", received])
        if frame.stream_id in newest:
            worker.stats.count("frames_stale")  # superseded before it could be segmented
        newest[frame.stream_id] = frame
    for frame in newest.values():
        worker.accept(frame)
        touched.add(frame.stream_id)
    return touched


def _serve_prompts(sock: zmq.Socket, worker: Worker) -> None:
    for parts in drain(sock):
        identity, body = parts[0], parts[1:]
        try:
            request = PromptRequest.from_parts(body)
            reply = worker.handle_prompt(request)
        except ProtocolError as exc:
            worker.stats.error("prompts_rejected", f"malformed prompt request: {exc}")
            reply = PromptReply(0, False, error=f"malformed prompt request: {exc}")
        send_nowait(sock, [identity, *reply.to_parts()])


def run_worker(settings: Settings, stop: threading.Event, stats_file: Path | None = None) -> ProcessStats:
    """Serve until ``stop`` is set; returns the final counters."""
    worker = Worker(settings)
    stats = worker.stats
    log.info("worker up: engine=%s frames<-%s prompts@%s results->%s", worker.engine.name,
             settings.endpoints.frames, settings.endpoints.prompts, settings.endpoints.results)
    for notice in worker.engine.notices:
        log.warning("notice: %s", notice)
    with SocketFactory(settings) as sockets:
        frames = sockets.socket("frames_in", subscribe=b"frame/")
        prompts = sockets.socket("prompts_server")
        results = sockets.socket("results_out")
        poller = zmq.Poller()
        poller.register(frames, zmq.POLLIN)
        poller.register(prompts, zmq.POLLIN)
        while not stop.is_set():
            ready = dict(poller.poll(settings.sockets.poll_ms))
            if prompts in ready:
                _serve_prompts(prompts, worker)
            if frames in ready:
                _drain_frames(frames, worker)
            for stream_id, stream in worker.streams.items():
                if not stream.dirty or not stream.frames:
                    continue
                try:
                    result = worker.segment(stream_id)
                except Exception:  # an engine fault costs this frame, never the stream
                    stream.dirty = False
                    stats.count("frames_failed")
                    log.exception("segmenting stream %s frame %s failed", stream_id, stream.last_frame_id)
                    continue
                if not worker.intact(stream.frames[-1]):
                    stats.count("frames_overwritten")  # the camera lapped the ring while we worked: result is void
                    continue
                stamp(result.hops, "worker_out")
                if send_nowait(results, result.to_parts()):
                    stats.count("results_sent")
                else:
                    stats.count("results_dropped")  # publisher absent or behind; the next frame replaces it
                if prompts in dict(poller.poll(0)):
                    _serve_prompts(prompts, worker)  # keep clicks responsive between streams
            stats.maybe_log()
    worker.close()
    stats.write(stats_file)
    log.info("worker stopped: %s", dict(stats.counters))
    return stats
