"""The rgb engine reproduces SAM2's own predictors: on a clicked frame SAM2ImagePredictor (same
image, clicks and weights give the same low-resolution and full-resolution logits), over a live
stream SAM2VideoPredictor driven in live order."""

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


def test_rgb_engine_through_the_worker_matches_sam2_video_predictor(runner, monkeypatch) -> None:
    """Clicks arrive as the worker gets them (a refining click on frame 0, a click on frame 7 before it
    is tracked, a correction on frame 13 after it was tracked) and every frame is segmented: the
    logits equal SAM2VideoPredictor's, driven in the same live order."""
    from samsa_stream.protocol import ClickPrompt
    from samsa_stream.settings import load_settings
    from samsa_stream.worker.core import Worker
    from tests.worker.engines.test_sam2_tracker import ATOL, FRAMES, ONE_OBJECT, clicks_on, run_predictor

    _, frames = phantom_frames(bands=16, height=64, width=80, count=FRAMES)
    settings = load_settings(overrides={"worker": {"engine": "rgb", "random_weights": True, "seed": 7,
                                                   "image_size": IMAGE_SIZE, "device": "cpu"}})
    engine = RgbEngine(runner, settings.worker)
    worker = Worker(settings, engine=engine)
    logits: dict[int, np.ndarray] = {}

    def segment(frame_id: int) -> None:
        result = worker.segment("cam0")
        assert result.frame_id == frame_id
        logits[frame_id] = engine_logits(worker)

    def click(frame_id: int, points, labels) -> None:
        for (x, y), label in zip(points, labels, strict=True):
            assert worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=1, x=x, y=y, positive=bool(label),
                                                    frame_id=frame_id)).ok
        segment(frame_id)  # the worker segments the frame again after a prompt change

    for frame in frames:
        worker.accept(frame)
        for _, points, labels in clicks_on(ONE_OBJECT, frame.frame_id, before=True):
            click(frame.frame_id, points, labels)
        if worker.streams["cam0"].book.objects:
            segment(frame.frame_id)
        for _, points, labels in clicks_on(ONE_OBJECT, frame.frame_id, before=False):
            click(frame.frame_id, points, labels)
    live = run_predictor(runner, [f.rgb for f in frames], ONE_OBJECT, monkeypatch)
    assert sorted(logits) == sorted(live.logits[1]) == list(range(FRAMES))
    worst = max(float(np.abs(logits[t] - live.logits[1][t]).max()) for t in logits)
    assert worst <= ATOL, worst


def engine_logits(worker) -> np.ndarray:
    """The full-size logits of object 1's newest result."""
    result = worker.streams["cam0"].memory[1].engine.track.last_result
    return result.logits


def test_a_click_added_on_the_same_frame_feeds_the_previous_logits_back(runner) -> None:
    """One frame on its own (what adapter training learns on), as SAM2's image predictor between
    clicks: the second click's prediction takes the first result's low-res logits as its mask input;
    asking again with the same clicks gives the same result."""
    _, (frame,) = phantom_frames(bands=16, height=60, width=84, count=1)
    engine = RgbEngine(runner, sam2_settings())
    ctx = engine.prepare(frame)
    first = make_object(frame, [(30.0, 20.0, True)])
    memory = ObjectMemory()
    engine.segment_image(ctx, first, memory)
    assert isinstance(memory.engine, Sam2Memory)
    first_low_res = memory.engine.low_res.clone()

    both = make_object(frame, [(30.0, 20.0, True), (61.0, 44.0, False)])
    seg = engine.segment_image(ctx, both, memory)
    predictor = predictor_for(runner, frame.rgb)
    masks, _, _ = predictor.predict(np.array([[30.0, 20.0], [61.0, 44.0]], dtype=np.float32), np.array([1, 0]),
                                    mask_input=first_low_res[0].numpy(), multimask_output=False, return_logits=True)
    np.testing.assert_allclose(seg.logits, masks[0], rtol=0, atol=1e-5)
    without = engine.segment_image(ctx, both, ObjectMemory())  # the same clicks with no earlier mask differ
    assert not np.allclose(without.logits, seg.logits, atol=1e-3)

    again = engine.segment_image(ctx, both, memory)
    np.testing.assert_allclose(again.logits, seg.logits, rtol=0, atol=1e-6)
