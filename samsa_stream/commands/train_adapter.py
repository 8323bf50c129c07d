"""``samsa-stream train-adapter``: train the decoder engine's fusion adapter few-shot on a labelled dataset.

SAM2 stays frozen; only the small fusion adapter learns, from simulated click sessions on N labelled
images (``training.adapter``). The adapter file records how it was made; the decoder engine loads it
with ``worker.adapter``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cli import common_options, settings_from
from ..errors import CommandError
from .eval import check_dataset_flags, dataset_flags
from .worker import model_flags

if TYPE_CHECKING:
    from ..evaluation.dataset import Dataset, LabelledImage
    from ..training.adapter import AdapterTrainer, TrainState

log = logging.getLogger(__name__)

ADAPTER_SUFFIXES = (".safetensors", ".pt")
LOSS_WINDOW = 10  # steps averaged into the first and last training loss reported


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-adapter", help="train the decoder engine's fusion adapter few-shot (SAM2 frozen)",
                       description="Train SAMSA's fusion adapter (the decoder engine's) on --shots labelled images "
                                   "of DATASET, the first after a shuffle by --seed, with simulated clicks as the "
                                   "evaluation places them. SAM2 stays frozen. The next --val-images images "
                                   "validate (DICE after --val-clicks clicks) every --val-every steps; training stops "
                                   "after --patience validations without improvement and the best adapter is "
                                   "written to OUT, which records how it was made. --seed also seeds the "
                                   "training (shots, sample order, initial weights); --adapter starts from "
                                   "existing weights. A checkpoint OUT.ckpt.pt lets --resume go on where a run "
                                   "stopped. Several processes: torchrun --nproc-per-node N -m samsa_stream "
                                   "train-adapter ...")
    common_options(p)
    p.add_argument("dataset", type=Path, help="labelled capture file, folder, or manifest (.toml/.json)")
    p.add_argument("--shots", type=int, required=True, help="labelled images to train on")
    p.add_argument("--out", type=Path, required=True, help="adapter file to write (.safetensors or .pt)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps at most (default 200)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--batch", type=int, default=4, help="samples per step and process (default 4)")
    p.add_argument("--max-clicks", type=int, default=3,
                   help="a sample is trained on its k-th simulated click, k drawn from 1..this (default 3)")
    p.add_argument("--val-images", type=int, default=4,
                   help="images after the shots that validate (default 4; as many as remain if fewer; 0: none)")
    p.add_argument("--val-every", type=int, default=20, help="validate every this many steps (default 20)")
    p.add_argument("--val-clicks", type=int, default=3, help="validation DICE after this many clicks (default 3)")
    p.add_argument("--patience", type=int, default=5,
                   help="stop after this many validations without a better DICE (default 5)")
    p.add_argument("--checkpoint-every", type=int, default=50,
                   help="write the training checkpoint OUT.ckpt.pt every this many steps (default 50)")
    p.add_argument("--resume", action="store_true", help="go on from OUT.ckpt.pt (same dataset and settings)")
    dataset_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    model_flags(p)
    p.set_defaults(handler=_run)


def pick_images(dataset: Dataset, shots: int, val_images: int, seed: int) -> tuple[list[LabelledImage],
                                                                                     list[LabelledImage]]:
    """The first ``shots`` images with objects after a shuffle by ``seed``, then up to ``val_images`` more."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    train: list[LabelledImage] = []
    val: list[LabelledImage] = []
    empty = 0
    for index in order:
        if len(train) == shots and len(val) >= val_images:
            break
        image = dataset.load(int(index))
        if not image.objects:
            empty += 1
            continue
        (train if len(train) < shots else val).append(image)
    if not train:
        raise CommandError(f"dataset {dataset.name} has no image with objects ({len(dataset)} images; objects "
                           f"follow --objects and --min-area)")
    if len(train) < shots:
        raise CommandError(f"--shots {shots}, but dataset {dataset.name} has only {len(train)} image(s) with "
                           f"objects ({len(dataset)} images, {empty} without objects)")
    return train, val


