"""``bench`` section ``node``: the node's processes end to end, as a display sees them.

Two sections come out of one ``run``:

- ``node``: for each transport (``shm``: ipc with shared memory, ``ipc``: ipc without, ``tcp``) and
  frame rate, one phantom camera through ingest -> worker -> publisher -> a display: each stage's time
  from the masks messages' hop timestamps, frame-to-screen (capture -> display receipt), masks per
  second, every loss counter, each process's peak memory, and click-to-mask (a new object clicked
  until the first masks message holding it reaches the display). Beside it the same worker work in
  this one process (``worker.core.Worker``, accept + segment per frame), so the cost of the process
  split shows as ``worker_in_node_vs_in_process``, and ``end_to_end_vs_worker`` says how much of the
  frame-to-screen time is not segmentation.
- ``node_streams``: 1 to N phantom cameras (one ingest process each) into one worker and one
  publisher over shared memory, one object clicked on each: the per-frame cost as streams are added.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ..protocol import ClickPrompt
from ..settings import Settings
from ..worker.core import Worker
from .node_run import STAGES, NodeCase, NodeMeasure, measure_node
from .options import SAM2_ENGINES, BenchError, BenchFrames, BenchOptions
from .report import Figure, Section, Timing
from .stats import ratio, summarize

NODE_RATIOS = ("worker_in_node_vs_in_process", "end_to_end_vs_worker")
STREAMS_TRANSPORT = "shm"
# Counters every run row shows (zero where the process never counted one): what was handled, then what was lost.
KEY_COUNTS = (("ingest", "frames_captured"), ("worker", "frames_processed"), ("publisher", "masks_published"))
KEY_DROPS = (("worker", "frames_dropped"), ("worker", "frames_stale"), ("ingest", "frames_send_dropped"),
             ("publisher", "broadcasts_dropped"), ("display", "masks_missed"))


def run(options: BenchOptions, frames: BenchFrames) -> dict[str, Section]:
    """Sections ``node`` and ``node_streams`` (each skipped, saying why, where it cannot run)."""
    engine = options.node_engine
    if engine in SAM2_ENGINES and not options.has_model:
        why = f"node engine {engine!r} needs a model: pass --checkpoint or --random-weights"
        return {"node": Section.skip("Node end to end", why, NODE_RATIOS),
                "node_streams": Section.skip("Node, one to several streams", why)}
    worker, carried = worker_overrides(options, engine), carried_settings(options.settings)
    return {"node": node_section(options, frames, worker, carried),
            "node_streams": streams_section(options, frames, worker, carried)}


def worker_overrides(options: BenchOptions, engine: str) -> dict[str, Any]:
    """The node worker's settings for ``engine`` (device, model, input size), as overrides."""
    ws = options.worker_settings(engine)
    out: dict[str, Any] = {"engine": ws.engine, "device": ws.device, "image_size": ws.image_size,
                           "random_weights": ws.random_weights, "seed": ws.seed}
    if ws.checkpoint is not None:
        out["checkpoint"] = str(ws.checkpoint)
    if ws.sam2_config is not None:
        out["sam2_config"] = ws.sam2_config
    return out


def carried_settings(settings: Settings) -> dict[str, Any]:
    """The run's settings that differ from the defaults, as nested overrides for the node's processes.

    Endpoints are the node's own (private ones per run); tables (dicts of free keys) and unset values cannot
    travel as environment variables and stay at the processes' defaults; lists travel as JSON."""
    tree = settings.model_dump(mode="json", exclude_defaults=True)
    tree.pop("endpoints", None)
    return _scalars(tree)


def _scalars(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            inner = _scalars(value)
            if inner:
                out[key] = inner
        elif isinstance(value, str | int | float | bool) or (
                isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value)):
            out[key] = value
    return out


def _label(transport: str, fps: float) -> str:
    return f"{transport}@{fps:g}fps"


def _counter_columns(measure: NodeMeasure) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    for proc, counter in (*KEY_COUNTS, *KEY_DROPS):
        keys = [k for k in measure.counters if k == proc or k.startswith(f"{proc}-")]
        out[f"{proc} {counter.replace('_', ' ')}"] = sum(int(measure.counters[k].get(counter, 0)) for k in keys)
    return out


def _rss_columns(measure: NodeMeasure) -> dict[str, Figure]:
    ingest = [v for k, v in measure.rss_mib.items() if k.startswith("ingest") and v is not None]
    return {"ingest MiB": max(ingest) if ingest else None, "worker MiB": measure.rss_mib.get("worker"),
            "publisher MiB": measure.rss_mib.get("publisher")}


