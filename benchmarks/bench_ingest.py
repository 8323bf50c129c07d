"""Capture formats to the node's layout and file -> frame per format, against a memcpy of the cube.

    python benchmarks/bench_ingest.py [samsa-stream bench flags, e.g. --size 480x640x100 --frames 15]

The same as ``samsa-stream bench --sections ingest`` (bench.json/bench.md under --out, ratios printed);
``--set threads.tools=1`` times it with one thread, as a one-core ingest process has.
"""

import sys

from samsa_stream.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--sections", "ingest", *sys.argv[1:]]))
