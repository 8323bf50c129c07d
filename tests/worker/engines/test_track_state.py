"""A saved SAM2 track restores into a fresh worker (new model, new tracker) and continues exactly as the
original; saved sizes stay flat over a long stream; anything that is not such a track is refused with
an EngineError that names the problem."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from samsa_stream.worker.engines.base import EngineError
from samsa_stream.worker.engines.sam2_tracker import ObjectTrack, Sam2Tracker, TrackResult
from samsa_stream.worker.engines.track_state import (
    TRACK_STATE_FORMAT,
    TRACK_STATE_VERSION,
    TrackLayout,
    _crc32,
    load_track,
    model_identity,
    save_track,
    track_layout,
)
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import IMAGE_SIZE, sam2_settings

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),  # inside sam2
              pytest.mark.usefixtures("one_torch_thread")]

ATOL = 1e-6
CPU = torch.device("cpu")
# (frame, points, labels, before tracking): a refining click on a tracked frame (4) and a click on an
# untracked one (7); with two conditioning frames kept, frame 4 moves to the recent frames out of order.
CLICKS = [(0, [(30.0, 20.0)], [1], True), (4, [(50.0, 36.0)], [1], False), (7, [(40.0, 30.0)], [1], True)]


def tracking_runner():
    """A random-weight model whose object-score head sees the object (as in test_sam2_tracker)."""
    from samsa_stream.worker.engines.sam2_model import load_sam2
    from samsa_stream.worker.engines.sam2_runner import Sam2Runner

    runner = Sam2Runner(load_sam2(sam2_settings()))
    with torch.no_grad():
        runner.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 0.5
    return runner


@pytest.fixture(scope="module")
def runner_before():
    return tracking_runner()


@pytest.fixture(scope="module")
def video() -> list[np.ndarray]:
    _, frames = phantom_frames(bands=8, height=64, width=80, count=31)
    return [f.rgb for f in frames]


def drive(tracker: Sam2Tracker, track: ObjectTrack, video: list[np.ndarray], frames: range,
          clicks=CLICKS) -> dict[int, TrackResult]:
    """Frames in live order: clicks before tracking, tracking once the object has clicks, clicks after."""
    results: dict[int, TrackResult] = {}
    for t in frames:
        frame = tracker.frame_features(video[t])
        for when in (True, False):
            for clicked, points, labels, before in clicks:
                if clicked == t and before == when:
                    results[t] = tracker.click(track, t, frame, np.array(points, np.float32), np.array(labels))
            if when and track.cond:
                results[t] = tracker.track(track, t, frame)
    return results


def entries(track: ObjectTrack):
    return [*track.cond.values(), *track.recent.values()]


@pytest.fixture(scope="module")
def saved(runner_before, video) -> tuple[bytes, dict[str, object], TrackLayout]:
    """A track saved after frame 10, its model identity and the model's layout."""
    tracker = Sam2Tracker(runner_before, max_cond_frames=2)
    track = tracker.new_track()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_torch_thread does for each test (it is set up after module fixtures)
    try:
        drive(tracker, track, video, range(11))
    finally:
        torch.set_num_threads(threads)
    model_id = model_identity(runner_before)
    return save_track(track, model_id), model_id, track_layout(tracker)


