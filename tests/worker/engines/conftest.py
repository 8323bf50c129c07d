"""SAM2 fixtures: the real SAM2.1 tiny architecture with seeded random weights at a small input size.

Random weights make meaningless masks but exercise every tensor path; 128 px keeps a forward pass
in tens of milliseconds on a CPU.
"""

from __future__ import annotations

import pytest

from samsa_stream.settings import WorkerSettings

IMAGE_SIZE = 128


def sam2_settings(**fields: object) -> WorkerSettings:
    base: dict[str, object] = {"engine": "rgb", "random_weights": True, "seed": 7, "image_size": IMAGE_SIZE,
                               "device": "cpu"}
    return WorkerSettings(**{**base, **fields})


@pytest.fixture(scope="session")
def runner():
    """One random-weight model shared by the engine tests (building it costs about half a second)."""
    from samsa_stream.worker.engines.sam2_model import load_sam2
    from samsa_stream.worker.engines.sam2_runner import Sam2Runner

    return Sam2Runner(load_sam2(sam2_settings()))
