"""Measuring segmentation quality the way the SAMSA papers do (DESIGN section 7).

Simulated clicks on labelled hyperspectral images (``clicks``), DICE/IoU and clicks-to-target
(``metrics``), labelled datasets (``dataset``), interactive sessions per object (``session``)
and the report (``report``). The pure parts import nothing heavy; the package import is cheap.
"""

from __future__ import annotations

from ..errors import SamsaError


class EvaluationError(SamsaError, ValueError):
    """A dataset, label map or evaluation request that cannot be used; the text says why."""


__all__ = ["EvaluationError"]
