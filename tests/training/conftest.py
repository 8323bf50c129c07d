"""Training fixtures: phantom images as the node's labelled .npz captures, and one random-weight SAM2 at 128 px.

Random weights give meaningless masks but every tensor path of training runs; 64 x 64 images with 20
bands keep a training step in tens of milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.settings import PhantomSettings, WorkerSettings
from tests.worker.engines.conftest import sam2_settings

SIZE, BANDS = 64, 20


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts several processes (seconds, not milliseconds)")


def write_phantom_dataset(folder: Path, count: int) -> Path:
    """``count`` labelled phantom images (two objects each, different poses) as ``folder/img<k>.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    camera = PhantomCamera(PhantomSettings(height=SIZE, width=SIZE, bands=BANDS, objects=2))
    for k in range(count):
        capture = camera.render(3 * k)
        np.savez(folder / f"img{k}.npz", cube=capture.cube, wavelengths_nm=capture.wavelengths_nm,
                 labels=capture.labels)
    return folder


def training_settings() -> WorkerSettings:
    return sam2_settings(engine="decoder")


@pytest.fixture(scope="session")
def train_runner():
    """One frozen random-weight SAM2 shared by the training tests (training never changes it)."""
    from samsa_stream.worker.engines.sam2_model import load_sam2
    from samsa_stream.worker.engines.sam2_runner import Sam2Runner

    return Sam2Runner(load_sam2(training_settings()))
