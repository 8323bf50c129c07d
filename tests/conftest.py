"""Shared fixtures: small phantom frames and settings for fast tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from samsa_stream.evaluation.metrics import iou  # noqa: F401  (tests import it from here)
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.protocol import CubeFrame
from samsa_stream.settings import IngestSettings, PhantomSettings, Settings, load_settings


@pytest.fixture(autouse=True)
def _no_samsa_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own settings; a developer's SAMSA_* variables must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith("SAMSA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings() -> Settings:
    return load_settings()


def phantom_frames(bands: int = 32, height: int = 60, width: int = 80, count: int = 5, start: int = 0,
                   stream_id: str = "cam0", **phantom: object) -> tuple[PhantomCamera, list[CubeFrame]]:
    """A phantom camera and its first ``count`` normalized frames."""
    cam = PhantomCamera(PhantomSettings(height=height, width=width, bands=bands, **phantom))
    norm = Normalizer(IngestSettings())
    frames = [norm(cam.render(k), stream_id, k, 1_000_000 * k) for k in range(start, start + count)]
    return cam, frames


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """A 128 px model runs fastest on one thread; torch's thread pool on busy cores waits far longer."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
