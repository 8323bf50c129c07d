"""Ingest speed: read + normalize + pseudo-RGB per frame for a 480 x 640 x 100 capture.

    python benchmarks/bench_ingest.py [--repeats 7] [--height 480 --width 640 --bands 100]

Writes one capture per case to a temporary folder (so the page cache is warm: this measures
the node, not the disk), then times each stage per frame and prints medians (ms) as JSON:
- memcpy (top level): np.copyto of the float32 (H, W, B) cube into an allocated, touched array: the
  reference the layout conversion is held to (at most 2x);
- convert: the stored values (memory map: interleave, byte order, dtype) -> C-ordered float32 (H, W, B)
  in an allocated, touched array, as ingest converts them (blocked, on the block pool);
  convert_numpy: the same with one plain ``np.copyto`` (numpy's strided copy, for comparison);
  ratios are to memcpy;
- read: open the capture and bring its stored values into memory (as stored: dtype, layout);
- normalize: the Normalizer on that capture (checks, cast/scale/calibrate, NaN check, pseudo-RGB: one
  blocked pass) less pseudo_rgb, an estimate of its share;
- pseudo_rgb: render_pseudo_rgb (projection + sRGB LUT) run on its own on the normalized cube;
- total: file -> frame as the ingest process runs it (open + Normalizer on the memory map), timed whole;
  total_ratio is to memcpy.
The block pool has one thread per usable core here (ingest sizes it from ``threads.ingest``).

On a host busy with other work, multi-threaded BLAS makes the pseudo-RGB projection (a tall
(H*W, B) @ (B, 3) product) several times slower; compare with OPENBLAS_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from samsa_stream.ingest.formats import open_captures
from samsa_stream.ingest.formats.envi import read_envi, write_envi
from samsa_stream.ingest.formats.layout import to_float32
from samsa_stream.ingest.formats.tivita import read_tivita_cube
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources.base import Capture
from samsa_stream.protocol import CubeFrame
from samsa_stream.settings import IngestSettings
from samsa_stream.spectral.pseudo_rgb import PROJECTIONS, choose_projection, render_pseudo_rgb
from samsa_stream.threads import configure, configured


def write_cases(folder: Path, h: int, w: int, b: int) -> dict[str, Path]:
    """The benchmark captures: ENVI float32 (bil, 400-1000 nm: colorimetric pseudo-RGB), ENVI float32 (bip,
    big endian), ENVI int16 with a reflectance scale factor (bsq, big endian), ENVI uint16 raw counts with
    white/dark references (bil, a HELICoiD-style folder), and TIVITA (500-1000 nm: band-window pseudo-RGB)."""
    rng = np.random.default_rng(0)
    refl = rng.uniform(0.05, 0.95, (h, w, b)).astype(np.float32)
    wl = np.linspace(400.0, 1000.0, b)
    write_envi(folder / "envi_f32_bil.hdr", refl, wl, interleave="bil")
    write_envi(folder / "envi_f32_bip_big.hdr", refl, wl, interleave="bip", byte_order="big")
    write_envi(folder / "envi_i16_scaled_bsq_big.hdr", np.round(refl * 10000).astype(np.int16), wl, interleave="bsq",
               byte_order="big", reflectance_scale_factor=10000)
    raw_dir = folder / "helicoid_u16_raw"
    raw_dir.mkdir()
    write_envi(raw_dir / "raw.hdr", np.round(100 + refl * 3000).astype(np.uint16), wl, interleave="bil", data_suffix="")
    write_envi(raw_dir / "whiteReference.hdr", np.full((16, w, b), 3100, np.uint16), wl, interleave="bil",
               data_suffix="")
    write_envi(raw_dir / "darkReference.hdr", np.full((16, w, b), 100, np.uint16), wl, interleave="bil", data_suffix="")
    tivita = folder / "tivita_SpecCube.dat"
    with open(tivita, "wb") as fh:
        np.array([w, h, b], dtype=">i4").tofile(fh)
        np.ascontiguousarray(np.rot90(refl, k=-1), dtype=">f4").tofile(fh)  # stored x-major, y flipped
    return {"envi_float32_bil": folder / "envi_f32_bil.hdr",
            "envi_float32_bip_big_endian": folder / "envi_f32_bip_big.hdr",
            "envi_int16_scaled_bsq_big_endian": folder / "envi_i16_scaled_bsq_big.hdr",
            "helicoid_uint16_raw_calibrated": raw_dir, "tivita": tivita}


T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000.0, out


def _read(path: Path) -> Capture:
    capture = next(iter(open_captures(path)))
    capture.cube = np.array(capture.cube)  # bring the stored values into memory, as stored
    return capture


def _stored(path: Path) -> np.ndarray:
    """The capture's stored values as an (H, W, B) memory-mapped view (no conversion)."""
    if path.is_dir():
        return read_envi(path / "raw.hdr").cube
    if path.suffix == ".dat":
        return read_tivita_cube(path)
    return read_envi(path).cube


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: page cache, allocator, pool threads
    return statistics.median(_timed(fn)[0] for _ in range(repeats))


