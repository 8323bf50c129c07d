"""Write throughput of the recorder (recording.writer) per chunk compression, and the file size it makes.

    python benchmarks/bench_record.py [--height 480 --width 640 --bands 100] [--frames 20]
                                      [--compress none lz4 zstd] [--dtype float32 float16] [--dir /tmp] [--fsync]

The write path alone, in one process: real CubeFrame messages (phantom captures, normalized as the
ingest does) encoded as the recording stores them and written through the MCAP writer into a file
in ``--dir``, as fast as possible (the file lands in the page cache unless ``--fsync``; ``--null``
writes to no file at all, which measures the CPU cost alone). Per
compression and cube type (printed as JSON): MiB/s of message data and frames/s, the bytes one
frame takes in the file, and the file size per minute at 10 frames/s (frames only; masks and
overlays add well under 1 %). The live path needs frames/s above the camera's rate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.protocol import CubeFrame
from samsa_stream.recording.recorder import Entry, encode
from samsa_stream.recording.writer import RecordingWriter, WriterOptions
from samsa_stream.settings import IngestSettings, PhantomSettings


def frames_of(height: int, width: int, bands: int, distinct: int = 3) -> list[CubeFrame]:
    camera = PhantomCamera(PhantomSettings(height=height, width=width, bands=bands))
    normalize = Normalizer(IngestSettings())
    return [normalize(camera.render(k), "cam0", k, 10**9 + k * 10**8) for k in range(distinct)]


class NullFile:
    """Discards what is written, counting it: the write path's CPU cost without the disk's."""

    def __init__(self, path: Path) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        NullFile.last_size = self.size

    last_size = 0


def run(frames: list[CubeFrame], count: int, compression: str, dtype: str, folder: Path | None,
        fsync: bool) -> dict:
    path = (folder or Path("/nonexistent")) / f"bench-{compression}-{dtype}.mcap"
    if folder is not None:
        path.unlink(missing_ok=True)
    sources = [replace(f, cube=f.cube.astype(dtype)) for f in frames]
    message_bytes = 0
    options = WriterOptions(compression=compression, fsync=fsync)  # type: ignore[arg-type]
    writer = RecordingWriter(path, options, {"bench": "1"}, *([] if folder else [NullFile]))  # type: ignore[list-item]
    start = time.perf_counter()
    for k in range(count):
        frame = replace(sources[k % len(sources)], frame_id=k, capture_ns=10**9 + k * 10**8)
        data = encode(Entry("frame", "cam0", frame))
        message_bytes += len(data)
        writer.write("frame", "cam0", data, frame.capture_ns, frame.capture_ns)
    writer.close()
    seconds = time.perf_counter() - start
    if folder is None:
        size = NullFile.last_size
    else:
        size = path.stat().st_size
        path.unlink()
    per_frame = size / count
    return {"compress": compression, "dtype": dtype, "frames": count, "seconds": round(seconds, 3),
            "mib_per_s": round(message_bytes / 2**20 / seconds, 1), "frames_per_s": round(count / seconds, 2),
            "file_mib_per_frame": round(per_frame / 2**20, 2),
            "ratio": round(size / message_bytes, 3),
            "gib_per_minute_at_10fps": round(per_frame * 600 / 2**30, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bands", type=int, default=100)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--compress", nargs="+", default=["none", "lz4", "zstd"])
    parser.add_argument("--dtype", nargs="+", default=["float32"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="folder of the files written (the disk measured)")
    parser.add_argument("--null", action="store_true", help="write to no file: the CPU cost alone")
    parser.add_argument("--fsync", action="store_true", help="sync every chunk to disk")
    args = parser.parse_args()
    frames = frames_of(args.height, args.width, args.bands)
    cube = frames[0].cube
    out: dict[str, object] = {"cube": [*cube.shape], "cube_mib": round(cube.nbytes / 2**20, 1), "fsync": args.fsync,
                              "sink": "null" if args.null else str(args.dir), "runs": []}
    for dtype in args.dtype:
        for compression in args.compress:
            out["runs"].append(run(frames, args.frames, compression, dtype, None if args.null else args.dir,
                                  args.fsync))  # type: ignore[union-attr]
    print(json.dumps(out, indent=2))
    assert np.isfinite(cube).all()


if __name__ == "__main__":
    main()
