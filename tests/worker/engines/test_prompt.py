"""The prompt engine: similarity as a dense mask prompt on SAM2's logit scale, extra points from
confident regions, and the previous step's logits combined on later clicks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samsa_stream.settings import PromptEngineSettings
from samsa_stream.worker.engines import ObjectMemory
from samsa_stream.worker.engines.prompt import PromptEngine
from samsa_stream.worker.engines.rgb import RgbEngine
from samsa_stream.worker.engines.sam2_engine import Sam2TrackMemory, SpectralMaps
from samsa_stream.worker.prompts import Click
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import sam2_settings
from tests.worker.engines.test_rgb_fidelity import make_object


def spy_decode(monkeypatch: pytest.MonkeyPatch, runner) -> list[dict]:
    calls: list[dict] = []
    original = runner.decode

    def decode(features, points, labels, **kwargs):
        calls.append({"points": np.array(points), "labels": np.array(labels), **kwargs})
        return original(features, points, labels, **kwargs)

    monkeypatch.setattr(runner, "decode", decode)
    return calls


def test_similarity_maps_to_the_logit_scale(runner) -> None:
    engine = PromptEngine(runner, sam2_settings(engine="prompt", prompt={"mask_logit_scale": 10.0}))
    thr = engine.threshold_rad
    g = runner.mask_size
    for theta, expected in ((0.0, 10.0), (thr / 2, 5.0), (thr, 0.0), (2 * thr, -10.0), (1.0, -10.0)):
        similarity = torch.full((40, 60), 1 - theta / (math.pi / 2))
        logits = engine.spectral_logits(SpectralMaps(similarity, None, similarity))
        assert logits.shape == (1, 1, g, g)
        assert torch.allclose(logits, torch.tensor(expected), atol=1e-3), theta


def test_extra_points_land_in_confident_regions(runner) -> None:
    cam, frames = phantom_frames(bands=32, height=60, width=84, count=1, objects=2)
    frame = frames[0]
    x, y = cam.centre(0, 0)
    obj = make_object(frame, [(x, y, True)])
    engine = PromptEngine(runner, sam2_settings(engine="prompt", prompt={"extra_positive_points": 2,
                                                                        "extra_negative_points": 2}))
    ctx = engine.prepare(frame)
    points = engine.base_points(ctx, obj)
    engine.extra_points(ctx, points, engine.spectral_maps(ctx, obj))
    added = list(zip(points.coords[1:], points.labels[1:], strict=True))
    labels = [label for _, label in added]
    assert labels.count(0) == 2 and 1 <= labels.count(1) <= 2  # a small object may have room for one only
    for (px, py), label in added:
        on_object = frame.labels[int(py), int(px)] == 1
        assert on_object == (label == 1), (px, py, label)
        assert (px, py) != (x, y)


def test_no_extra_points_when_switched_off(runner) -> None:
    cam, (frame,) = phantom_frames(bands=16, height=60, width=84, count=1)
    settings = sam2_settings(engine="prompt", prompt={"extra_positive_points": 0, "extra_negative_points": 0})
    engine = PromptEngine(runner, settings)
    ctx = engine.prepare(frame)
    points = engine.base_points(ctx, make_object(frame, [(*cam.centre(0, 0), True)]))
    engine.extra_points(ctx, points, None)
    assert len(points.coords) == 1


def spy_steps(monkeypatch: pytest.MonkeyPatch, engine: PromptEngine) -> list[dict]:
    """Record what each tracker step gets: points and the dense mask prompt."""
    calls: list[dict] = []
    original = engine.tracker._step

    def step(track, frame_idx, frame, is_init, points, mask_prompt, high_res_delta):
        calls.append({"frame": frame_idx, "points": points, "mask_prompt": mask_prompt})
        return original(track, frame_idx, frame, is_init, points, mask_prompt, high_res_delta)

    monkeypatch.setattr(engine.tracker, "_step", step)
    return calls


def test_the_spectral_prompt_enters_clicked_refined_and_tracked_frames(runner, monkeypatch) -> None:
    cam, frames = phantom_frames(bands=16, height=60, width=84, count=2)
    engine = PromptEngine(runner, sam2_settings(engine="prompt"))
    frame = frames[0]
    ctx = engine.prepare(frame)
    x, y = cam.centre(0, 0)
    obj = make_object(frame, [(x, y, True)])
    memory = ObjectMemory()
    calls = spy_steps(monkeypatch, engine)
    engine.segment(ctx, obj, memory)
    assert torch.equal(calls[0]["mask_prompt"], engine.spectral_logits(engine.spectral_maps(ctx, obj)))
    assert isinstance(memory.engine, Sam2TrackMemory)
    previous = memory.engine.track.last_result.low_res.clone()

    # A click added on the same frame: the previous logits plus the spectral prompt, the clicks first.
    obj.clicks.append(Click(5.0, 5.0, False, frame.frame_id, frame.cube[5, 5], frame.wavelengths_nm))
    engine.segment(ctx, obj, memory)
    expected = (previous + engine.spectral_logits(engine.spectral_maps(ctx, obj))).clamp(-32, 32)
    assert torch.allclose(calls[1]["mask_prompt"], expected)
    assert calls[1]["points"]["point_labels"][0, :2].tolist() == [1, 0]

    # A tracked frame: no points, the spectral prompt of that frame next to the memory.
    later = engine.prepare(frames[1])
    seg = engine.segment(later, obj, memory)
    assert calls[2]["frame"] == 1 and calls[2]["points"] is None
    assert torch.equal(calls[2]["mask_prompt"], engine.spectral_logits(engine.spectral_maps(later, obj)))
    assert seg.memory_frames == 2  # the clicked frame and this one

    # An undo goes back to the memory before the undone click and tracks the frame from there.
    obj.clicks.pop()
    engine.segment(later, obj, memory)
    assert memory.engine.applied == memory.engine.applied[:1] and len(memory.engine.applied) == 1
    assert memory.engine.track.last_frame == 1 and list(memory.engine.track.cond) == [0]


def test_prompt_engine_differs_from_plain_sam2(runner) -> None:
    cam, (frame,) = phantom_frames(bands=16, height=60, width=84, count=1)
    obj = make_object(frame, [(*cam.centre(0, 0), True)])
    prompt = PromptEngine(runner, sam2_settings(engine="prompt"))
    rgb = RgbEngine(runner, sam2_settings())
    a = prompt.segment(prompt.prepare(frame), obj, ObjectMemory())
    b = rgb.segment(rgb.prepare(frame), obj, ObjectMemory())
    assert np.abs(a.logits - b.logits).max() > 1e-3
    assert a.similarity is not None and 0 <= a.similarity.min() and a.similarity.max() <= 1


def test_prompt_knob_defaults_are_documented() -> None:
    knobs = PromptEngineSettings()
    assert (knobs.mask_logit_scale, knobs.extra_positive_points, knobs.extra_negative_points) == (10.0, 1, 1)
    for name, field in PromptEngineSettings.model_fields.items():
        assert field.description, name
