"""Few-shot training of the fusion adapter; SAM2's image encoder, prompt encoder and mask decoder stay frozen.

One step, on every rank:

1. Draw ``batch`` samples: an (image, object) pair and a click count 1..``max_clicks`` each. The draw
   depends on (seed, rank, step) only, so every rank draws different samples and a resumed run draws
   what the uninterrupted run would have drawn.
2. Play the evaluation's click session (``evaluation.clicks``) up to the last click, without
   gradients: the first click at the object's deepest pixel, each next one in the largest error of
   the decoder engine's own result with the current adapter (``DecoderEngine.segment``); a click
   carries the reference spectrum the worker takes (``worker.spectral.reference_radius``).
3. Decode the last click with gradients into the adapter, with exactly the engine's inputs: its
   point prompts, its dense mask prompt (``mask_prompt``, offered the previous click's clamped
   low-res logits), multimask output keeping the best predicted IoU for a single click, and the
   adapter's additions from the positive and negative similarity maps on the decoder grid
   (``adapter_input``).
4. Loss: soft Dice + binary cross-entropy of the chosen mask's logits, upscaled to the image size
   (what the engine thresholds), against the ground-truth object; the mean over the batch; AdamW.

Each image's embedding is computed once (the encoder is frozen). Rank 0 validates every
``val_every`` steps and after the last (DICE after ``val_clicks`` simulated clicks, run as the
evaluation runs a session), keeps the best adapter and decides early stopping for every rank. A
checkpoint (``save_checkpoint``) holds all a run needs to go on where it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SamsaError
from ..evaluation.clicks import SimulatedClick, first_click, next_click
from ..evaluation.session import click_on, run_session
from ..parallel import Ranks
from ..protocol import CubeFrame
from ..settings import WorkerSettings
from ..worker.engines.base import ObjectMemory
from ..worker.engines.decoder import DecoderEngine
from ..worker.engines.fusion_adapter import FusionAdapter
from ..worker.engines.sam2_engine import PointPrompts, Sam2Context
from ..worker.engines.sam2_runner import Sam2Runner
from ..worker.prompts import TrackedObject

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "samsa-stream/adapter-training"
CHECKPOINT_VERSION = 1


class TrainingError(SamsaError, ValueError):
    """A training request that cannot run (a bad setting, no objects, a checkpoint of another run)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every field except the last four is part of a run's identity for resuming."""

    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch: int = 4  # samples per step and rank
    max_clicks: int = 3
    seed: int = 0
    val_clicks: int = 3
    steps: int = 200
    val_every: int = 20
    patience: int = 5  # validations without improvement before stopping
    checkpoint_every: int = 50

    def check(self) -> None:
        """TrainingError naming the first field out of range."""
        for name in ("steps", "batch", "max_clicks", "val_every", "val_clicks", "patience", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainingError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise TrainingError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainingError(f"the learning rate must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise TrainingError(f"weight decay must be a non-negative number, got {self.weight_decay!r}")

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run that wrote the checkpoint."""
        fields = asdict(self)
        for name in ("steps", "val_every", "patience", "checkpoint_every"):
            del fields[name]
        return fields


@dataclass
class Example:
    """One labelled image ready for training or validation: its SAM2 context (embedded once) and objects."""

    name: str
    ctx: Sam2Context
    masks: list[np.ndarray]  # (H, W) bool, one per object
    _targets: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def embed(cls, runner: Sam2Runner, name: str, frame: CubeFrame, masks: Sequence[np.ndarray]) -> Example:
        """Embed ``frame`` (the image encoder's one run for it) and keep its non-empty object masks."""
        shape = frame.cube.shape[:2]
        kept = []
        for k, mask in enumerate(masks):
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != shape:
                raise TrainingError(f"image {name}: object mask #{k} is {mask.shape}, the image {shape}")
            if mask.any():
                kept.append(mask)
        return cls(name, Sam2Context(frame=frame, features=runner.embed(frame.rgb)), kept)

    def target(self, index: int, device: torch.device) -> torch.Tensor:
        """Object ``index``'s mask as a float (H, W) tensor on ``device`` (made once)."""
        if index not in self._targets:
            self._targets[index] = torch.from_numpy(self.masks[index]).to(device=device, dtype=torch.float32)
        return self._targets[index]


@dataclass(frozen=True)
class Sample:
    """Object ``obj`` of training image ``image``, trained on its ``clicks``-th click."""

    image: int
    obj: int
    clicks: int


def draw_samples(objects: Sequence[tuple[int, int]], count: int, max_clicks: int, seed: int, rank: int,
                 step: int) -> list[Sample]:
    """``count`` samples of (image, object) pairs with click counts 1..``max_clicks``; a pure function
    of (seed, rank, step), so runs repeat and resume exactly and ranks differ."""
    if not objects:
        raise TrainingError("there are no training objects to draw from")
    rng = np.random.default_rng([seed, rank, step])
    picks = rng.integers(0, len(objects), size=count)
    clicks = rng.integers(1, max_clicks + 1, size=count)
    return [Sample(objects[int(p)][0], objects[int(p)][1], int(c)) for p, c in zip(picks, clicks, strict=True)]


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss + binary cross-entropy of (H, W) logits against a 0/1 target of the same shape."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    soft_dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce + (1 - soft_dice)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (the adapter's initial weights come from torch's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def freeze(runner: Sam2Runner) -> None:
    """SAM2 stays as loaded: eval mode, no parameter takes gradients."""
    runner.model.eval()
    runner.model.requires_grad_(False)


@dataclass
class TrainState:
    """Where a run stands; saved in its checkpoint."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # each step's training loss (mean over ranks)
    validations: list[tuple[int, float]] = field(default_factory=list)  # (step, validation DICE); step 0 untrained
    best_dice: float | None = None
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None  # the best adapter's weights (CPU)
    stale: int = 0  # validations since the best
    stopped_early: bool = False

    @property
    def initial_dice(self) -> float | None:
        """Validation DICE before training (with a new adapter: the rgb engine's), if validated."""
        return self.validations[0][1] if self.validations and self.validations[0][0] == 0 else None


@dataclass
class LastClick:
    """One sample's session up to its last click, and what the engine feeds SAM2 for that click."""

    obj: TrackedObject  # every click of the session, the last one not yet segmented
    memory: ObjectMemory  # the engine's memory after the click before it
    points: PointPrompts
    mask_logits: torch.Tensor | None
    adapter_input: torch.Tensor  # (1, 2, S/4, S/4)


class AdapterTrainer:
    """Trains one FusionAdapter on a frozen SAM2 (see the module doc). ``run`` adds what else must
    match for ``resume`` to accept a checkpoint (dataset, shots, ...)."""

    def __init__(self, runner: Sam2Runner, settings: WorkerSettings, config: TrainConfig,
                 ranks: Ranks | None = None, run: Mapping[str, Any] | None = None) -> None:
        config.check()
        self.config = config
        self.ranks = ranks or Ranks()
        self.runner = runner
        freeze(runner)
        seed_everything(config.seed)  # the same initial adapter on every rank and in every run of this seed
        self.engine = DecoderEngine(runner, settings, FusionAdapter(runner.high_res_channels))
        self.adapter = self.engine.adapter.train()
        self.model: torch.nn.Module = self.adapter
        if self.ranks.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [torch.cuda.current_device()] if runner.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.adapter, device_ids=device_ids)
        self.optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.radius = settings.spectral.reference_radius
        self.state = TrainState()
        loaded = runner.loaded
        self.identity: dict[str, Any] = {
            **config.identity(), "sam2_variant": loaded.variant.name,
            "sam2_weights": loaded.source if loaded.random_weights else "checkpoint",  # a moved checkpoint still fits
            "image_size": runner.image_size, "reference_radius": self.radius, **(run or {})}

    # -- training ------------------------------------------------------------------------------
    def fit(self, train: Sequence[Example], val: Sequence[Example] = (), checkpoint: Path | None = None,
            report: Callable[[TrainState], None] | None = None) -> TrainState:
        """Train up to ``config.steps`` (from where the state stands) or until validation stops improving.

        Rank 0 validates on ``val`` (the other ranks' ``val`` is not used); without validation objects
        there is no early stopping and the last adapter is the best. ``checkpoint``: rank 0 writes it
        every ``checkpoint_every`` steps and at the end. ``report`` sees the state after every step
        (and after the untrained adapter's validation)."""
        objects = [(i, j) for i, ex in enumerate(train) for j in range(len(ex.masks))]
        if not objects:
            raise TrainingError("the training images hold no objects")
        config, state, leader = self.config, self.state, self.ranks.leader
        validating = self._agree(leader and any(ex.masks for ex in val))
        if validating and not state.validations and state.step == 0:  # the baseline every later DICE must beat
            self._agree(self._validated(self.validate(val)) if leader else False)
            if report is not None:
                report(state)
        while state.step < config.steps and not state.stopped_early:
            self.step(train, objects)
            if validating and (state.step % config.val_every == 0 or state.step == config.steps):
                stop = self._agree(self._validated(self.validate(val)) if leader else False)
                state.stopped_early = stop and state.step < config.steps
            if checkpoint is not None and leader and state.step % config.checkpoint_every == 0:
                self.save_checkpoint(checkpoint)
            if report is not None:
                report(state)
        if not validating:
            state.best_state, state.best_step = self._weights(), state.step
        if checkpoint is not None and leader:
            self.save_checkpoint(checkpoint)
        return state

    def step(self, train: Sequence[Example], objects: Sequence[tuple[int, int]]) -> float:
        """One optimizer step on this rank's samples (gradients averaged over ranks); the step's loss."""
        config = self.config
        samples = draw_samples(objects, config.batch, config.max_clicks, config.seed, self.ranks.rank,
                               self.state.step)
        lasts = [self.last_click(train[s.image], train[s.image].masks[s.obj], s.clicks) for s in samples]
        with self.runner.autocast():  # one adapter call for the batch: one forward, one gradient reduction
            delta_s0, delta_s1 = self.model(torch.cat([last.adapter_input for last in lasts]))
        losses = []
        for k, (sample, last) in enumerate(zip(samples, lasts, strict=True)):
            ex = train[sample.image]
            logits = self.logits(ex, last, (delta_s0[k:k + 1], delta_s1[k:k + 1]))
            losses.append(mask_loss(logits, ex.target(sample.obj, self.runner.device)))
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = loss.detach().float()
        if self.ranks.distributed:
            import torch.distributed as dist

            dist.all_reduce(value)
            value = value / self.ranks.world_size
        self.state.step += 1
        self.state.losses.append(float(value.item()))
        return self.state.losses[-1]

    def last_click(self, ex: Example, truth: np.ndarray, clicks: int) -> LastClick:
        """Simulated clicks up to the ``clicks``-th on ``truth``, segmenting between them with the current
        adapter; then the engine's inputs for the last click (as ``Sam2Engine.segment`` makes them)."""
        engine, ctx, frame = self.engine, ex.ctx, ex.ctx.frame
        obj = TrackedObject(1, "object", (255, 255, 255))
        memory = ObjectMemory()
        taken: set[tuple[int, int]] = set()
        click: SimulatedClick | None = first_click(truth)
        with torch.no_grad():
            while click is not None:
                obj.clicks.append(click_on(frame, click, self.radius))
                taken.add((click.row, click.col))
                if len(obj.clicks) >= clicks:
                    break
                mask = engine.segment(ctx, obj, memory).mask
                click = next_click(truth, mask, taken)  # None: perfect already, learn on the clicks so far
            inputs = engine.decode_inputs(ctx, obj, memory)
            if inputs.maps is None:  # not reached: the decoder engine uses the spectral maps
                raise TrainingError("the decoder engine made no spectral maps")
            return LastClick(obj, memory, inputs.points, inputs.mask_logits, engine.adapter_input(inputs.maps))

    def logits(self, ex: Example, last: LastClick, delta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(H, W) mask logits at the image size for ``last`` with the skip-feature additions ``delta``:
        multimask output keeping the best predicted IoU for a single click, as the engine decodes.
        Differentiable in ``delta``."""
        points = last.points
        decoded = self.runner.decode(ex.ctx.features, np.asarray(points.coords, dtype=np.float32),
                                     np.asarray(points.labels, dtype=np.int32), mask_logits=last.mask_logits,
                                     multimask=len(points.labels) == 1, high_res_delta=delta)
        best = decoded.best()
        return self.runner.upscale(decoded.low_res_raw[:, best:best + 1], ex.ctx.features.orig_hw)[0]

    # -- validation ------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, val: Sequence[Example]) -> float:
        """Mean DICE over ``val``'s objects after ``config.val_clicks`` simulated clicks, current adapter."""
        scores = [run_session(self.engine, ex.ctx, ex.ctx.frame, truth, self.config.val_clicks, self.radius).dice[-1]
                  for ex in val for truth in ex.masks]
        if not scores:
            raise TrainingError("the validation images hold no objects")
        return float(np.mean(scores))

    def _validated(self, dice: float) -> bool:
        """Record a validation; whether training should stop (``patience`` validations without a better DICE)."""
        state = self.state
        state.validations.append((state.step, dice))
        log.debug("step %d: validation DICE %.4f", state.step, dice)  # the progress bar shows it
        if state.best_dice is None or dice > state.best_dice:
            state.best_dice, state.best_step, state.best_state, state.stale = dice, state.step, self._weights(), 0
            return False
        state.stale += 1
        return state.stale >= self.config.patience

    def _agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (the others wait here while rank 0 validates)."""
        if not self.ranks.distributed:
            return flag
        import torch.distributed as dist

        value = torch.tensor([int(flag)], device=self.runner.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.adapter.state_dict().items()}

    def best_adapter(self) -> FusionAdapter:
        """The best adapter so far (the current one when nothing was validated yet), on the CPU."""
        adapter = FusionAdapter(self.adapter.channels, self.adapter.hidden)
        adapter.load_state_dict(self.state.best_state if self.state.best_state is not None else self._weights())
        return adapter.eval()

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        """Write everything ``resume`` needs (written whole, then moved into place)."""
        state = self.state
        data = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "run": self.identity,
            "adapter": self._weights(), "optimizer": self.optimizer.state_dict(),
            "state": {"step": state.step, "losses": list(state.losses),
                      "validations": [list(v) for v in state.validations], "best_dice": state.best_dice,
                      "best_step": state.best_step, "best_state": state.best_state, "stale": state.stale,
                      "stopped_early": state.stopped_early},
            "rng": _rng_states(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        torch.save(data, partial)
        os.replace(partial, path)

    def resume(self, path: Path) -> None:
        """Go on from the checkpoint at ``path``; TrainingError if it is unreadable or from another run."""
        if not path.is_file():
            raise TrainingError(f"nothing to resume: {path} does not exist")
        try:  # only tensors, numbers, text and containers: the safe loader reads it
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a foreign or truncated file
            raise TrainingError(f"{path} is not a readable training checkpoint: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise TrainingError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (format {found!r})")
        if data.get("version") != CHECKPOINT_VERSION:
            raise TrainingError(f"{path} has checkpoint version {data.get('version')!r}; this node reads "
                                f"version {CHECKPOINT_VERSION}")
        saved = data.get("run")
        saved = saved if isinstance(saved, dict) else {}
        differ = [f"{k} {saved.get(k)!r} there, {v!r} here" for k, v in self.identity.items() if saved.get(k) != v]
        if differ:
            raise TrainingError(f"{path} is from another run ({'; '.join(differ)}); give the same settings or "
                                "start afresh without --resume")
        try:
            self.adapter.load_state_dict(data["adapter"])
            self.optimizer.load_state_dict(data["optimizer"])
            s = data["state"]
            self.state = TrainState(
                step=int(s["step"]), losses=[float(v) for v in s["losses"]],
                validations=[(int(a), float(b)) for a, b in s["validations"]],
                best_dice=None if s["best_dice"] is None else float(s["best_dice"]), best_step=int(s["best_step"]),
                best_state=s["best_state"], stale=int(s["stale"]), stopped_early=bool(s["stopped_early"]))
            _set_rng_states(data["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TrainingError(f"{path} is damaged: {exc}") from None
        log.info("resumed %s at step %d", path, self.state.step)


def _rng_states() -> dict[str, Any]:
    """The global generators' states, in types the safe loader reads."""
    version, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [version, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(gauss)],
            "python": [py_version, list(py_state), py_gauss]}


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((version, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py_version, py_state, py_gauss = states["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))


def checkpoint_path(out: Path) -> Path:
    """Where the training checkpoint of the adapter file ``out`` lives: ``<out>.ckpt.pt``."""
    return out.with_name(out.name + ".ckpt.pt")
