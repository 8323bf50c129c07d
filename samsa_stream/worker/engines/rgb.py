"""The ``rgb`` engine: plain SAM2 on the pseudo-RGB, the baseline every fusion is compared with.

On a clicked frame it is exactly SAM2's ``SAM2ImagePredictor`` (set_image + predict with the
clicks, multimask output for a single click, best predicted IoU kept). The spectral maps are not
computed (nothing uses them).
"""

from __future__ import annotations

from .sam2_engine import Sam2Engine


class RgbEngine(Sam2Engine):
    name = "rgb"
