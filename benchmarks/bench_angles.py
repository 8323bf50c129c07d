"""The spectral-angle map against a memcpy of the cube and SPy, alone and beside busy processes.

    python benchmarks/bench_angles.py [samsa-stream bench flags, e.g. --size 480x640x100 --frames 20]

The same as ``samsa-stream bench --sections compute`` (bench.json/bench.md under --out, ratios printed).
"""

import sys

from samsa_stream.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--sections", "compute", *sys.argv[1:]]))
