"""Each engine's per-frame time (clicked, tracked, second object) against the bare SAM2ImagePredictor.

    python benchmarks/bench_engines.py --random-weights --image-size 256 [samsa-stream bench flags]
    python benchmarks/bench_engines.py --device cuda --checkpoint sam2.1_hiera_tiny.pt

The same as ``samsa-stream bench --sections models`` (bench.json/bench.md under --out, ratios printed).
"""

import sys

from samsa_stream.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--sections", "models", *sys.argv[1:]]))
