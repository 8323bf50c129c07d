"""``samsa-stream eval``: segmentation quality with simulated clicks, as the SAMSA papers measure it.

Every method (engines and baselines) runs on the same clicks protocol on every labelled object of
every image; see docs/evaluation.md for the protocol, the dataset formats and the report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..cli import common_options, settings_from
from ..errors import CommandError
from ..worker.engines import needs_sam2
from .worker import model_flags

if TYPE_CHECKING:
    from ..evaluation.dataset import LabelledImage
    from ..settings import Settings

log = logging.getLogger(__name__)

MAX_CLICKS = 64  # a tracked object holds at most this many clicks (worker.prompts)
WORKER_KEYS_IGNORED = ("device", "engine", "state_file", "max_streams", "stream_idle_s")  # no effect on masks


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="measure segmentation quality with simulated clicks on a labelled dataset",
                       description="Run interactive segmentation with simulated clicks (first click deepest inside "
                                   "the object, each next one deepest inside the largest error) on every labelled "
                                   "object of DATASET, with every method given, plus the baselines (the "
                                   "angle-mapper always; rgb SAM2 whenever a SAM2 model is given). Writes "
                                   "OUT/report.json (config, summary, per-object rows), OUT/report.md, "
                                   "OUT/dice_vs_clicks.png and OUT/worst_<method>.png. Resumes from the rows "
                                   "already in OUT. Several processes: torchrun --nproc-per-node N -m "
                                   "samsa_stream eval ...")
    common_options(p)
    p.add_argument("dataset", type=Path, help="labelled capture file, folder, or manifest (.toml/.json)")
    p.add_argument("--engine", default=None, metavar="E[,E...]",
                   help="methods to evaluate, comma-separated: spectral, rgb, prompt, decoder, angle-mapper "
                        "(default: worker.engine)")
    p.add_argument("--clicks", type=int, default=20, help=f"clicks per object, 1..{MAX_CLICKS} (default 20)")
    p.add_argument("--out", type=Path, required=True, help="folder for the report (created)")
    dataset_flags(p)
    p.add_argument("--skip", default=None, metavar="V[,V...]", help="label values that are no object (default 0)")
    p.add_argument("--no-baselines", action="store_true", help="run only the methods given with --engine")
    p.add_argument("--sequences", action="store_true",
                   help="track instead: each multi-frame capture is a sequence with per-frame labels; each object "
                        "(label value) is clicked on the first frame it appears in and followed with no further "
                        "click, with and without the method's memory (OUT/iou_vs_frames.png)")
    p.add_argument("--restart", action="store_true", help="discard rows already in OUT instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    model_flags(p)
    p.set_defaults(handler=_run)


def dataset_flags(p: argparse.ArgumentParser) -> None:
    """What counts as an object in a labelled dataset (eval and train-adapter share them)."""
    p.add_argument("--objects", choices=("components", "classes"), default=None,
                   help="an object is each connected region of a label (components) or all pixels of a label "
                        "(classes); default: the manifest's, else components")
    p.add_argument("--min-area", type=int, default=None, metavar="PX", help="objects smaller than this are skipped")


def check_dataset_flags(args: argparse.Namespace) -> None:
    if args.min_area is not None and args.min_area < 1:
        raise CommandError(f"--min-area must be at least 1 pixel, got {args.min_area}")


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CommandError(f"{flag} {text!r} must be comma-separated integers") from None


def methods_for(args: argparse.Namespace, settings: Settings) -> list[str]:
    """The requested methods, then the baselines not already among them."""
    requested = args.engine if args.engine is not None else settings.worker.engine
    names = [n.strip() for n in requested.split(",") if n.strip()]
    if not names:
        raise CommandError("--engine names no method")
    if len(set(names)) != len(names):
        raise CommandError(f"--engine {args.engine!r} names a method twice")
    if not args.no_baselines:
        with_sam2 = settings.worker.checkpoint is not None or settings.worker.random_weights
        names += [b for b in ("angle-mapper", *(("rgb",) if with_sam2 else ())) if b not in names]
    return names


def file_identity(path: Path) -> dict[str, Any]:
    """Path, size and SHA-256 of a weight file, so a report names exactly what it measured."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        size = path.stat().st_size
    except OSError as exc:
        raise CommandError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return {"path": str(path), "bytes": size, "sha256": digest.hexdigest()}


def run_config(settings: Settings, methods: list[str], budget: int, dataset: dict[str, Any]) -> dict[str, Any]:
    """What the run measures: methods, budget, dataset, the settings that shape masks, the weight files
    (with their hashes and, for an adapter, how it was trained) and the node's version."""
    worker = settings.worker.model_dump(mode="json")
    for key in WORKER_KEYS_IGNORED:
        worker.pop(key, None)
    weights: dict[str, Any] = {}
    if settings.worker.checkpoint is not None and any(needs_sam2(m) for m in methods):
        weights["checkpoint"] = file_identity(settings.worker.checkpoint)
    if settings.worker.adapter is not None and "decoder" in methods:
        from ..worker.engines.fusion_adapter import read_adapter_info

        weights["adapter"] = {**file_identity(settings.worker.adapter),
                              "info": read_adapter_info(settings.worker.adapter)}
    return {"methods": methods, "budget": budget, "dataset": dataset,
            "settings": {"worker": worker, "ingest": settings.ingest.model_dump(mode="json"), "weights": weights,
                         "version": __version__}}