def test_a_restored_track_continues_exactly_after_a_restart(runner_before, video) -> None:
    tracker = Sam2Tracker(runner_before, max_cond_frames=2)
    original = tracker.new_track()
    drive(tracker, original, video, range(11))
    assert sorted(original.cond) == [0, 7] and 4 in original.recent  # a dropped conditioning frame is recent
    data = save_track(original, model_identity(runner_before))

    # The restarted worker: its own model (same weights) and a tracker that has never encoded a memory.
    runner_after = tracking_runner()
    restarted = Sam2Tracker(runner_after, max_cond_frames=2)
    restored = load_track(data, model_identity(runner_after), runner_after.device, track_layout(restarted))
    assert list(restored.cond) == list(original.cond)
    assert sorted(restored.recent) == sorted(original.recent)
    assert (restored.last_frame, restored.last_tracked) == (10, True)
    assert restored.last_result is None and restored.points is None
    for kept, back in zip(entries(original), [*restored.cond.values(), *(restored.recent[t] for t in original.recent)],
                          strict=True):
        assert back.frame_idx == kept.frame_idx
        assert torch.equal(back.obj_ptr, kept.obj_ptr) and back.obj_ptr.dtype == kept.obj_ptr.dtype
        assert torch.equal(back.object_score_logits, kept.object_score_logits)
        assert back.object_score_logits.dtype == kept.object_score_logits.dtype
        assert (back.maskmem_features is None) == (kept.maskmem_features is None)
        if kept.maskmem_features is not None:
            assert back.maskmem_features is not None and back.maskmem_pos_enc is not None
            assert kept.maskmem_pos_enc is not None
            assert torch.equal(back.maskmem_features, kept.maskmem_features)
            assert back.maskmem_features.dtype == torch.bfloat16
            assert torch.equal(back.maskmem_pos_enc[0], kept.maskmem_pos_enc[0])

    # The next five frames, with a click on one of them, on both sides.
    more = [*CLICKS, (13, [(20.0, 44.0)], [0], False)]
    expected = drive(tracker, original, video, range(11, 16), more)
    got = drive(restarted, restored, video, range(11, 16), more)
    assert sorted(got) == sorted(expected) == list(range(11, 16))
    for t in expected:
        assert np.allclose(got[t].logits, expected[t].logits, rtol=0, atol=ATOL), t
        assert torch.allclose(got[t].low_res, expected[t].low_res, rtol=0, atol=ATOL), t
        assert got[t].present == expected[t].present
    # Not a vacuous match: the memory matters (a track restarted from its clicks alone differs) and the
    # object is there.
    assert all(r.present for r in expected.values())
    fresh = restarted.new_track()
    alone = restarted.click(fresh, 11, restarted.frame_features(video[11]), np.array([[40.0, 30.0]]), np.array([1]))
    assert float(np.abs(alone.logits - expected[11].logits).max()) > 1e-2


def test_saved_size_is_bounded_and_flat_once_the_windows_are_full(runner_before, video) -> None:
    tracker = Sam2Tracker(runner_before)
    track = tracker.new_track()
    model_id = model_identity(runner_before)
    sizes: dict[int, int] = {}
    counts: dict[int, int] = {}
    frame_clicks = [CLICKS[0]]
    for t in range(31):
        drive(tracker, track, video, range(t, t + 1), frame_clicks)
        if t in (10, 16, 23, 30):
            sizes[t] = len(save_track(track, model_id))
            counts[t] = track.pointer_entries()
    layout = track_layout(tracker)
    feature_bytes = int(np.prod(layout.memory_shape)) * 2  # bfloat16
    pointer_bytes = int(np.prod(layout.pointer_shape)) * 4  # float32 on the CPU
    print(f"saved track bytes at {IMAGE_SIZE} px after frames {sorted(sizes)}: {sizes}")
    # Frame 16 on, both windows are full (the clicked frame, the current one and the pointer window before
    # it): the same entries, only JSON digits differ.
    assert counts[16] == counts[23] == counts[30] == 2 + tracker.pointer_window
    assert max(sizes[16], sizes[23], sizes[30]) - min(sizes[16], sizes[23], sizes[30]) <= 0.01 * sizes[30]
    # Frame 10: the memory window is full, the pointer window not yet; only pointers are added later.
    grown = sizes[30] - sizes[10]
    assert 0 < grown <= (counts[30] - counts[10]) * (pointer_bytes + 200)
    # Bounded by what the tracker keeps: memory features, one positional encoding, pointers, a header.
    features = 1 + tracker.memory_window + tracker.max_cond_frames
    pointers = 1 + tracker.pointer_window + tracker.max_cond_frames
    assert sizes[30] <= features * feature_bytes + feature_bytes * 2 + pointers * (pointer_bytes + 300)


