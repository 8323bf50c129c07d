"""``samsa-stream bench``: the node's speed in one run (samsa_stream/bench), written to DIR/bench.json + bench.md."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ..cli import common_options, settings_from
from ..errors import CommandError


def _size(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not HxWxB, e.g. 480x640x100")
    h, w, b = (int(p) for p in parts)
    return h, w, b


def _names(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _numbers(kind: type) -> object:
    def parse(text: str) -> tuple[object, ...]:
        try:
            return tuple(kind(item) for item in _names(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure the node's speed: every stage, engine and transport in one run",
        description="Runs, on the same phantom frames: a memcpy of the cube (the floor), the spectral-angle map "
                    "(numpy, torch, SPy) alone and beside CPU-bound processes, the capture formats to the node's "
                    "layout, the bare SAM2ImagePredictor against each engine and the tracker, and the whole node as "
                    "processes over shared memory, ipc and tcp (frame-to-screen, click-to-mask, 1 to N streams). "
                    "Prints the ratios as JSON and writes DIR/bench.json and DIR/bench.md. On a CUDA device the "
                    "defaults cover SAM2.1 tiny and small, with and without torch.compile, and the node at 10 and "
                    "30 fps.")
    common_options(p)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--size", type=_size, default=(480, 640, 100), metavar="HxWxB", help="frame size (480x640x100)")
    p.add_argument("--engines", type=_names, default=("spectral", "rgb", "prompt", "decoder"), metavar="A,B",
                   help="engines to time (spectral,rgb,prompt,decoder)")
    p.add_argument("--image-size", type=int, default=1024,
                   help="SAM2 input size (1024; smaller only with random weights)")
    p.add_argument("--frames", type=int, default=20, help="timed calls per case and frames per node run (20)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), metavar="DIR", help="where bench.json/.md go")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path, action="append", metavar="PATH",
                         help="official SAM2/SAM2.1 checkpoint; repeat to time several models (the first one runs "
                              "in the node), e.g. tiny and small")
    weights.add_argument("--random-weights", action="store_true",
                         help="SAM2 with seeded random weights: timings hold, masks mean nothing")
    p.add_argument("--models", type=_names, default=None, metavar="CFG,CFG",
                   help="with --random-weights: SAM2 configs to time, e.g. sam2.1_hiera_t,sam2.1_hiera_s (cuda "
                        "default: both; cpu: tiny)")
    p.add_argument("--compile", choices=("off", "on", "both"), default=None,
                   help="time the models without/with torch.compile (cuda default: both; cpu: off)")
    p.add_argument("--sections", type=_names, default=("compute", "ingest", "models", "node"), metavar="A,B")
    p.add_argument("--transports", type=_names, default=("shm", "ipc", "tcp"), metavar="A,B")
    p.add_argument("--fps", type=_numbers(float), default=None, metavar="F,F",
                   help="node frame rates (cpu default: 5; cuda: 10,30)")
    p.add_argument("--streams", type=_numbers(int), default=(1, 4), metavar="N,N", help="stream counts (1,4)")
    p.add_argument("--contention", type=int, default=2, help="CPU-bound processes beside the contended cases (2)")
    p.add_argument("--clicks", type=int, default=5, help="click-to-mask samples per node run (5)")
    p.add_argument("--node-engine", default=None,
                   help="the node's engine (cpu default: spectral; cuda with a model: prompt)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..runtime import setup_logging

    settings = settings_from(args)
    setup_logging(settings.log.level, "bench", settings.log.format)
    from ..bench.options import BenchError, BenchOptions
    from ..bench.report import write_report
    from ..bench.run import run_bench

    cuda = args.device == "cuda"
    checkpoints: list[Path] = args.checkpoint or []
    compile_modes = args.compile or ("both" if cuda else "off")
    try:
        options = BenchOptions(
            device=args.device, size=args.size, engines=args.engines, image_size=args.image_size, frames=args.frames,
            checkpoint=checkpoints[0] if checkpoints else None, more_checkpoints=tuple(checkpoints[1:]),
            random_weights=args.random_weights,
            models=args.models if args.models is not None else (
                ("sam2.1_hiera_t", "sam2.1_hiera_s") if cuda and args.random_weights else ()),
            compile={"off": (False,), "on": (True,), "both": (False, True)}[compile_modes],
            sections=args.sections, transports=args.transports,
            fps=args.fps if args.fps is not None else ((10.0, 30.0) if cuda else (5.0,)),
            streams=args.streams, contention=args.contention, clicks=args.clicks,
            node_engine=args.node_engine or ("prompt" if cuda and (checkpoints or args.random_weights) else "spectral"),
            settings=settings)
    except BenchError as exc:
        raise CommandError(str(exc)) from None
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise CommandError("--device cuda: no CUDA device is available to torch on this machine")
    report = run_bench(options, "samsa-stream " + " ".join(shlex.quote(a) for a in getattr(args, "argv", ["bench"])))
    json_path, md_path = write_report(report, args.out)
    print(json.dumps({"ratios": report.ratios, "bench_json": str(json_path), "bench_md": str(md_path)}, indent=2))
    return 0