def node_section(options: BenchOptions, frames: BenchFrames, worker: dict[str, Any],
                 carried: dict[str, Any]) -> Section:
    """Section ``node``: every transport and frame rate, one camera, plus the same worker in this process."""
    timings: dict[str, Timing] = {}
    latency: list[dict[str, Figure]] = []
    runs: list[dict[str, Figure]] = []
    drops: list[dict[str, Figure]] = []
    notes: list[str] = []
    segment_p50: dict[str, float | None] = {}
    for transport in options.transports:
        for fps in options.fps:
            label = _label(transport, fps)
            case = NodeCase(transport, fps, ("cam0",), options.frames, options.clicks, frames.phantom, worker,
                            carried)
            measure = _attempt(case, label, notes)
            if measure is None:
                continue
            for stage, _, _ in STAGES:
                values = measure.stages[stage]
                if not values:
                    continue
                timing = timings[f"{label} {stage}"] = summarize(values)
                latency.append({"transport": transport, "fps": fps, "stage": stage, "p50 ms": timing.p50_ms,
                                "p95 ms": timing.p95_ms, "max ms": timing.max_ms, "n": timing.n})
            click: Timing | None = None
            if measure.click_to_mask:
                click = timings[f"{label} click to mask"] = summarize(measure.click_to_mask)
            if measure.click_to_worker_out:
                timings[f"{label} click to worker out"] = summarize(measure.click_to_worker_out)
            own = {key: measure.worker_latency.get(key, {}).get("p50") for key in ("wait", "segment")}
            segment_p50[label] = own["segment"]
            runs.append({"transport": transport, "fps": fps, "masks": measure.masks["cam0"],
                         "masks/s": measure.throughput("cam0"),
                         "worker receive+wait p50 ms": own["wait"], "worker segment p50 ms": own["segment"],
                         "click to mask p50 ms": click.p50_ms if click else None,
                         "click to mask p95 ms": click.p95_ms if click else None,
                         **_counter_columns(measure), **_rss_columns(measure)})
            drops += [{"transport": transport, "fps": fps, "counter": name, "count": value}
                      for name, value in measure.drops().items()]
    try:
        timings["in process worker"] = summarize(in_process_times(options, frames))
    except BenchError as exc:
        notes.append(f"in process did not complete: {exc}")
    in_process_p50 = _p50(timings, "in process worker")
    reference = STREAMS_TRANSPORT if STREAMS_TRANSPORT in options.transports else options.transports[0]
    ref_label = _label(reference, options.fps[0])
    worker_p50 = _p50(timings, f"{ref_label} worker")
    if reference != STREAMS_TRANSPORT:
        notes.append(f"ratios from {ref_label}: shm was not among the transports")
    ratios = {"worker_in_node_vs_in_process": ratio(worker_p50, in_process_p50),
              "worker_segment_in_node_vs_in_process": ratio(segment_p50.get(ref_label), in_process_p50),
              "end_to_end_vs_worker": ratio(_p50(timings, f"{ref_label} end to end"), worker_p50)}
    notes.append("worker stage = worker_in -> worker_out: decoding the frame and scanning its cube for NaN/inf "
                 "(a frame from another process is not trusted; 'receive+wait', from the worker's own figures), "
                 "waiting for a segmentation in progress, segmenting ('segment'); "
                 "in process = Worker.accept + Worker.segment per frame, one object clicked; "
                 "loss counters count the whole run, start-up included")
    return Section(title="Node end to end",
                   description=(f"ingest (phantom {frames.phantom.height}x{frames.phantom.width}x"
                                f"{frames.phantom.bands}) -> worker ({worker['engine']}) -> publisher -> display, "
                                f"real processes; {options.frames} masks per run after a click, "
                                f"{options.clicks} click-to-mask samples"),
                   timings=timings, ratios=ratios, tables={"runs": runs, "latency": latency, "drops": drops},
                   figures={"in process worker p50 ms": in_process_p50, "ratio case": ref_label},
                   notes=notes)