def _run(args: argparse.Namespace) -> int:
    from ..evaluation import EvaluationError
    from ..evaluation.baselines import build_methods
    from ..evaluation.dataset import open_dataset
    from ..evaluation.report import plot_curves, plot_tracking, plot_worst, write_report
    from ..evaluation.run import EvalConfig, RowStore, evaluate, evaluate_sequences
    from ..evaluation.sequence import run_names
    from ..parallel import Ranks
    from ..runtime import setup_logging

    settings = settings_from(args)
    setup_logging(settings.log.level, "eval", settings.log.format)
    if not 1 <= args.clicks <= MAX_CLICKS:
        raise CommandError(f"--clicks must be 1..{MAX_CLICKS}, got {args.clicks}")
    check_dataset_flags(args)
    methods = methods_for(args, settings)
    if args.sequences and args.objects == "components":
        raise CommandError("--sequences follows label values from frame to frame: --objects components does not "
                           "apply (a component has no identity across frames)")
    ranks = Ranks.start(settings.worker.device)
    try:
        started = time.perf_counter()
        dataset = open_dataset(args.dataset, settings, mode="classes" if args.sequences else args.objects,
                               min_area_px=args.min_area, skip=_int_list(args.skip, "--skip"))
        if len(dataset) == 0:
            raise EvaluationError(f"{args.dataset}: no labelled images to evaluate")
        engines = build_methods(methods, settings.worker)
        config_json = run_config(settings, methods, args.clicks, dataset.describe())
        config = EvalConfig(tuple(methods), args.clicks, config_json["dataset"], config_json["settings"],
                            sequences=args.sequences)
        store = RowStore(args.out, ranks.rank)
        if ranks.leader and args.restart:
            shutil.rmtree(store.folder, ignore_errors=True)
            (args.out / "run.json").unlink(missing_ok=True)
        if ranks.leader:
            args.out.mkdir(parents=True, exist_ok=True)
            store.prepare(config, leader=True)
        ranks.barrier()
        if not ranks.leader:
            store.prepare(config, leader=False)
        progress = None if args.quiet or not ranks.leader else _progress
        run = evaluate_sequences if args.sequences else evaluate
        try:
            run(dataset, engines, config, store, ranks, settings.worker.spectral.reference_radius, progress)
        except KeyboardInterrupt:  # the rows written so far are kept: say how to go on instead of a traceback
            sys.stderr.write(f"\neval interrupted; the rows written so far are in {store.folder}: run the same "
                             "command again to resume\n")
            return 130
        ranks.barrier()
        if not ranks.leader:
            return 0
        notices = sorted({n for e in engines.values() for n in e.notices})
        rows = store.merged()
        summary = write_report(args.out, rows, config.to_json(), notices)
        if args.sequences:
            plot_tracking(rows, run_names(methods), args.out / "iou_vs_frames.png")
            return _finish(args, summary, notices, started)
        plot_curves(summary, args.out / "dice_vs_clicks.png")
        loaded: dict[int, LabelledImage] = {}

        def load(index: int) -> LabelledImage:
            if index not in loaded:
                loaded[index] = dataset.load(index)
            return loaded[index]

        for method in methods:
            plot_worst(rows, method, load, args.out / f"worst_{method}.png")
    except OSError as exc:
        raise CommandError(f"{args.out}: cannot be written ({exc.strerror or exc})") from exc
    finally:
        ranks.stop()
    return _finish(args, summary, notices, started)


def _finish(args: argparse.Namespace, summary: dict[str, Any], notices: list[str], started: float) -> int:
    """Notices to the log, one JSON line with the headline figures to stdout."""
    for notice in notices:
        log.warning("notice: %s", notice)
    brief: dict[str, Any] = {m: {"objects": s["objects"], "dice_at": s["dice_at"], "noc85": s["noc85"],
                                 "noc90": s["noc90"]} for m, s in summary["methods"].items() if s["objects"]}
    out: dict[str, Any] = {"out": str(args.out), "images": summary["images"], "objects": summary["objects"],
                           "seconds": round(time.perf_counter() - started, 1), "methods": brief}
    if summary["tracking"]:
        out["sequences"] = summary["sequences"]
        out["tracking"] = {run: {k: t[k] for k in ("tracks", "iou_mean", "drift", "returns", "recovered")}
                           for run, t in summary["tracking"].items()}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _progress(items: Iterable[int], total: int) -> Iterable[int]:
    from tqdm import tqdm

    return tqdm(items, total=total, desc="eval", unit="image", file=sys.stderr, dynamic_ncols=True)