def test_model_identity_and_layout(runner_before) -> None:
    tracker = Sam2Tracker(runner_before)
    assert model_identity(runner_before) == {"variant": "sam2.1_hiera_tiny", "image_size": IMAGE_SIZE,
                                             "source": "random weights (seed 7)"}
    assert track_layout(tracker) == TrackLayout(memory_shape=(1, 64, IMAGE_SIZE // 16, IMAGE_SIZE // 16),
                                                pointer_shape=(1, 256), memory_window=6, pointer_window=15,
                                                max_cond_frames=4)


# -- refusals ------------------------------------------------------------------------------------


def parts(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """The tensors, the metadata and the track description of a saved track."""
    (size,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8:8 + size])["__metadata__"]
    return st_load(data), metadata, json.loads(metadata["track"])


def rebuilt(tensors: dict[str, torch.Tensor], metadata: dict[str, str], description: dict) -> bytes:
    """A state with edited parts and a checksum that matches them (so the edit itself is what is refused)."""
    text = json.dumps(description)
    return st_save(tensors, metadata={**metadata, "track": text, "crc32": _crc32(text, tensors)})


def test_the_saved_bytes_are_what_the_format_says(saved) -> None:
    data, _, _ = saved
    tensors, metadata, description = parts(data)
    assert metadata["format"] == TRACK_STATE_FORMAT and metadata["version"] == str(TRACK_STATE_VERSION)
    assert [e["frame"] for e in description["cond"]] == [0, 7]
    assert [e["frame"] for e in description["recent"]] == [1, 2, 3, 4, 5, 6, 8, 9, 10]  # oldest first
    assert "memory_pos_enc" in tensors and tensors["features.0"].dtype == torch.bfloat16


def test_other_models_memory_is_refused(saved) -> None:
    data, model_id, layout = saved
    other = {**model_id, "image_size": 1024}
    with pytest.raises(EngineError, match="memory of model") as info:
        load_track(data, other, CPU, layout)
    assert "'image_size': 128" in str(info.value) and "'image_size': 1024" in str(info.value)
    with pytest.raises(EngineError, match="checkpoint.pt"):
        load_track(data, {**model_id, "source": "/models/checkpoint.pt"}, CPU, layout)


def test_size_limits(saved) -> None:
    data, model_id, layout = saved
    with pytest.raises(EngineError, match=f"{len(data)} bytes, more than the {len(data) - 1}"):
        load_track(data, model_id, CPU, layout, max_bytes=len(data) - 1)
    with pytest.raises(EngineError, match=f"{len(data)} bytes, more than"):
        load_track(memoryview(data), model_id, CPU, layout, max_bytes=len(data) - 1)
    assert isinstance(load_track(data, model_id, CPU, layout, max_bytes=len(data)), ObjectTrack)
    track = load_track(data, model_id, CPU, layout)
    with pytest.raises(EngineError, match="more than the 1000"):
        save_track(track, model_id, max_bytes=1000)


def test_what_cannot_be_saved(saved) -> None:
    data, model_id, layout = saved
    with pytest.raises(EngineError, match="no clicks yet"):
        save_track(ObjectTrack(), model_id)
    track = load_track(data, model_id, CPU, layout)
    with pytest.raises(EngineError, match="JSON values"):
        save_track(track, {"weights": object()})
    track.cond[0].maskmem_features = track.cond[0].maskmem_features.float().fill_(float("nan"))  # type: ignore[union-attr]
    with pytest.raises(EngineError, match="'features.0'"):
        save_track(track, model_id)


def _edit(data: bytes, how: str) -> bytes:
    tensors, metadata, description = parts(data)
    if how == "format":
        metadata["format"] = "other/format"
    elif how == "newer":
        metadata["version"] = str(TRACK_STATE_VERSION + 1)
    elif how == "version":
        metadata["version"] = "one"
    elif how == "digit":
        metadata["version"] = "\u00b2"  # a digit to str.isdigit, not to int()
    elif how == "no-metadata":
        return st_save(tensors)
    elif how == "missing":
        del tensors["obj_ptr.3"]
    elif how == "extra":
        tensors["junk"] = torch.zeros(1)
    elif how == "dtype":
        tensors["features.7"] = tensors["features.7"].float()
    elif how == "shape":
        tensors["obj_ptr.2"] = torch.zeros(1, 128)
    elif how == "nan":
        tensors["obj_ptr.5"][0, 3] = float("nan")
    elif how == "inf-features":
        tensors["features.10"][0, 0, 0, 0] = float("inf")
    elif how == "score":
        description["recent"][2]["score"] = 1e39  # beyond float32
    elif how == "order":
        description["cond"].reverse()
    elif how == "negative":
        description["cond"][0]["frame"] = -1
        tensors["obj_ptr.-1"], tensors["features.-1"] = tensors.pop("obj_ptr.0"), tensors.pop("features.0")
    elif how == "fraction":
        description["recent"][0]["frame"] = 1.5
    elif how == "last-frame":
        description["last_frame"] = 12
    elif how == "features-gap":
        description["recent"][-2]["features"] = False
        del tensors["features.9"]
    elif how == "both":
        description["recent"][0]["frame"] = 0
    elif how == "no-cond":
        moved = [{**e, "features": True} for e in description["cond"]]
        description["recent"] = sorted(moved + description["recent"], key=lambda e: e["frame"])
        description["cond"] = []
    elif how == "unknown-field":
        description["offset"] = 3
    return rebuilt(tensors, metadata, description)


@pytest.mark.parametrize(("how", "message"), [
    ("format", "format 'other/format', expected 'samsa-stream/sam2-track'"),
    ("newer", f"version {TRACK_STATE_VERSION + 1}, newer"),
    ("version", "no valid version"),
    ("digit", "no valid version"),
    ("no-metadata", "no format metadata"),
    ("missing", r"missing tensors \['obj_ptr.3'\]"),
    ("extra", r"extra tensors \['junk'\]"),
    ("dtype", "'features.7' is 'F32', expected BF16"),
    ("shape", r"'obj_ptr.2' has shape \(1, 128\), expected \(1, 256\)"),
    ("nan", "'obj_ptr.5' holds non-finite values"),
    ("inf-features", "'features.10' holds non-finite values"),
    ("score", "score must be a finite float32"),
    ("order", "conditioning frame indices must increase, got 7 then 0"),
    ("negative", "integers 0..", ),
    ("fraction", "got 1.5"),
    ("last-frame", "last_frame is 12, but its newest frame is 10"),
    ("features-gap", "without memory features after ones with them"),
    ("both", r"frame\(s\) \[0\] both as conditioning and as recent"),
    ("no-cond", "no conditioning frame"),
    ("unknown-field", "unknown fields"),
])
def test_bad_states_are_refused_by_name(saved, how, message) -> None:
    data, model_id, layout = saved
    with pytest.raises(EngineError, match=message):
        load_track(_edit(data, how), model_id, CPU, layout)


def test_shapes_are_checked_against_the_model(saved) -> None:
    """A file whose tensors agree with each other but not with the model reading it is refused."""
    data, model_id, layout = saved
    tensors, metadata, description = parts(data)
    narrow = {name: t[:, :32].contiguous() if t.ndim == 4 else t for name, t in tensors.items()}
    with pytest.raises(EngineError, match=r"has shape \(1, 32, 8, 8\), expected \(1, 64, 8, 8\)"):
        load_track(rebuilt(narrow, metadata, description), model_id, CPU, layout)
    with pytest.raises(EngineError, match=r"has shape \(1, 256\), expected \(1, 128\)"):
        load_track(data, model_id, CPU, dataclasses.replace(layout, pointer_shape=(1, 128)))


def test_a_restored_track_is_as_bounded_as_the_tracker_keeps_it(saved) -> None:
    data, model_id, layout = saved
    with pytest.raises(EngineError, match="do not follow the memory window of 3 frames"):
        load_track(data, model_id, CPU, dataclasses.replace(layout, memory_window=3))
    with pytest.raises(EngineError, match=r"recent frames \[1, 2\] older than the tracker keeps"):
        load_track(data, model_id, CPU, dataclasses.replace(layout, pointer_window=7))
    with pytest.raises(EngineError, match="2 conditioning frames, more than the 1"):
        load_track(data, model_id, CPU, dataclasses.replace(layout, max_cond_frames=1))


@pytest.mark.parametrize(("data", "message"), [
    (b"", "truncated"), (b"\x10\x00\x00", "truncated"), (b"\xff" * 64, "truncated"),
    (struct.pack("<Q", 4) + b"abcd", "not JSON"), (struct.pack("<Q", 2) + b"[]", "must be a map"),
    (st_save({"a": torch.zeros(2)}), "no format metadata"),
    ("text", "must be bytes"),
])
def test_foreign_bytes_are_refused(saved, data, message) -> None:
    with pytest.raises(EngineError, match=message):
        load_track(data, saved[1], CPU, saved[2])


def test_truncated_or_damaged_tensor_data_is_refused(saved) -> None:
    data, model_id, layout = saved
    with pytest.raises(EngineError, match="tensors cannot be read"):
        load_track(data[:-1], model_id, CPU, layout)
    damaged = bytearray(data)
    damaged[-100] ^= 1  # a bit of a tensor value: still a finite number, but not the saved one
    with pytest.raises(EngineError, match="damaged: its checksum does not match"):
        load_track(bytes(damaged), model_id, CPU, layout)
    tensors, metadata, _ = parts(data)
    with pytest.raises(EngineError, match="damaged"):
        load_track(st_save(tensors, metadata={**metadata, "crc32": "0"}), model_id, CPU, layout)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1, exclude_max=True), flip=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7),
       in_header=st.booleans())
def test_damaged_bytes_give_engine_errors_only(saved, cut, flip, bit, in_header) -> None:
    """A truncated state and a state with any one bit flipped are refused, with an EngineError only."""
    data, model_id, layout = saved
    with pytest.raises(EngineError):
        load_track(data[:int(cut * len(data))], model_id, CPU, layout)
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    where = int(flip * (header_end if in_header else len(data)))
    damaged = bytearray(data)
    damaged[where] ^= 1 << bit
    with pytest.raises(EngineError):
        load_track(bytes(damaged), model_id, CPU, layout)
