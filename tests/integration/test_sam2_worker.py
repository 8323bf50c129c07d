"""A worker process running a SAM2 engine (real architecture, seeded random weights) in the pipeline."""

from __future__ import annotations

import pytest

from samsa_stream.node import LocalNode
from tests.integration.conftest import FAST, Display, console_for, latest_frame, phantom


@pytest.mark.parametrize("engine", ["rgb", "decoder"])
def test_sam2_engine_in_the_live_pipeline(engine: str, tmp_path) -> None:
    overrides = {**FAST, "worker": {"engine": engine, "random_weights": True, "image_size": 128, "device": "cpu"}}
    with LocalNode(overrides, run_dir=tmp_path) as node:
        for name in ("publisher", "worker", "ingest"):
            node.start(name)
        console = console_for(node)
        display = Display(node)
        try:
            frame_id = latest_frame(console, timeout_s=60)
            x, y = phantom(node).centre(0, frame_id)
            assert console.click(1, x, y, frame_id=frame_id).ok
            masks = [m for m in display.masks(40, timeout_s=30) if m.objects and m.frame_id > frame_id][:5]
            assert len(masks) == 5, node.log_text("worker")[-2000:]
            assert {m.engine for m in masks} == {engine}
            assert all(any("masks are meaningless" in n for n in m.notices) for m in masks)
            assert [m.frame_id for m in masks] == sorted(m.frame_id for m in masks)
        finally:
            console.close()
            display.close()
