"""One object's interactive session: simulated clicks in, DICE and IoU after each click out.

The engine sees what it would see live: a TrackedObject whose clicks carry the reference spectrum
the worker takes at a click (``reference_spectrum`` with ``worker.spectral.reference_radius``),
and one ObjectMemory kept across the clicks, so SAM2 engines feed their previous logits back
between clicks as SAM2 does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..protocol import CubeFrame
from ..spectral.angles import reference_spectrum
from ..worker.engines import Engine, FrameContext, ObjectMemory
from ..worker.prompts import Click, TrackedObject
from .clicks import SimulatedClick, first_click, next_click
from .metrics import dice, iou


@dataclass
class SessionResult:
    """Scores after click 1..budget. When the mask is already perfect (or no unclicked error pixel is
    left) no further click is placed and the last scores carry on to the budget."""

    dice: list[float] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    clicks: list[SimulatedClick] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # engine time of each placed click
    final_mask: np.ndarray | None = None  # the mask after the last placed click


def click_on(frame: CubeFrame, click: SimulatedClick, reference_radius: int) -> Click:
    """The click as the worker records it on ``frame``: its position, sign and the reference spectrum
    taken there (``reference_spectrum`` with ``worker.spectral.reference_radius``)."""
    reference = reference_spectrum(frame.cube, click.x, click.y, reference_radius)
    return Click(click.x, click.y, click.positive, frame.frame_id, reference,
                 np.asarray(frame.wavelengths_nm, dtype=np.float64))


def run_session(engine: Engine, ctx: FrameContext, frame: CubeFrame, truth: np.ndarray, budget: int,
                reference_radius: int, label: str = "object", obj: TrackedObject | None = None,
                memory: ObjectMemory | None = None) -> SessionResult:
    """Click ``budget`` times on the object ``truth`` (H, W) bool of ``frame``, as the protocol says
    (evaluation.clicks), segmenting with ``engine`` on the prepared ``ctx`` after every click.

    ``obj`` and ``memory`` (new ones by default) receive the clicks and the engine's state, so a caller
    can go on tracking the object on later frames."""
    truth = np.asarray(truth, dtype=bool)
    obj = obj if obj is not None else TrackedObject(1, label, (255, 255, 255))
    memory = memory if memory is not None else ObjectMemory()
    result = SessionResult()
    clicked: set[tuple[int, int]] = set()
    click: SimulatedClick | None = first_click(truth)
    while click is not None and len(result.dice) < budget:
        obj.clicks.append(click_on(frame, click, reference_radius))
        started = time.perf_counter()
        mask = np.asarray(engine.segment(ctx, obj, memory).mask, dtype=bool)
        result.seconds.append(time.perf_counter() - started)
        result.clicks.append(click)
        result.dice.append(dice(mask, truth))
        result.iou.append(iou(mask, truth))
        result.final_mask = mask
        clicked.add((click.row, click.col))
        click = next_click(truth, mask, clicked)
    while len(result.dice) < budget:  # perfect, or nothing left to click: the mask stands
        result.dice.append(result.dice[-1])
        result.iou.append(result.iou[-1])
    return result
