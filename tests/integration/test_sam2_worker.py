"""A worker process running a SAM2 engine (real architecture, seeded random weights) in the pipeline."""

from __future__ import annotations

import pytest

from samsa_stream.node import LocalNode
from tests.integration.conftest import FAST, Display, console_for, latest_frame, phantom, start_all, status


@pytest.mark.parametrize("engine", ["rgb", "decoder"])
def test_sam2_engine_in_the_live_pipeline(engine: str, tmp_path) -> None:
    overrides = {**FAST, "worker": {"engine": engine, "random_weights": True, "image_size": 128, "device": "cpu"}}
    with LocalNode(overrides, run_dir=tmp_path) as node:
        start_all(node)
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


def test_objects_keep_their_memory_through_a_worker_killed_mid_stream(tmp_path) -> None:
    """SIGKILL the worker while it tracks two objects with SAM2 memory; the restarted worker restores
    the prompts and each object's memory and the next frames carry both objects' masks, with no new
    click."""
    state = tmp_path / "state" / "prompts.json"
    overrides = {**FAST, "worker": {"engine": "rgb", "random_weights": True, "image_size": 128, "device": "cpu",
                                    "state_file": str(state), "track_save_interval_s": 0},
                 "sockets": {"reply_timeout_ms": 30_000}}  # a SAM2 worker on a busy CPU answers between frames
    with LocalNode(overrides, run_dir=tmp_path) as node:
        start_all(node)
        console = console_for(node)
        display = Display(node)
        try:
            frame_id = latest_frame(console, timeout_s=60)
            cam = phantom(node)
            for oid in (1, 2):
                assert console.click(oid, *cam.centre(oid - 1, frame_id), frame_id=frame_id).ok
            tracked = [m for m in display.masks(60, timeout_s=60) if len(m.objects) == 2 and m.frame_id > frame_id]
            assert tracked, node.log_text("worker")[-2000:]
            assert all(o.present for m in tracked for o in m.objects)  # the random model reads objects as present
            files = sorted(p.name for p in (state.parent / "prompts.json.tracks").iterdir())
            assert files == ["cam0.1.track", "cam0.2.track"]

            node.kill("worker")
            last_before = max(m.frame_id for m in tracked)
            node.start("worker")
            console.close()
            console = console_for(node)
            counters = status(console)["counters"]
            assert counters.get("tracks_restored") == 2, node.log_text("worker")[-2000:]
            assert "track_load_failed" not in counters
            after = [m for m in display.masks(80, timeout_s=90) if m.frame_id > last_before and m.objects][:3]
            assert len(after) == 3, node.log_text("worker")[-2000:]
            assert all({o.object_id for o in m.objects} == {1, 2} for m in after)
            assert all(o.mask.any() for m in after for o in m.objects)  # masks, not just entries
            assert all(m.frame_id > last_before for m in after)
            assert status(console)["counters"].get("prompts_applied", 0) == 0  # nobody clicked again
        finally:
            console.close()
            display.close()
