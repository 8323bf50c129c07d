"""Capture formats to the node's layout: each reader's capture brought to a C-contiguous float32 (H, W, B) cube,
and the whole file -> frame path of the ingest process (normalizer and pseudo-RGB), against a memcpy.

The captures are written to a temporary folder first and read once untimed, so the page cache is warm:
this measures the node, not the disk.
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..ingest.capture import Capture, SourceError
from ..ingest.formats import open_captures
from ..ingest.formats.envi import write_envi
from ..ingest.formats.layout import to_float32
from ..ingest.normalize import Normalizer
from ..settings import IngestSettings
from .options import BenchFrames, BenchOptions
from .report import Section, Timing
from .stats import interleaved, ratio, summarize


def write_cases(folder: Path, cube: np.ndarray) -> dict[str, Path]:
    """The benchmark captures of reflectance ``cube`` (H, W, B) float32: ENVI float32 BIL, BIP and BSQ
    (400-1000 nm) and BIP big endian, ENVI int16 with a reflectance scale factor (BSQ, big endian), ENVI
    uint16 raw counts with white/dark references (a HELICoiD-style folder) and TIVITA (500-1000 nm, stored
    x-major, y flipped)."""
    h, w, b = cube.shape
    wl = np.linspace(400.0, 1000.0, b)
    cases: dict[str, Path] = {}
    for interleave in ("bil", "bip", "bsq"):
        cases[f"envi_float32_{interleave}"] = folder / f"f32_{interleave}.hdr"
        write_envi(cases[f"envi_float32_{interleave}"], cube, wl, interleave=interleave)
    cases["envi_float32_bip_big_endian"] = folder / "f32_bip_big.hdr"
    write_envi(cases["envi_float32_bip_big_endian"], cube, wl, interleave="bip", byte_order="big")
    cases["envi_int16_scaled_bsq_big_endian"] = folder / "i16_bsq_big.hdr"
    write_envi(cases["envi_int16_scaled_bsq_big_endian"], np.round(cube * 10000).astype(np.int16), wl,
               interleave="bsq", byte_order="big", reflectance_scale_factor=10000)
    raw = folder / "helicoid"
    raw.mkdir()
    write_envi(raw / "raw.hdr", np.round(100 + cube * 3000).astype(np.uint16), wl, interleave="bil", data_suffix="")
    for name, level in (("whiteReference", 3100), ("darkReference", 100)):
        write_envi(raw / f"{name}.hdr", np.full((16, w, b), level, np.uint16), wl, interleave="bil", data_suffix="")
    cases["helicoid_uint16_raw_calibrated"] = raw
    tivita = folder / "capture_SpecCube.dat"
    with open(tivita, "wb") as fh:
        np.array([w, h, b], dtype=">i4").tofile(fh)
        np.ascontiguousarray(np.rot90(cube, k=-1), dtype=">f4").tofile(fh)
    cases["tivita"] = tivita
    return cases


def _first(path: Path) -> Capture:
    item = next(iter(open_captures(path)))
    if isinstance(item, SourceError):
        raise item
    return item


def mapped(cube: np.ndarray) -> bool:
    """Whether ``cube`` views a memory-mapped file (its pages are read only when touched)."""
    base: object = cube
    while base is not None:
        if isinstance(base, np.memmap | mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def to_layout(cube: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The reader's cube as the node holds it: C-contiguous float32 (H, W, B) in memory, converted into ``out``
    as the normalizer converts it, or as it is where the reader made it so already."""
    if cube.dtype == np.float32 and cube.flags.c_contiguous and not mapped(cube):
        return cube
    return to_float32(cube, out=out)


def _layout(path: Path, out: np.ndarray) -> Callable[[], object]:
    return lambda: to_layout(_first(path).cube, out)


def _frame(path: Path, normalizer: Normalizer) -> Callable[[], object]:
    return lambda: normalizer(_first(path), "bench", 0, 0)


def run(options: BenchOptions, frames: BenchFrames) -> dict[str, Section]:
    cube = np.ascontiguousarray(frames.frames[0].cube, dtype=np.float32)
    target = np.empty_like(cube)
    np.copyto(target, cube)
    normalizer = Normalizer(IngestSettings())
    with tempfile.TemporaryDirectory(prefix="samsa-bench-") as tmp:
        paths = write_cases(Path(tmp), cube)
        calls: dict[str, Callable[[], object]] = {"memcpy": lambda: np.copyto(target, cube)}
        for name, path in paths.items():
            calls[f"{name} to layout"] = _layout(path, target)
            calls[f"{name} to frame"] = _frame(path, normalizer)
        times = interleaved(calls, options.frames)
        stored = {name: str(_first(path).metadata.get("stored_dtype")) for name, path in paths.items()}
    timings: dict[str, Timing] = {name: summarize(t) for name, t in times.items()}
    floor = timings["memcpy"].p50_ms
    rows = []
    ratios: dict[str, float | None] = {}
    for name in paths:
        layout, frame = timings[f"{name} to layout"], timings[f"{name} to frame"]
        rows.append({"format": name, "stored": stored[name], "layout_p50_ms": layout.p50_ms,
                     "layout_vs_memcpy": ratio(layout.p50_ms, floor), "frame_p50_ms": frame.p50_ms,
                     "frame_p95_ms": frame.p95_ms, "frame_vs_memcpy": ratio(frame.p50_ms, floor),
                     "frames_per_s": round(1000.0 / frame.p50_ms, 1)})
        ratios[f"{name}_layout_vs_memcpy"] = ratio(layout.p50_ms, floor)
    h, w, b = cube.shape
    return {"ingest": Section(
        title="Capture formats to the node's layout",
        description=(f"{h} x {w} x {b}, page cache warm. 'to layout': the reader's capture as the C-contiguous "
                     "float32 (H, W, B) cube the node holds (converted as the normalizer converts it); 'to frame': "
                     "file to the frame the ingest sends (calibration, scaling, checks, pseudo-RGB)."),
        timings=timings, tables={"formats": rows}, ratios=ratios)}
