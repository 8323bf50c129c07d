"""The rgb engine reproduces SAM2's own SAM2ImagePredictor: same image, clicks and weights give the
same low-resolution and full-resolution logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samsa_stream.worker.engines import ObjectMemory
from samsa_stream.worker.engines.rgb import RgbEngine
from samsa_stream.worker.engines.sam2_engine import Sam2Memory
from samsa_stream.worker.prompts import Click, TrackedObject
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import IMAGE_SIZE, sam2_settings

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # inside sam2


def predictor_for(runner, rgb: np.ndarray):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(runner.model)
    s = IMAGE_SIZE  # the predictor hard-codes the feature sizes of 1024 px inputs
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    predictor.set_image(rgb)
    return predictor


def make_object(frame, clicks: list[tuple[float, float, bool]]) -> TrackedObject:
    obj = TrackedObject(1, "tissue", (255, 0, 0))
    for x, y, positive in clicks:
        ref = frame.cube[int(y), int(x)].astype(np.float32)
        obj.clicks.append(Click(x, y, positive, frame.frame_id, ref, frame.wavelengths_nm))
    return obj


@pytest.mark.parametrize("clicks", [
    [(30.0, 20.0, True)],  # one click: multimask output, best predicted IoU kept
    [(30.0, 20.0, True), (61.0, 44.0, False), (12.5, 40.0, True)],  # several: single-mask output
])
def test_rgb_engine_matches_sam2_image_predictor(runner, clicks) -> None:
    _, (frame,) = phantom_frames(bands=24, height=60, width=84, count=1)
    engine = RgbEngine(runner, sam2_settings())
    ctx = engine.prepare(frame)
    predictor = predictor_for(runner, frame.rgb)
    assert torch.equal(ctx.features.image_embed, predictor._features["image_embed"])

    coords = np.array([[x, y] for x, y, _ in clicks], dtype=np.float32)
    labels = np.array([int(p) for _, _, p in clicks])
    multimask = len(clicks) == 1
    masks, scores, low_res = predictor.predict(coords, labels, multimask_output=multimask, return_logits=True)

    with torch.no_grad():
        decoded = runner.decode(ctx.features, coords, labels, multimask=multimask)
        full = runner.upscale(decoded.low_res_raw, ctx.features.orig_hw)
    np.testing.assert_allclose(decoded.low_res[0].numpy(), low_res, rtol=0, atol=1e-5)
    np.testing.assert_allclose(full.numpy(), masks, rtol=0, atol=1e-5)
    np.testing.assert_allclose(decoded.scores[0].numpy(), scores, rtol=0, atol=1e-6)

    seg = engine.segment(ctx, make_object(frame, clicks), ObjectMemory())
    best = int(np.argmax(scores))
    np.testing.assert_allclose(seg.logits, masks[best], rtol=0, atol=1e-5)
    assert np.array_equal(seg.mask, masks[best] > 0)
    assert seg.score == pytest.approx(float(scores[best]), abs=1e-6)
    assert seg.similarity is None  # rgb uses no spectral map


def test_rgb_engine_follows_the_object_from_its_previous_result(runner) -> None:
    """Past the click window the clicks are no longer points: the previous mask's interior point and
    its low-res logits are the prompts (the same as calling the predictor with them)."""
    from samsa_stream.worker.engines.point_sampling import interior_point

    _, frames = phantom_frames(bands=16, height=60, width=84, count=7)
    settings = sam2_settings(frame_history=2)
    engine = RgbEngine(runner, settings)
    obj = make_object(frames[0], [(30.0, 20.0, True)])
    memory = ObjectMemory()
    engine.segment(engine.prepare(frames[0]), obj, memory)
    assert isinstance(memory.engine, Sam2Memory)
    previous_low_res = memory.engine.low_res.clone()
    previous_mask = memory.last_mask.copy()

    later = frames[5]  # 5 > frame_history frames after the click
    seg = engine.segment(engine.prepare(later), obj, memory)
    row, col = interior_point(previous_mask)
    predictor = predictor_for(runner, later.rgb)
    masks, scores, _ = predictor.predict(np.array([[col, row]], dtype=np.float32), np.array([1]),
                                         mask_input=previous_low_res[0].numpy(), multimask_output=True,
                                         return_logits=True)
    np.testing.assert_allclose(seg.logits, masks[int(np.argmax(scores))], rtol=0, atol=1e-5)
    assert isinstance(memory.engine, Sam2Memory) and memory.engine.grid[1] == later.cube.shape[:2]


def test_a_click_added_on_the_same_frame_feeds_the_previous_logits_back(runner) -> None:
    """As SAM2 does between clicks: the second click's prediction takes the first result's low-res
    logits as its mask input; asking again with the same clicks gives the same result."""
    _, (frame,) = phantom_frames(bands=16, height=60, width=84, count=1)
    engine = RgbEngine(runner, sam2_settings())
    ctx = engine.prepare(frame)
    first = make_object(frame, [(30.0, 20.0, True)])
    memory = ObjectMemory()
    engine.segment(ctx, first, memory)
    assert isinstance(memory.engine, Sam2Memory)
    first_low_res = memory.engine.low_res.clone()

    both = make_object(frame, [(30.0, 20.0, True), (61.0, 44.0, False)])
    seg = engine.segment(ctx, both, memory)
    predictor = predictor_for(runner, frame.rgb)
    masks, _, _ = predictor.predict(np.array([[30.0, 20.0], [61.0, 44.0]], dtype=np.float32), np.array([1, 0]),
                                    mask_input=first_low_res[0].numpy(), multimask_output=False, return_logits=True)
    np.testing.assert_allclose(seg.logits, masks[0], rtol=0, atol=1e-5)
    without = engine.segment(ctx, both, ObjectMemory())  # the same clicks with no earlier mask differ
    assert not np.allclose(without.logits, seg.logits, atol=1e-3)

    again = engine.segment(ctx, both, memory)
    np.testing.assert_allclose(again.logits, seg.logits, rtol=0, atol=1e-6)