def streams_section(options: BenchOptions, frames: BenchFrames, worker: dict[str, Any],
                    carried: dict[str, Any]) -> Section:
    """Section ``node_streams``: N cameras (one ingest each) into one worker and publisher over shared memory."""
    fps = options.fps[0]
    timings: dict[str, Timing] = {}
    rows: list[dict[str, Figure]] = []
    notes: list[str] = []
    worker_p50: dict[int, float] = {}
    e2e_p50: dict[int, float] = {}
    segment_p50: dict[int, float | None] = {}
    for count in options.streams:
        streams = tuple(f"cam{i}" for i in range(count))
        case = NodeCase(STREAMS_TRANSPORT, fps, streams, options.frames, 0, frames.phantom, worker, carried)
        measure = _attempt(case, f"{count} stream(s)", notes)
        if measure is None:
            continue
        stage = {name: summarize(measure.stages[name]) for name in ("worker", "end to end") if measure.stages[name]}
        for name, timing in stage.items():
            timings[f"{count} streams {name}"] = timing
        if "worker" in stage:
            worker_p50[count] = stage["worker"].p50_ms
        if "end to end" in stage:
            e2e_p50[count] = stage["end to end"].p50_ms
        per_stream = [measure.throughput(sid) for sid in streams]
        known = [v for v in per_stream if v is not None]
        segment = measure.worker_latency.get("segment", {})
        segment_p50[count] = segment.get("p50")
        rows.append({"streams": count, "masks": sum(measure.masks.values()),
                     "worker p50 ms": stage["worker"].p50_ms if "worker" in stage else None,
                     "worker p95 ms": stage["worker"].p95_ms if "worker" in stage else None,
                     "segment p50 ms": segment.get("p50"),
                     "end to end p50 ms": stage["end to end"].p50_ms if "end to end" in stage else None,
                     "end to end p95 ms": stage["end to end"].p95_ms if "end to end" in stage else None,
                     "masks/s per stream (min)": min(known) if len(known) == count else None,
                     "masks/s total": round(sum(known), 3) if len(known) == count else None,
                     **_counter_columns(measure), **_rss_columns(measure)})
    ratios: dict[str, float | None] = {}
    if worker_p50:
        base = min(worker_p50)
        for count in sorted(worker_p50):
            if count != base:
                ratios[f"streams_{count}_vs_{base}_worker_per_frame"] = ratio(worker_p50[count], worker_p50[base])
                ratios[f"streams_{count}_vs_{base}_end_to_end"] = ratio(e2e_p50.get(count), e2e_p50.get(base))
                ratios[f"streams_{count}_vs_{base}_segment_per_frame"] = ratio(segment_p50.get(count),
                                                                               segment_p50.get(base))
    notes.append("each camera's ingest binds its own frame endpoint and the worker connects to all of them "
                 "(endpoints.frame_sources); worker = worker_in -> worker_out, waiting behind the other streams' "
                 "frames included; segment = the worker's own segmentation time per frame (start-up frames "
                 "included)")
    return Section(title="Node, one to several streams",
                   description=(f"N phantom cameras at {fps:g} fps each (one ingest process per camera) -> one worker "
                                f"({worker['engine']}) -> one publisher -> a display, over shared memory; one object "
                                f"clicked per stream, {options.frames} masks measured per stream"),
                   timings=timings, ratios=ratios, tables={"streams": rows}, notes=notes)


def _attempt(case: NodeCase, label: str, notes: list[str]) -> NodeMeasure | None:
    """``case`` measured (its notes added to ``notes``), or None with a note saying why it did not complete."""
    try:
        measure = measure_node(case)
    except BenchError as exc:
        notes.append(f"{label} did not complete: {exc}")
        return None
    notes.extend(measure.notes)
    return measure


def _p50(timings: dict[str, Timing], key: str) -> float | None:
    timing = timings.get(key)
    return timing.p50_ms if timing is not None else None


def in_process_times(options: BenchOptions, frames: BenchFrames) -> list[float]:
    """Milliseconds of ``Worker.accept`` + ``Worker.segment`` for ``options.frames`` frames in this process, with
    the node's worker settings and one object clicked at ``frames.centres`` on the first (untimed) frame."""
    settings = options.settings.model_copy(update={"worker": options.worker_settings(options.node_engine)})
    worker = Worker(settings)
    try:
        first = frames.frames[0]
        sid = first.stream_id
        worker.accept(first)
        x, y = frames.centres[0][0]
        reply = worker.handle_prompt(ClickPrompt(stream_id=sid, object_id=1, x=x, y=y, frame_id=first.frame_id))
        if not reply.ok:
            raise BenchError(f"the in-process click was refused: {reply.error}")
        worker.segment(sid)  # warm-up: the click's first segmentation
        times = []
        for k in range(1, options.frames + 1):
            frame = dataclasses.replace(frames.frames[k % len(frames.frames)], frame_id=first.frame_id + k, hops=[])
            start = time.perf_counter()
            worker.accept(frame)
            worker.segment(sid)
            times.append((time.perf_counter() - start) * 1000.0)
        return times
    finally:
        worker.close()


__all__ = ["carried_settings", "in_process_times", "node_section", "run", "streams_section", "worker_overrides"]