def _check_args(args: argparse.Namespace) -> None:
    if args.out.suffix not in ADAPTER_SUFFIXES:
        raise CommandError(f"--out must name a .safetensors or .pt file, got {args.out}")
    if args.shots < 1:
        raise CommandError(f"--shots must be at least 1, got {args.shots}")
    if args.val_images < 0:
        raise CommandError(f"--val-images must be 0 or more, got {args.val_images}")
    check_dataset_flags(args)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def _run(args: argparse.Namespace) -> int:
    from ..evaluation.dataset import open_dataset
    from ..parallel import Ranks
    from ..runtime import setup_logging
    from ..training.adapter import AdapterTrainer, Example, TrainConfig, TrainingError, checkpoint_path
    from ..worker.engines.fusion_adapter import load_adapter, save_adapter
    from ..worker.engines.sam2_model import load_sam2, resolve_device
    from ..worker.engines.sam2_runner import Sam2Runner

    settings = settings_from(args)
    setup_logging(settings.log.level, "train-adapter", settings.log.format)
    _check_args(args)
    worker = settings.worker
    config = TrainConfig(lr=args.lr, batch=args.batch, max_clicks=args.max_clicks, seed=worker.seed,
                         val_clicks=args.val_clicks, steps=args.steps, val_every=args.val_every,
                         patience=args.patience, checkpoint_every=args.checkpoint_every)
    try:
        config.check()
    except TrainingError as exc:
        raise CommandError(str(exc)) from None
    if worker.checkpoint is None and not worker.random_weights:
        raise CommandError("train-adapter needs --checkpoint PATH (an official SAM2/SAM2.1 checkpoint) or, for "
                           "tests only, --random-weights")
    ckpt = checkpoint_path(args.out)
    ranks = Ranks.start(resolve_device(worker.device).type)
    try:
        started = time.perf_counter()
        dataset = open_dataset(args.dataset, settings, mode=args.objects, min_area_px=args.min_area)
        if args.shots > len(dataset):
            raise CommandError(f"--shots {args.shots} is more than dataset {dataset.name} holds ({len(dataset)} "
                               "labelled images)")
        train_images, val_images = pick_images(dataset, args.shots, args.val_images if ranks.leader else 0,
                                               config.seed)
        runner = Sam2Runner(load_sam2(worker))
        run = {"dataset": dataset.name, "objects": dataset.rules.mode, "min_area_px": dataset.rules.min_area_px,
               "train_images": [im.name for im in train_images],
               "initial_adapter": None if worker.adapter is None else str(worker.adapter)}
        trainer = AdapterTrainer(runner, worker, config, ranks, run=run)
        if worker.adapter is not None:  # fine-tune from an existing adapter
            start = load_adapter(worker.adapter, runner.loaded.variant.name, runner.high_res_channels)
            trainer.adapter.load_state_dict(start.state_dict())
        if args.resume:
            trainer.resume(ckpt)
        elif ckpt.exists():
            log.warning("%s exists and is replaced (no --resume)", ckpt)
        train = [Example.embed(runner, im.name, im.frame, [o.mask for o in im.objects]) for im in train_images]
        val = [Example.embed(runner, im.name, im.frame, [o.mask for o in im.objects]) for im in val_images]
        state = trainer.fit(train, val, checkpoint=ckpt, report=Progress(config.steps, args.quiet or not ranks.leader))
        if not ranks.leader:
            return 0
        info = {"dataset_path": str(args.dataset), **_info(trainer, dataset.name, train_images, val_images, state)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_adapter(args.out, trainer.best_adapter(), runner.loaded.variant.name, info)
    except TrainingError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{args.out}: cannot be written ({exc.strerror or exc})") from exc
    finally:
        ranks.stop()
    window = max(1, min(LOSS_WINDOW, len(state.losses) // 2))
    summary = {"out": str(args.out), "steps": state.step, "train_loss_first": _mean(state.losses[:window]),
               "train_loss_last": _mean(state.losses[-window:]), "val_dice_best": state.best_dice,
               "val_dice_untrained": state.initial_dice, "best_step": state.best_step,
               "stopped_early": state.stopped_early, "seconds": round(time.perf_counter() - started, 1)}
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _info(trainer: AdapterTrainer, dataset: str, train: list[LabelledImage], val: list[LabelledImage],
          state: TrainState) -> dict[str, Any]:
    """What the adapter file records about how it was made."""
    from .. import __version__

    config, loaded = trainer.config, trainer.runner.loaded
    return {
        "trained_with": f"samsa-stream {__version__} train-adapter", "dataset": dataset,
        "objects": trainer.identity["objects"], "shots": len(train), "train_images": [im.name for im in train],
        "val_images": [im.name for im in val], "seed": config.seed, "steps": state.step, "best_step": state.best_step,
        "stopped_early": state.stopped_early, "val_dice": state.best_dice, "val_dice_untrained": state.initial_dice,
        "val_clicks": config.val_clicks, "max_clicks": config.max_clicks, "batch": config.batch, "lr": config.lr,
        "weight_decay": config.weight_decay, "loss": "soft Dice + BCE on the mask logits at the image size",
        "image_size": trainer.runner.image_size, "reference_radius": trainer.radius,
        "random_weights": loaded.random_weights,
        "sam2_weights": loaded.source if loaded.random_weights else Path(loaded.source).name,
        "processes": trainer.ranks.world_size, "initial_adapter": trainer.identity["initial_adapter"],
    }


class Progress:
    """A tqdm bar on stderr that follows the trainer's state (nothing when ``quiet``)."""

    def __init__(self, steps: int, quiet: bool) -> None:
        self.steps, self.quiet = steps, quiet
        self.bar: Any = None

    def __call__(self, state: TrainState) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, initial=state.step, desc="train-adapter", unit="step",
                            file=sys.stderr, dynamic_ncols=True)
        postfix = {}
        if state.losses:
            postfix["loss"] = f"{state.losses[-1]:.4f}"
        if state.validations:
            postfix["val_dice"] = f"{state.validations[-1][1]:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(state.step - self.bar.n)
        if state.step >= self.steps or state.stopped_early:
            self.bar.close()