def memcpy_ms(shape: tuple[int, int, int], repeats: int) -> float:
    """np.copyto of a float32 cube into an allocated, already touched array."""
    src = np.random.default_rng(1).random(shape, dtype=np.float32)
    dst = np.zeros_like(src)
    return _median_ms(partial(np.copyto, dst, src), repeats)


def _file_to_frame(normalizer: Normalizer, path: Path, frame_id: int) -> CubeFrame:
    return normalizer(next(iter(open_captures(path))), "bench", frame_id, 0)


def bench_convert(path: Path, repeats: int, memcpy: float) -> dict[str, object]:
    """Stored view -> float32 (H, W, B) into a touched array: blocked (as ingest does) and plain numpy."""
    stored = _stored(path)
    dst = np.zeros(stored.shape, dtype=np.float32)
    fresh = partial(lambda: to_float32(_stored(path), out=dst))  # reopen: a new memory map per frame
    plain = partial(lambda: np.copyto(dst, _stored(path), casting="unsafe"))
    convert, numpy_copy = _median_ms(fresh, repeats), _median_ms(plain, repeats)
    return {"layout": f"{stored.dtype.str} strides {list(stored.strides)}", "convert_ms": round(convert, 1),
            "convert_ratio": round(convert / memcpy, 2), "convert_numpy_ms": round(numpy_copy, 1),
            "convert_numpy_ratio": round(numpy_copy / memcpy, 2)}


def bench_case(path: Path, repeats: int, memcpy: float) -> dict[str, object]:
    normalizer = Normalizer(IngestSettings())
    read, normalize, rgb, total = [], [], [], []
    frame = None
    for k in range(repeats):
        # partial binds this iteration's values now (a lambda would read the loop variables when called)
        t_read, capture = _timed(partial(_read, path))
        t_norm, frame = _timed(partial(normalizer, capture, "bench", k, 0))
        weights = PROJECTIONS[choose_projection(frame.wavelengths_nm)](frame.wavelengths_nm)  # cached in the node
        t_rgb, _ = _timed(partial(render_pseudo_rgb, frame.cube, frame.wavelengths_nm, weights=weights))
        t_total, _ = _timed(partial(_file_to_frame, normalizer, path, k))
        read.append(t_read)
        normalize.append(max(t_norm - t_rgb, 0.0))
        rgb.append(t_rgb)
        total.append(t_total)
    if frame is None:
        raise RuntimeError("--repeats must be at least 1")
    med = statistics.median
    return {**bench_convert(path, repeats, memcpy), "shape": list(frame.cube.shape),
            "stored": next(iter(open_captures(path))).metadata.get("stored_dtype"),
            "projection": "colorimetric" if frame.wavelengths_nm[0] <= 400 else "windows",
            "read_ms": round(med(read), 1), "normalize_ms": round(med(normalize), 1),
            "pseudo_rgb_ms": round(med(rgb), 1), "total_ms": round(med(total), 1),
            "total_best_ms": round(min(total), 1), "total_ratio": round(med(total) / memcpy, 2),
            "total_fps": round(1000.0 / med(total), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bands", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="block pool threads (0: one per usable core)")
    args = parser.parse_args()
    if args.threads:
        configure(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        cases = write_cases(Path(tmp), args.height, args.width, args.bands)
        memcpy = memcpy_ms((args.height, args.width, args.bands), args.repeats)
        results = {name: bench_case(path, args.repeats, memcpy) for name, path in cases.items()}
    print(json.dumps({"frame": [args.height, args.width, args.bands], "repeats": args.repeats,
                      "statistic": "median ms per frame", "memcpy_ms": round(memcpy, 2),
                      "block_threads": configured(), "cpu_count": os.cpu_count(),
                      "load_average": [round(v, 2) for v in os.getloadavg()],
                      "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                      "python": platform.python_version(), "numpy": np.__version__, "cases": results}, indent=2))


if __name__ == "__main__":
    main()
