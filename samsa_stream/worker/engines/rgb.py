"""The ``rgb`` engine: plain SAM2 on the pseudo-RGB, the baseline every fusion is compared with.

On a clicked frame it computes what SAM2's ``SAM2ImagePredictor`` does (set_image + predict with
the clicks, multimask output for a single click, best predicted IoU kept): the same image
embedding, and logits equal to within float rounding (the tests hold them to 1e-5). The spectral
maps are not computed (nothing uses them).
"""

from __future__ import annotations

from .sam2_engine import Sam2Engine


class RgbEngine(Sam2Engine):
    name = "rgb"
