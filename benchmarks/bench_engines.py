"""Per-frame time of the SAM2 engines against SAM2's own predictor, side by side in one run.

    python benchmarks/bench_engines.py [--device cpu|cuda] [--image-size N]
                                       [--checkpoint PATH | --random-weights [--seed N]]
                                       [--repeats 10] [--height 480 --width 640 --bands 100]

One model, one device, the same frame content for every method. Per repeat, in rotating order:
- bare: ``SAM2ImagePredictor.set_image`` + ``predict`` (one positive click, multimask, logits);
- rgb / prompt / decoder: ``engine.prepare`` (a new frame each time, so no embedding is reused)
  + ``engine.segment`` for one clicked object (spectral maps on the model's device included);
- second_object: one more object on the already prepared frame (prompt encoder + decoder only).
Prints medians (ms) and ratios to ``bare`` as JSON. Speed only: random weights time the same as real ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.protocol import CubeFrame
from samsa_stream.settings import IngestSettings, PhantomSettings, WorkerSettings
from samsa_stream.worker.engines import ObjectMemory
from samsa_stream.worker.engines.decoder import DecoderEngine
from samsa_stream.worker.engines.prompt import PromptEngine
from samsa_stream.worker.engines.rgb import RgbEngine
from samsa_stream.worker.engines.sam2_model import load_sam2
from samsa_stream.worker.engines.sam2_runner import Sam2Runner
from samsa_stream.worker.prompts import Click, TrackedObject


def make_frame(h: int, w: int, b: int) -> tuple[CubeFrame, list[tuple[float, float]]]:
    """A phantom frame through the real ingest normalizer, and the centres of two of its objects."""
    cam = PhantomCamera(PhantomSettings(height=h, width=w, bands=b, objects=2))
    frame = Normalizer(IngestSettings())(cam.render(0), "bench", 0, 0)
    return frame, [cam.centre(0, 0), cam.centre(1, 0)]


def tracked(frame: CubeFrame, object_id: int, x: float, y: float) -> TrackedObject:
    ref = frame.cube[int(y), int(x)].astype(np.float32)
    return TrackedObject(object_id, f"object {object_id}", (255, 0, 0),
                         [Click(x, y, True, frame.frame_id, ref, np.asarray(frame.wavelengths_nm))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--image-size", type=int, default=1024)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="official SAM2/SAM2.1 checkpoint")
    weights.add_argument("--random-weights", action="store_true",
                         help="SAM2.1 tiny (or --sam2-config) with random weights")
    parser.add_argument("--sam2-config", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bands", type=int, default=100)
    args = parser.parse_args()

    settings = WorkerSettings(engine="rgb", device=args.device, image_size=args.image_size, checkpoint=args.checkpoint,
                              random_weights=args.random_weights, seed=args.seed, sam2_config=args.sam2_config)
    runner = Sam2Runner(load_sam2(settings))
    device = runner.device
    frame, centres = make_frame(args.height, args.width, args.bands)
    first, second = (tracked(frame, i + 1, x, y) for i, (x, y) in enumerate(centres))
    engines = {"rgb": RgbEngine(runner, settings), "prompt": PromptEngine(runner, settings),
               "decoder": DecoderEngine(runner, settings)}

    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(runner.model)
    s = runner.image_size
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]  # hard-coded for 1024 there
    click = np.array([centres[0]], dtype=np.float32)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    counter = iter(range(1, 1 << 30))

    def fresh_frame() -> CubeFrame:  # a new frame object (same content) so the embedding cache never hits
        return dataclasses.replace(frame, frame_id=next(counter))

    def bare() -> None:
        with runner.autocast():
            predictor.set_image(frame.rgb)
            predictor.predict(click, np.array([1]), multimask_output=True, return_logits=True)

    def engine_run(name: str) -> Callable[[], None]:
        engine = engines[name]
        return lambda: engine.segment(engine.prepare(fresh_frame()), first, ObjectMemory()) and None

    def second_object(name: str) -> Callable[[], None]:
        engine = engines[name]
        ctx = engine.prepare(fresh_frame())
        return lambda: engine.segment(ctx, second, ObjectMemory()) and None

    methods: dict[str, Callable[[], None]] = {"bare": bare}
    methods.update({name: engine_run(name) for name in engines})
    methods.update({f"{name}_second_object": second_object(name) for name in engines})
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for repeat in range(args.warmup + args.repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]  # rotate to spread drift
        for name in order:
            sync()
            start = time.perf_counter()
            methods[name]()
            sync()
            if repeat >= args.warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    median = {name: round(statistics.median(v), 3) for name, v in times.items()}
    memory: dict[str, float] = {}
    if device.type == "cuda":  # peak device memory of one more run of each method, above what was held before it
        for name in names:
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            methods[name]()
            torch.cuda.synchronize()
            memory[name] = round((torch.cuda.max_memory_allocated(device) - held) / 2**20, 1)
    print(json.dumps({
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "model": runner.loaded.variant.name, "weights": runner.loaded.source,
        "image_size": runner.image_size, "frame_hwb": [args.height, args.width, args.bands],
        "autocast": str(runner.loaded.autocast_dtype), "repeats": args.repeats,
        "median_ms": median,
        "ratio_to_bare": {name: round(median[name] / median["bare"], 3) for name in engines},
        "second_object_ratio_to_frame": {name: round(median[f"{name}_second_object"] / median[name], 3)
                                         for name in engines},
        "cuda_peak_mib_above_held": memory or None,
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
