"""The live SAM2 tracker reproduces SAM2's own SAM2VideoPredictor when the predictor is driven in live
order (clicks added only when their frame is the newest, propagation only up to the newest frame),
keeps each object's memory independent and bounded, and lets the model decide object presence.

Both sides get the same preprocessed frames: the tracker's ``Sam2Runner.preprocess`` tensors are
what the predictor's frame loader returns.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samsa_stream.worker.engines.base import EngineError
from samsa_stream.worker.engines.sam2_tracker import ObjectTrack, Sam2Tracker, TrackResult
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import sam2_settings

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),  # inside sam2
              pytest.mark.usefixtures("one_torch_thread")]

FRAMES = 20  # > the memory window (6) and >= the pointer cap (16), which SAM2 clamps to the video length
# Both sides run the same float32 CPU kernels, so they agree exactly today; 1e-6 leaves room for kernel
# differences while still catching a slip such as float32 instead of bfloat16 memory (about 2e-5 here).
ATOL = 1e-6


@pytest.fixture(scope="module")
def tracking_runner():
    """A random-weight model (its object-score head shifted to see objects: ``see_objects``)."""
    from samsa_stream.worker.engines.sam2_model import load_sam2
    from samsa_stream.worker.engines.sam2_runner import Sam2Runner

    return Sam2Runner(load_sam2(sam2_settings()))


@pytest.fixture(scope="module")
def video() -> list[np.ndarray]:
    _, frames = phantom_frames(bands=16, height=64, width=80, count=FRAMES)
    return [f.rgb for f in frames]


def video_predictor(runner):
    """SAM2's video predictor with the runner's weights and SAM2's video post-processing settings
    (hole filling needs SAM2's CUDA extension, so it is off on both sides)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from samsa_stream.worker.engines.sam2_model import model_config

    cfg = model_config(runner.loaded.variant.config, runner.image_size)
    OmegaConf.set_struct(cfg, False)
    cfg._target_ = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    cfg.binarize_mask_from_pts_for_mem_enc = True
    cfg.fill_hole_area = 0
    cfg.add_all_frames_to_correct_as_cond = True  # a click on a tracked frame makes it a conditioning frame
    predictor = instantiate(cfg, _recursive_=True)
    predictor.load_state_dict(runner.model.state_dict())
    return predictor.eval()


def predictor_state(predictor, runner, video: list[np.ndarray], monkeypatch) -> dict:
    import sam2.sam2_video_predictor as svp

    images = torch.cat([runner.preprocess(rgb) for rgb in video])
    h, w = video[0].shape[:2]
    monkeypatch.setattr(svp, "load_video_frames", lambda **_: (images, h, w))
    return predictor.init_state(video_path="live")


class Live:
    """Drives the predictor in live order and records its per-frame logits for each object id."""

    def __init__(self, predictor, state: dict) -> None:
        self.predictor, self.state = predictor, state
        self.logits: dict[int, dict[int, np.ndarray]] = {}

    def click(self, frame_idx: int, obj_id: int, points: list[tuple[float, float]], labels: list[int]) -> None:
        _, ids, masks = self.predictor.add_new_points_or_box(self.state, frame_idx, obj_id,
                                                             points=np.array(points, np.float32),
                                                             labels=np.array(labels, np.int32),
                                                             clear_old_points=False)
        self.logits.setdefault(obj_id, {})[frame_idx] = masks[ids.index(obj_id), 0].numpy().copy()

    def propagate(self, frame_idx: int) -> None:
        """Track every object on the newest frame only (nothing later exists yet)."""
        for t, ids, masks in self.predictor.propagate_in_video(self.state, start_frame_idx=frame_idx,
                                                               max_frame_num_to_track=0):
            for k, obj_id in enumerate(ids):
                self.logits.setdefault(obj_id, {})[t] = masks[k, 0].numpy().copy()

    def low_res(self, obj_id: int, frame_idx: int) -> torch.Tensor:
        outputs = self.state["output_dict_per_obj"][self.state["obj_id_to_idx"][obj_id]]
        out = outputs["cond_frame_outputs"].get(frame_idx) or outputs["non_cond_frame_outputs"][frame_idx]
        return out["pred_masks"]


# One live session: (frame, object id, points, labels, before) clicks. Each frame: the clicks made
# before the object is tracked on it, then every started object is tracked, then the other clicks.
Script = list[tuple[int, int, list[tuple[float, float]], list[int], bool]]
ONE_OBJECT: Script = [
    (0, 1, [(30.0, 20.0)], [1], True), (0, 1, [(52.0, 40.0)], [0], True),  # a refining click on frame 0
    (7, 1, [(40.0, 30.0)], [1], True),  # on a frame not yet tracked: the clicks alone segment it
    (13, 1, [(20.0, 44.0)], [0], False),  # on a tracked frame: refined with memory
]
TWO_OBJECTS: Script = [*ONE_OBJECT, (5, 2, [(60.0, 16.0)], [1], False),
                       (11, 2, [(58.0, 20.0), (10.0, 50.0)], [1, 0], False)]


def clicks_on(script: Script, frame_idx: int, before: bool):
    return [(obj_id, points, labels) for t, obj_id, points, labels, b in script if t == frame_idx and b == before]


def run_tracker(runner, video: list[np.ndarray], script: Script, tracker: Sam2Tracker | None = None,
                ) -> tuple[dict[int, dict[int, TrackResult]], dict[int, ObjectTrack]]:
    tracker = tracker or Sam2Tracker(runner)
    tracks: dict[int, ObjectTrack] = {}
    results: dict[int, dict[int, TrackResult]] = {}

    def click(frame_idx, frame, obj_id, points, labels) -> None:
        track = tracks.setdefault(obj_id, tracker.new_track())
        results.setdefault(obj_id, {})[frame_idx] = tracker.click(
            track, frame_idx, frame, np.array(points, np.float32), np.array(labels))

    for frame_idx, rgb in enumerate(video):
        frame = tracker.frame_features(rgb)
        for obj_id, points, labels in clicks_on(script, frame_idx, before=True):
            click(frame_idx, frame, obj_id, points, labels)
        for obj_id, track in tracks.items():
            results[obj_id][frame_idx] = tracker.track(track, frame_idx, frame)
        for obj_id, points, labels in clicks_on(script, frame_idx, before=False):
            click(frame_idx, frame, obj_id, points, labels)
    return results, tracks


def run_predictor(runner, video: list[np.ndarray], script: Script, monkeypatch) -> Live:
    predictor = video_predictor(runner)
    live = Live(predictor, predictor_state(predictor, runner, video, monkeypatch))
    for frame_idx in range(len(video)):
        for obj_id, points, labels in clicks_on(script, frame_idx, before=True):
            live.click(frame_idx, obj_id, points, labels)
        if live.state["obj_ids"]:
            live.propagate(frame_idx)
        for obj_id, points, labels in clicks_on(script, frame_idx, before=False):
            live.click(frame_idx, obj_id, points, labels)
    return live


def compare(results, live: Live) -> float:
    worst = 0.0
    for obj_id, per_frame in results.items():
        assert sorted(per_frame) == sorted(live.logits[obj_id])
        for frame_idx, result in per_frame.items():
            expected = live.logits[obj_id][frame_idx]
            diff = float(np.abs(result.logits - expected).max())
            low = float((result.low_res - live.low_res(obj_id, frame_idx)).abs().max())
            assert diff <= ATOL and low <= ATOL, f"object {obj_id} frame {frame_idx}: {diff:.2e} / {low:.2e}"
            assert result.logits.shape == video_shape(live) and result.logits.dtype == np.float32
            assert np.array_equal(result.mask, result.logits > 0)
            worst = max(worst, diff, low)
    return worst


def video_shape(live: Live) -> tuple[int, int]:
    return live.state["video_height"], live.state["video_width"]


@pytest.mark.parametrize("script", [ONE_OBJECT, TWO_OBJECTS], ids=["one-object", "two-objects"])
def test_tracker_matches_sam2_video_predictor_in_live_order(tracking_runner, video, script, monkeypatch) -> None:
    results, _ = run_tracker(tracking_runner, video, script)
    live = run_predictor(tracking_runner, video, script, monkeypatch)
    worst = compare(results, live)
    print(f"max abs logit difference to SAM2VideoPredictor over {FRAMES} frames: {worst:.3g}")
    first = results[1]
    assert len(first) == FRAMES
    # Not a vacuous match: the logits change from frame to frame and the object is there.
    changes = [float(np.abs(first[t].logits - first[t - 1].logits).max()) for t in range(1, FRAMES)]
    assert all(c > 1e-2 for c in changes), changes
    assert all(r.present for r in first.values())


def test_a_second_object_leaves_the_first_bit_identical(tracking_runner, video) -> None:
    alone, _ = run_tracker(tracking_runner, video, ONE_OBJECT)
    both, _ = run_tracker(tracking_runner, video, TWO_OBJECTS)
    assert sorted(both[2]) == list(range(5, FRAMES))
    for frame_idx, result in alone[1].items():
        assert torch.equal(result.low_res, both[1][frame_idx].low_res), frame_idx
        assert np.array_equal(result.logits, both[1][frame_idx].logits)


def test_memory_stays_bounded_over_a_long_run(runner) -> None:
    _, frames = phantom_frames(bands=8, height=64, width=64, count=40)
    tracker = Sam2Tracker(runner, max_cond_frames=3)
    track = tracker.new_track()
    clicked = {0, 9, 18, 27, 33}
    worst_features = worst_pointers = 0
    for frame_idx, f in enumerate(frames):
        frame = tracker.frame_features(f.rgb)
        if frame_idx:
            result = tracker.track(track, frame_idx, frame)
        if frame_idx in clicked:
            result = tracker.click(track, frame_idx, frame, np.array([[32.0, 30.0]]), np.array([1]))
        if frame_idx == 33:  # 18 left the conditioning frames but is still in the pointer window
            assert 18 in track.recent and track.recent[18].maskmem_features is None
        assert isinstance(result.present, bool)
        assert result.present == (result.object_score_logit > 0)
        assert result.low_res.device == runner.device
        worst_features = max(worst_features, track.memory_entries())
        worst_pointers = max(worst_pointers, track.pointer_entries())
    assert sorted(track.cond) == [0, 27, 33]  # the first and the newest conditioning frames
    # The current frame plus the windows before it, plus the capped conditioning frames.
    assert worst_features <= 1 + tracker.memory_window + tracker.max_cond_frames
    assert worst_pointers <= 1 + tracker.pointer_window + tracker.max_cond_frames
    # What is left: every tracked frame in the pointer window (a clicked frame is a conditioning one).
    assert sorted(track.recent) == [t for t in range(39 - tracker.pointer_window, 40) if t not in track.cond]
    assert all((e.maskmem_features is None) == (t < 39 - tracker.memory_window) for t, e in track.recent.items())
    for entry in (*track.cond.values(), *track.recent.values()):
        if entry.maskmem_features is not None:
            assert entry.maskmem_features.dtype == torch.bfloat16


def test_presence_is_the_models_decision(runner, monkeypatch) -> None:
    """A forced negative object score makes the object absent (SAM2 then outputs its no-object logits)."""
    _, (f,) = phantom_frames(bands=8, height=64, width=64, count=1)
    tracker = Sam2Tracker(runner)
    frame = tracker.frame_features(f.rgb)
    decoder = runner.model.sam_mask_decoder
    original = decoder.forward

    def absent(*args, **kwargs):
        masks, ious, tokens, scores = original(*args, **kwargs)
        return masks, ious, tokens, torch.full_like(scores, -3.0)

    monkeypatch.setattr(decoder, "forward", absent)
    result = tracker.click(tracker.new_track(), 0, frame, np.array([[32.0, 30.0]]), np.array([1]))
    assert result.present is False and result.object_score_logit == -3.0
    assert not result.mask.any()


def test_live_order_and_inputs_are_checked(runner) -> None:
    _, frames = phantom_frames(bands=8, height=64, width=64, count=1)
    tracker = Sam2Tracker(runner)
    frame = tracker.frame_features(frames[0].rgb)
    track = tracker.new_track()
    with pytest.raises(EngineError, match="no clicks yet"):
        tracker.track(track, 0, frame)
    with pytest.raises(EngineError, match=r"\(N, 2\)"):
        tracker.click(track, 0, frame, np.array([1.0, 2.0]), np.array([1]))
    with pytest.raises(EngineError, match="labels"):
        tracker.click(track, 0, frame, np.array([[1.0, 2.0]]), np.array([2]))
    tracker.click(track, 3, frame, np.array([[10.0, 12.0]]), np.array([1]))
    with pytest.raises(EngineError, match="arrived after frame 3"):
        tracker.track(track, 2, frame)
    with pytest.raises(EngineError, match="max_cond_frames"):
        Sam2Tracker(runner, max_cond_frames=1)
    with pytest.raises(EngineError, match="uint8"):
        tracker.frame_features(np.zeros((8, 8, 3), np.float32))
