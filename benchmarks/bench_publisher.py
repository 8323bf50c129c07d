"""Publisher time per result: what each broadcast costs, for a 480 x 640 frame with 3 objects.

    python benchmarks/bench_publisher.py [--repeats 200] [--height 480 --width 640] [--objects 3]
                                         [--format jpeg|png]

Per repeat, on the same phantom frame and masks (a new result each time):
- publish: ``Publisher.publish`` whole (masks run-length encoded, stream message, overlay drawn
  and encoded, the bare pseudo-RGB encoded), as the publisher process runs it per result;
- its parts: mask encoding alone (``MaskBroadcast.to_parts``), overlay drawing alone
  (``render_overlay``), image encoding alone (the overlay's ``encode_image``);
- the reference: ``cv2.imencode`` of the bare frame at the same quality (the least any display
  that shows the picture needs).
Prints medians (ms), the bytes of each message per result, and ratios as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import cv2

from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.protocol import MaskBroadcast, ObjectMask, SegmentationResult, encode_image
from samsa_stream.publisher.overlay import render_overlay
from samsa_stream.publisher.process import Publisher
from samsa_stream.settings import PhantomSettings, load_settings
from samsa_stream.spectral.pseudo_rgb import render_pseudo_rgb


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    args = parser.parse_args()

    settings = load_settings(overrides={"publisher": {"overlay_format": args.format}})
    cam = PhantomCamera(PhantomSettings(height=args.height, width=args.width, bands=32, objects=args.objects))
    capture = cam.render(0)
    rgb = render_pseudo_rgb(capture.cube, cam.wavelengths_nm)
    labels = cam.labels(0)
    objects = [ObjectMask(k + 1, f"object {k + 1}", (230, 40 * k, 60), labels == k + 1, 0.9)
               for k in range(args.objects)]
    if any(not o.mask.any() for o in objects):
        parser.error("the phantom frame does not show every object; use fewer --objects")
    publisher = Publisher(settings)
    count = iter(range(10**9))

    def result() -> SegmentationResult:
        return SegmentationResult("cam0", next(count), time.time_ns(), rgb, objects, "spectral",
                                  wavelengths_nm=[float(v) for v in cam.wavelengths_nm])

    sizes: dict[str, int] = {}
    for parts in publisher.publish(result()):
        kind = bytes(parts[0]).split(b"/")[0].decode()
        sizes[kind] = sum(len(memoryview(p).cast("B")) for p in parts)
    cfg = settings.publisher
    overlay = render_overlay(rgb, objects, cfg.overlay_alpha)
    masks = MaskBroadcast("cam0", 1, 1, rgb.shape[:2], objects, "spectral")
    quality = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if args.format == "jpeg" else []
    ext = ".jpg" if args.format == "jpeg" else ".png"
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    figures = {
        "publish": median_ms(lambda: list(publisher.publish(result())), args.repeats),
        "mask_encoding": median_ms(masks.to_parts, args.repeats),
        "overlay_drawing": median_ms(lambda: render_overlay(rgb, objects, cfg.overlay_alpha), args.repeats),
        "overlay_encoding": median_ms(lambda: encode_image(overlay, args.format, cfg.jpeg_quality), args.repeats),
        "reference_bare_imencode": median_ms(lambda: cv2.imencode(ext, bgr, quality), args.repeats),
    }
    print(json.dumps({
        "frame": [args.height, args.width], "objects": args.objects, "format": args.format,
        "repeats": args.repeats, "machine": platform.machine(), "cv2_threads": cv2.getNumThreads(),
        "median_ms": figures,
        "publish_over_bare_imencode": round(figures["publish"] / figures["reference_bare_imencode"], 2),
        "bytes_per_result": sizes,
        "results_per_s_one_core": round(1000 / figures["publish"], 1),
    }, indent=2))


if __name__ == "__main__":
    main()
