"""The floor and the spectral-angle map: one memcpy of the cube against the map in numpy (the spectral
engine's path), in torch on the run's device (the SAM2 engines' path) and SPy's float64
``spectral_angles`` when SPy is installed; alone and with CPU-bound processes beside them."""

from __future__ import annotations

from collections.abc import Callable
from itertools import cycle

import numpy as np

from ..spectral.angles import PixelSpectra, spectral_angles
from .contention import busy_processes
from .options import BenchFrames, BenchOptions
from .report import Section
from .stats import interleaved, ratio, summarize


def _spy() -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    try:
        import spectral
    except ImportError:
        return None
    return spectral.spectral_angles


def cases(options: BenchOptions, frames: BenchFrames) -> dict[str, Callable[[], object]]:
    """The timed calls, each on the next of the shared frames (all the same size)."""
    import torch

    from ..worker.engines import torch_angles

    cubes = [f.cube for f in frames.frames]
    refs = [f.cube[int(c[0][1]), int(c[0][0])][None].astype(np.float32)
            for f, c in zip(frames.frames, frames.centres, strict=True)]
    target = np.empty_like(cubes[0])
    np.copyto(target, cubes[0])  # the copy's target pages are touched once, as a ring slot's are in steady state
    device = torch.device("cuda" if options.device == "cuda" or
                          (options.device == "auto" and torch.cuda.is_available()) else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    nxt = cycle(range(len(cubes)))
    spectra = PixelSpectra.of(cubes[0])
    spectra.angles(refs[0])  # its norms are kept: later maps are the second object's cost

    def torch_map() -> None:
        k = next(nxt)
        torch_angles.spectral_angles(torch_angles.cube_to_device(cubes[k], device), refs[k])
        sync()

    out: dict[str, Callable[[], object]] = {
        "memcpy": lambda: np.copyto(target, cubes[next(nxt)]),
        "angles_numpy": lambda: spectral_angles(cubes[(k := next(nxt))], refs[k]),
        "angles_numpy_next_object": lambda: spectra.angles(refs[next(nxt)]),
        f"angles_torch_{device.type}": torch_map,
    }
    spy = _spy()
    if spy is not None:
        cubes64 = [c.astype(np.float64) for c in cubes[:2]]  # converting is not timed: SPy's own input type
        out["angles_spy_float64"] = lambda: spy(cubes64[(k := next(nxt) % 2)], refs[k].astype(np.float64))
    return out


def run(options: BenchOptions, frames: BenchFrames) -> dict[str, Section]:
    calls = cases(options, frames)
    alone = {name: summarize(t) for name, t in interleaved(calls, options.frames).items()}
    with busy_processes(options.contention):
        contended = {name: summarize(t) for name, t in interleaved(calls, options.frames).items()}
    torch_case = next(name for name in calls if name.startswith("angles_torch_"))
    p50 = {name: t.p50_ms for name, t in alone.items()}
    busy = {name: t.p50_ms for name, t in contended.items()}
    h, w, b = options.size
    timings = dict(alone)
    timings.update({f"{name} +{options.contention} busy": t for name, t in contended.items()})
    section = Section(
        title="Spectral-angle map against the memcpy floor",
        description=(f"One {h} x {w} x {b} float32 cube and one reference per call, on {len(frames.frames)} frames in "
                     f"turn; each case alone, then with {options.contention} CPU-bound processes beside it. "
                     "memcpy: np.copyto into an array whose pages are already touched. angles_numpy: the pixel "
                     "norms and the map (the first object on a frame); angles_numpy_next_object: a further map "
                     "with the norms kept."),
        timings=timings,
        figures={"cube_mib": round(h * w * b * 4 / 2**20, 1), "busy_processes": options.contention,
                 "spy": "angles_spy_float64" in calls},
        ratios={
            "angles_vs_memcpy": ratio(p50["angles_numpy"], p50["memcpy"]),
            "angles_next_object_vs_memcpy": ratio(p50["angles_numpy_next_object"], p50["memcpy"]),
            "angles_torch_vs_memcpy": ratio(p50[torch_case], p50["memcpy"]),
            "angles_vs_spy": ratio(p50["angles_numpy"], p50.get("angles_spy_float64")),
            "angles_contended_vs_alone": ratio(busy["angles_numpy"], p50["angles_numpy"]),
            "angles_torch_contended_vs_alone": ratio(busy[torch_case], p50[torch_case]),
            "memcpy_contended_vs_alone": ratio(busy["memcpy"], p50["memcpy"]),
            "angles_spy_contended_vs_alone": ratio(busy.get("angles_spy_float64"), p50.get("angles_spy_float64")),
        })
    if "angles_spy_float64" not in calls:
        section.notes.append("SPy is not installed: no SPy comparison (pip install spectral)")
    return {"compute": section}
