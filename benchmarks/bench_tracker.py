"""SAM2 streaming memory over a long live stream: time and memory per frame stay flat.

    python benchmarks/bench_tracker.py [--frames 1000] [--image-size 128] [--device cpu|cuda]
                                       [--checkpoint PATH | --random-weights [--seed N]]
                                       [--height 64 --width 80] [--max-cond-frames 4]
                                       [--engine rgb|prompt|decoder]

One object is clicked on frame 0 (and corrected every 250 frames, so the conditioning cap is
exercised); every frame of a moving phantom is then tracked with ``Sam2Tracker``, or with
``--engine`` through that engine as the worker runs it (``prepare`` + ``segment``: for prompt and
decoder also the spectral maps and the guidance on every frame). Side by side in
the same run, on the same frames: the image-only path (one image-encoder run + one mask-decoder
run, as the image predictor does), so the cost of tracking (memory attention + memory encoder)
shows as a ratio. Prints JSON: median ms per frame for frames 100-200 and the last 100, peak RSS
after frame 200 and at the end, and the memory entries held per object over the run.
Speed only: random weights time the same as real ones.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.protocol import CubeFrame
from samsa_stream.settings import IngestSettings, PhantomSettings, WorkerSettings
from samsa_stream.spectral.angles import reference_spectrum
from samsa_stream.worker.engines import BUILDERS, ObjectMemory, SharedModel
from samsa_stream.worker.engines.sam2_engine import Sam2Engine
from samsa_stream.worker.engines.sam2_tracker import Sam2Tracker
from samsa_stream.worker.prompts import Click, TrackedObject


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="official SAM2/SAM2.1 checkpoint")
    weights.add_argument("--random-weights", action="store_true", help="seeded random weights (speed only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--max-cond-frames", type=int, default=4)
    parser.add_argument("--correct-every", type=int, default=250, help="a correction click every N frames")
    parser.add_argument("--engine", choices=("rgb", "prompt", "decoder"), help="run the whole engine, not the tracker")
    args = parser.parse_args()
    if args.frames < 300:
        parser.error("--frames must be at least 300 (frames 100-200 are compared with the last 100)")

    settings = WorkerSettings(engine=args.engine or "rgb", device=args.device, image_size=args.image_size,
                              seed=args.seed, checkpoint=args.checkpoint, random_weights=args.random_weights,
                              max_cond_frames=args.max_cond_frames)
    shared = SharedModel(settings)
    runner = shared.runner()
    cam = PhantomCamera(PhantomSettings(height=args.height, width=args.width, bands=16, objects=2, noise=0.0))
    # The phantom repeats with its motion period; normalize one period and replay it (not measured).
    period = 64
    normalize = Normalizer(IngestSettings())
    cubes = [normalize(cam.render(k), "bench", k, k) for k in range(period)]
    centres = [cam.centre(0, k) for k in range(period)]
    if args.engine:
        engine = BUILDERS[args.engine](settings, shared)
        assert isinstance(engine, Sam2Engine)
        step = engine_step(engine, cubes, centres)
    else:
        step = tracker_step(Sam2Tracker(runner, max_cond_frames=args.max_cond_frames), cubes, centres)

    track_ms: list[float] = []
    image_ms: list[float] = []
    entries: list[int] = []
    rss_at: dict[str, float] = {}
    for k in range(args.frames):
        rgb = cubes[k % period].rgb
        x, y = centres[k % period]
        point = np.array([[x, y]], dtype=np.float32)
        sync = torch.cuda.synchronize if runner.device.type == "cuda" else (lambda: None)
        started = time.perf_counter()
        held = step(k, k == 0 or k % args.correct_every == 0)
        sync()
        track_ms.append((time.perf_counter() - started) * 1000)
        entries.append(held)
        started = time.perf_counter()  # the image-only path on the same frame
        with torch.no_grad():
            runner.decode(runner.embed(rgb), point, np.array([1]), multimask=True)
        sync()
        image_ms.append((time.perf_counter() - started) * 1000)
        if k + 1 == 200:
            rss_at["frame_200"] = peak_rss_mib()
    rss_at["end"] = peak_rss_mib()

    early = slice(100, 200)
    late = slice(args.frames - 100, args.frames)
    t_early, t_late = statistics.median(track_ms[early]), statistics.median(track_ms[late])
    i_late = statistics.median(image_ms[late])
    print(json.dumps({
        "frames": args.frames, "path": f"engine {args.engine}" if args.engine else "tracker",
        "image_size": args.image_size, "device": str(runner.device),
        "weights": runner.loaded.source, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "track_ms_median": {"frames_100_200": round(t_early, 2), "last_100": round(t_late, 2),
                            "late_over_early": round(t_late / t_early, 3)},
        "image_only_ms_median_last_100": round(i_late, 2),
        "tracking_over_image_only": round(t_late / i_late, 3),
        "peak_rss_mib": {k: round(v, 1) for k, v in rss_at.items()},
        "rss_end_over_frame_200": round(rss_at["end"] / rss_at["frame_200"], 4),
        "memory_entries": {"max": max(entries), "frame_200": entries[199], "end": entries[-1]},
    }, indent=2))


def tracker_step(tracker: Sam2Tracker, frames: list[CubeFrame], centres: list[tuple[float, float]]):
    """One frame through the tracker (a click on frame 0 and on correction frames); memory entries held."""
    track = tracker.new_track()

    def step(k: int, click: bool) -> int:
        features = tracker.frame_features(frames[k % len(frames)].rgb)
        if k:
            tracker.track(track, k, features)
        if click:
            tracker.click(track, k, features, np.array([centres[k % len(frames)]], dtype=np.float32), np.array([1]))
        return track.memory_entries()

    return step


def engine_step(engine: Sam2Engine, frames: list[CubeFrame], centres: list[tuple[float, float]]):
    """One frame through the engine as the worker runs it (a click is added on frame 0 and on
    correction frames, then the frame segmented again, as after a prompt); memory entries held."""
    obj = TrackedObject(1, "object", (255, 0, 0))
    memory = ObjectMemory()

    def step(k: int, click: bool) -> int:
        frame = replace(frames[k % len(frames)], frame_id=k)
        ctx = engine.prepare(frame)
        if obj.clicks:
            seg = engine.segment(ctx, obj, memory)
        if click:
            x, y = centres[k % len(frames)]
            obj.clicks.append(Click(x, y, True, k, reference_spectrum(frame.cube, x, y, 1),
                                    np.asarray(frame.wavelengths_nm, dtype=np.float64)))
            seg = engine.segment(ctx, obj, memory)
        return seg.memory_frames

    return step


if __name__ == "__main__":
    main()
