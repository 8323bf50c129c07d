"""Recordings for tests, written with the recording format alone (the recorder is not needed):
hand-written sessions, and sessions recorded from a running node by a lockstep tap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from mcap.writer import CompressionType, Writer

from samsa_stream.display.subscriber import Update
from samsa_stream.protocol import CubeFrame, MaskBroadcast, ObjectMask, PromptEvent
from samsa_stream.recording import format as fmt
from samsa_stream.recording.replay import NodeLink, Tally


class SessionWriter:
    """Writes messages in the order given, log times strictly increasing, as the recorder does."""

    def __init__(self, path: Path, compression: CompressionType = CompressionType.NONE,
                 chunk_size: int = 1 << 20) -> None:
        self.file = path.open("wb")
        self.writer = Writer(self.file, compression=compression, chunk_size=chunk_size)
        self.writer.start(profile=fmt.PROFILE, library=fmt.LIBRARY)
        self.writer.add_metadata(fmt.METADATA_NAME, {"format_version": str(fmt.FORMAT_VERSION)})
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.log_ns = 1_700_000_000_000_000_000

    def _channel(self, topic: str, kind: fmt.Kind) -> int:
        if kind.name not in self.schemas:
            self.schemas[kind.name] = self.writer.register_schema(kind.schema_name, "jsonschema", kind.schema_bytes())
        if topic not in self.channels:
            self.channels[topic] = self.writer.register_channel(topic, kind.message_encoding, self.schemas[kind.name])
        return self.channels[topic]

    def raw(self, topic: str, kind: fmt.Kind, data: bytes, publish_ns: int) -> None:
        self.log_ns += 1000
        self.writer.add_message(self._channel(topic, kind), self.log_ns, data, publish_ns)

    def add(self, message: CubeFrame | MaskBroadcast | PromptEvent, cube: bool = True) -> None:
        kind = {CubeFrame: "frame", MaskBroadcast: "masks", PromptEvent: "prompt"}[type(message)]
        if isinstance(message, CubeFrame):
            parts = message.to_parts() if cube else _without_cube(message)
            publish = message.capture_ns
        elif isinstance(message, MaskBroadcast):
            parts, publish = message.to_parts(), message.capture_ns
        else:
            parts, publish = message.to_parts(), message.handled_ns
        self.raw(fmt.topic_of(kind, message.stream_id), fmt.KINDS[kind], fmt.wire_data(parts), publish)

    def stats(self, counters: dict[str, int]) -> None:
        self.raw(fmt.STATS_TOPIC, fmt.STATS_KIND, json.dumps({"counters": counters, "written_ns": 1}).encode(), 1)

    def close(self) -> None:
        self.writer.finish()
        self.file.close()

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _without_cube(frame: CubeFrame) -> list[Any]:
    """A frame message with its cube left out (a recording at a reduced cube rate)."""
    from samsa_stream.protocol.codec import encode

    header = {"type": "frame", "stream": frame.stream_id, "frame_id": frame.frame_id, "capture_ns": frame.capture_ns,
              "hops": [], "calibration": frame.calibration, "source": {}}
    return encode(header, {"wavelengths_nm": frame.wavelengths_nm, "rgb": frame.rgb})


def masks_of(frame: CubeFrame, objects: dict[int, np.ndarray], seq: int) -> MaskBroadcast:
    h, w = frame.rgb.shape[:2]
    return MaskBroadcast(frame.stream_id, frame.frame_id, frame.capture_ns, (h, w),
                         [ObjectMask(oid, f"object {oid}", (255, 0, 0), m, 0.9) for oid, m in objects.items()],
                         "spectral", seq=seq, publisher="test")


def click_event(stream: str, object_id: int, x: float, y: float, frame_id: int, ok: bool = True,
                positive: bool = True, request_id: int = 1) -> PromptEvent:
    request = {"op": "click", "request_id": request_id, "object_id": object_id, "x": x, "y": y, "positive": positive,
               "frame_id": frame_id}
    return PromptEvent(stream, request, ok, None if ok else "refused", frame_id, 1, 1_000 + frame_id)


class TapLink(NodeLink):
    """A NodeLink that also writes what it sends and what the node broadcasts into a recording, in order:
    a session recorded in lockstep."""

    def __init__(self, *args: Any, writer: SessionWriter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writer = writer

    def frame(self, frame: CubeFrame, tally: Tally) -> MaskBroadcast | None:
        self.writer.add(frame)
        return super().frame(frame, tally)

    def _take(self, update: Update) -> MaskBroadcast | None:
        message = update.event if update.event is not None else update.masks
        if message is not None:
            self.writer.add(message)
        return super()._take(update)


SCRIPT = {"click": [{"frame": 1, "object": 1, "object_centre": 0},
                    {"frame": 3, "object": 1, "positive": False, "at": "background"},
                    {"frame": 5, "object": 2, "object_centre": 1, "label": "second"}],
          "undo": [{"frame": 7, "object": 1}]}


def record_session(path: Path, frames: list[CubeFrame], run_dir: Path, script: dict[str, Any] | None = None,
                   overrides: dict[str, Any] | None = None) -> Tally:
    """Run ``frames`` with ``script`` through a private node in lockstep and record the session at ``path``."""
    from samsa_stream.recording.replay import Pace, node_failure, private_node, replay_capture
    from samsa_stream.recording.script import parse_script

    the_script = parse_script(script or SCRIPT)
    with private_node(overrides or {}, run_dir) as node, SessionWriter(path) as writer:
        link = TapLink(node.settings, [frames[0].stream_id], 20.0, writer=writer)
        try:
            assert link.ready(), node_failure(node)
            tally = replay_capture(iter(frames), the_script, len(frames), link, Pace(0.0))
        finally:
            link.close()
    return tally
