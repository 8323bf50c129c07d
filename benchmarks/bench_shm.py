"""Memory and write time of the same-host frame ring (transport.shm) for one camera.

    python benchmarks/bench_shm.py [--height 480 --width 640 --bands 100] [--slots 4 8] [--repeats 7]

Per slot count (printed as JSON): the ring's size, the shared memory it holds (resident pages of
the segment under /dev/shm) after the first frame and after every slot was written once, the
median time of a slot's first write (which allocates its pages) and of later writes, next to a
plain copy of the cube into memory already in use (the reference: the least any path that
hands the cube to another process must spend).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from samsa_stream.transport.shm import SHM_DIR, ShmWriter


def resident_mib(name: str) -> float:
    return round(os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512 / 2**20, 1)


def median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bands", type=int, default=100)
    parser.add_argument("--slots", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cube = np.random.default_rng(0).random((args.height, args.width, args.bands), dtype=np.float32)
    out: dict[str, object] = {"cube_mib": round(cube.nbytes / 2**20, 1)}
    copies = []
    target = np.empty_like(cube)
    np.copyto(target, cube)  # fault the target's pages in first, as the ring's steady state has them
    for _ in range(args.repeats):
        start = time.perf_counter()
        np.copyto(target, cube)
        copies.append(time.perf_counter() - start)
    out["reference_copy_ms"] = median_ms(copies)
    for slots in args.slots:
        writer = ShmWriter("bench", slots)
        try:
            fresh = []  # the first write into each slot allocates its pages
            for _ in range(slots):
                start = time.perf_counter()
                ref = writer.put(cube)
                fresh.append(time.perf_counter() - start)
                if len(fresh) == 1:
                    after_first = resident_mib(ref.name)
            steady = []  # later writes reuse the slots' pages
            for _ in range(args.repeats):
                start = time.perf_counter()
                ref = writer.put(cube)
                steady.append(time.perf_counter() - start)
            out[f"slots_{slots}"] = {
                "ring_mib": round(os.stat(os.path.join(SHM_DIR, ref.name)).st_size / 2**20, 1),
                "resident_after_first_frame_mib": after_first, "resident_after_every_slot_mib": resident_mib(ref.name),
                "first_write_per_slot_ms_median": median_ms(fresh), "write_ms_median": median_ms(steady)}
        finally:
            writer.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
