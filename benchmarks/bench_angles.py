"""Spectral-angle map speed for a 480 x 640 x 100 float32 cube and one clicked reference.

    python benchmarks/bench_angles.py [--repeats 7] [--height 480 --width 640 --bands 100] [--references 1]

Cases (medians in ms, printed as JSON):
- numpy: ``spectral.angles.spectral_angles`` (the spectral engine's path, float32);
- torch_cpu: ``worker.engines.torch_angles`` on the CPU (the SAM2 engines' path on a CPU node);
- torch_cuda_resident / torch_cuda_with_upload (when CUDA is available): the cube already on the GPU,
  and including the host-to-device copy of the cube;
- spy_float64: SPy's ``spectral_angles`` on the same data as float64 (the conversion is not timed).
``speedup_vs_spy`` = spy_float64 / case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from samsa_stream.spectral.angles import spectral_angles as numpy_angles
from samsa_stream.worker.engines import torch_angles


def median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()  # warm-up (allocations, kernels)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bands", type=int, default=100)
    parser.add_argument("--references", type=int, default=1)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    cube = rng.uniform(0.05, 0.95, (args.height, args.width, args.bands)).astype(np.float32)
    refs = cube[rng.integers(0, args.height, args.references), rng.integers(0, args.width, args.references)]
    cpu = torch.device("cpu")
    cases: dict[str, float] = {
        "numpy": median_ms(lambda: numpy_angles(cube, refs), args.repeats),
        "torch_cpu": median_ms(lambda: torch_angles.spectral_angles(torch_angles.cube_to_device(cube, cpu), refs),
                               args.repeats),
    }
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        resident = torch_angles.cube_to_device(cube, gpu)
        sync = torch.cuda.synchronize
        cases["torch_cuda_resident"] = median_ms(lambda: torch_angles.spectral_angles(resident, refs), args.repeats,
                                                 sync)
        cases["torch_cuda_with_upload"] = median_ms(
            lambda: torch_angles.spectral_angles(torch_angles.cube_to_device(cube, gpu), refs), args.repeats, sync)
    import spectral

    cube64 = cube.astype(np.float64)
    cases["spy_float64"] = median_ms(lambda: spectral.spectral_angles(cube64, refs.astype(np.float64)), args.repeats)
    check = np.abs(torch_angles.spectral_angles(torch.from_numpy(cube), refs).numpy()
                   - spectral.spectral_angles(cube64, refs.astype(np.float64))).max()
    print(json.dumps({
        "cube_hwb": [args.height, args.width, args.bands], "references": args.references, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "median_ms": cases,
        "speedup_vs_spy": {k: round(cases["spy_float64"] / v, 2) for k, v in cases.items() if k != "spy_float64"},
        "max_abs_diff_vs_spy_rad": float(check),
    }, indent=2))


if __name__ == "__main__":
    main()
