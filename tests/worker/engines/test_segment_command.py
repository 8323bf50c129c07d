"""``samsa-stream segment`` on capture files the ingest reads, and its errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.commands.segment import ClickSpec, parse_click
from samsa_stream.errors import CommandError
from samsa_stream.spectral.angles import spectral_angles
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import IMAGE_SIZE

SAM2_FLAGS = ["--random-weights", "--seed", "1", "--image-size", str(IMAGE_SIZE), "--device", "cpu"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, list]:
    cam, frames = phantom_frames(bands=24, height=48, width=64, count=3, objects=2)
    path = tmp_path_factory.mktemp("captures") / "capture.npz"
    np.savez(path, cubes=np.stack([f.cube for f in frames]), wavelengths_nm=frames[0].wavelengths_nm,
             labels=np.stack([cam.labels(k) for k in range(len(frames))]))
    return path, cam, frames


def run(*argv: str) -> int:
    return main(["segment", *argv])


@pytest.mark.parametrize("text, expected", [
    ("10,20", ClickSpec(10, 20, True, 1)),
    ("10.5,20,0", ClickSpec(10.5, 20, False, 1)),
    ("10,20,1@3", ClickSpec(10, 20, True, 3)),
    ("10,20@2", ClickSpec(10, 20, True, 2)),
])
def test_click_syntax(text: str, expected: ClickSpec) -> None:
    assert parse_click(text) == expected


@pytest.mark.parametrize("text, message", [
    ("10", "must be X,Y"), ("a,b", "must be X,Y"), ("1,2,2", "LABEL must be 1 \\(positive\\) or 0"),
    ("1,2@0", "OBJECT must be a positive integer"),
])
def test_bad_click_syntax(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_click(text)


@pytest.mark.parametrize("engine", ["rgb", "spectral", "prompt", "decoder"])
def test_segment_writes_every_array(capture, tmp_path: Path, engine: str, capsys) -> None:
    path, cam, frames = capture
    x1, y1 = cam.centre(0, 1)
    x2, y2 = cam.centre(1, 1)
    out = tmp_path / "out.npz"
    assert run(str(path), "--frame", "1", "--click", f"{x1:.0f},{y1:.0f}", "--click", f"{x2:.0f},{y2:.0f},1@2",
               "--click", "2,2,0@2", "--engine", engine, "--reference-radius", "0", *SAM2_FLAGS,
               "--out", str(out)) == 0
    assert f'"engine": "{engine}"' in capsys.readouterr().out
    with np.load(out) as data:
        assert data["masks"].shape == (2, 48, 64) and data["masks"].dtype == bool
        assert data["logits"].shape == (2, 48, 64) and data["logits"].dtype == np.float32
        assert data["scores"].shape == (2,) and data["object_ids"].tolist() == [1, 2]
        assert data["similarity"].shape == (2, 48, 64) and data["similarity"].dtype == np.float32
        assert np.array_equal(data["masks"], data["logits"] > 0) or engine == "spectral"
        angle = data["spectral_angle_rad"]
        assert angle.shape == (2, 48, 64) and angle.dtype == np.float32
        cube = frames[1].cube
        ref = cube[int(round(y1)), int(round(x1))]  # --reference-radius 0: the clicked pixel itself
        np.testing.assert_allclose(angle[0], spectral_angles(cube, ref)[..., 0], atol=1e-6)
        assert angle[0][int(round(y1)), int(round(x1))] == pytest.approx(0.0, abs=1e-3)
        assert data["similarity"][0][int(round(y1)), int(round(x1))] > 0.99
        if engine != "spectral":
            assert "masks are meaningless" in " ".join(data["notices"].tolist())


def test_segment_reads_envi_written_by_spy(tmp_path: Path) -> None:
    envi = pytest.importorskip("spectral.io.envi")
    cam, (frame,) = phantom_frames(bands=20, height=40, width=56, count=1)
    header = tmp_path / "scene.hdr"
    envi.save_image(str(header), frame.cube, dtype=np.float32, interleave="bil", byteorder=1,
                    metadata={"wavelength": [f"{w:.3f}" for w in frame.wavelengths_nm], "wavelength units": "nm"})
    out = tmp_path / "out.npz"
    x, y = cam.centre(0, 0)
    assert run(str(header), "--click", f"{x:.0f},{y:.0f}", "--engine", "prompt", *SAM2_FLAGS, "--out", str(out)) == 0
    with np.load(out) as data:
        assert data["masks"].shape == (1, 40, 56)
        np.testing.assert_allclose(data["wavelengths_nm"], frame.wavelengths_nm, atol=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--click", "64,10"], "click 64,10 is outside the 64x48 image \\(X is the column 0..63, Y the row 0..47\\)"),
    (["--click", "10,-1"], "outside the 64x48 image"),
    (["--click", "10,10", "--frame", "3"], "capture.npz: holds 3 capture\\(s\\) \\(0..2\\); there is no capture 3"),
    (["--click", "10,10,0"], "object 1 does not exist yet: its first click must be positive"),
    (["--click", "10,10", "--engine", "rgb"], "engine 'rgb' needs --checkpoint PATH"),
    (["--click", "10,10", "--engine", "rgb", "--checkpoint", "/nonexistent/sam2.1_hiera_tiny.pt"],
     "SAM2 checkpoint /nonexistent/sam2.1_hiera_tiny.pt does not exist"),
    (["--click", "10,10", "--engine", "sam3"], "worker.engine: .*engine 'sam3' is not available"),
])
def test_bad_input_is_named(capture, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    path, _, _ = capture
    assert run(str(path), *args, "--out", str(tmp_path / "o.npz")) in (1, 2)
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "o.npz").exists()


def test_out_must_be_npz(capture, tmp_path: Path, capsys) -> None:
    path, _, _ = capture
    assert run(str(path), "--click", "10,10", "--out", str(tmp_path / "o.npy")) == 1
    assert "--out must name a .npz file" in capsys.readouterr().err


def test_missing_input_and_bad_click_flag(tmp_path: Path, capsys) -> None:
    assert run(str(tmp_path / "none.npz"), "--click", "1,1", "--out", str(tmp_path / "o.npz")) == 1
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(str(tmp_path / "none.npz"), "--click", "1;1", "--out", str(tmp_path / "o.npz"))
    assert "must be X,Y[,LABEL][@OBJECT]" in capsys.readouterr().err


def test_raw_counts_scaled_segment_like_their_reflectance(capture, tmp_path: Path, capsys) -> None:
    """The spectral angle does not depend on scale: counts of a flat-lit scene, scaled by the dtype's range,
    give the mask of the calibrated reflectance."""
    path, cam, frames = capture
    counts = tmp_path / "counts.npy"
    np.save(counts, np.round(frames[1].cube * 4000).astype(np.uint16))  # counts = reflectance x 4000, no dark
    np.save(tmp_path / "counts_wavelengths_nm.npy", frames[1].wavelengths_nm)
    x, y = cam.centre(0, 1)
    click = ["--click", f"{x:.0f},{y:.0f}", "--engine", "spectral"]
    assert run(str(counts), *click, "--out", str(tmp_path / "refused.npz")) == 1
    assert "set ingest.raw_counts=scale" in capsys.readouterr().err
    assert run(str(path), "--frame", "1", *click, "--out", str(tmp_path / "reflectance.npz")) == 0
    assert run(str(counts), *click, "--set", "ingest.raw_counts=scale", "--out", str(tmp_path / "scaled.npz")) == 0
    assert "frame is scaled_counts, not calibrated reflectance" in capsys.readouterr().out
    with np.load(tmp_path / "reflectance.npz") as a, np.load(tmp_path / "scaled.npz") as b:
        assert (str(a["calibration"]), str(b["calibration"])) == ("reflectance", "scaled_counts")
        want, got = a["masks"][0], b["masks"][0]
    assert want.sum() > 50
    assert np.logical_xor(want, got).sum() <= 0.01 * want.sum()  # quantization to counts may flip an edge pixel


# -- sequences -----------------------------------------------------------------------------------

FRAMES = 6
LATE = 3  # the frame object 2 is first clicked on


@pytest.fixture(scope="module")
def sequence(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, list]:
    """Two objects moving 3 px a frame (object 1 shifts by more than its radius over the sequence)."""
    cam, frames = phantom_frames(bands=24, height=48, width=64, count=FRAMES, objects=2, motion_px=3.0)
    path = tmp_path_factory.mktemp("sequences") / "sequence.npz"
    np.savez(path, cubes=np.stack([f.cube for f in frames]), wavelengths_nm=frames[0].wavelengths_nm,
             labels=np.stack([cam.labels(k) for k in range(len(frames))]))
    return path, cam, frames


def _sequence_clicks(cam) -> list[str]:
    x1, y1 = cam.centre(0, 0)
    x2, y2 = cam.centre(1, LATE)
    return ["--click", f"{x1:.0f},{y1:.0f}", "--click", f"{LATE}:{x2:.0f},{y2:.0f}@2"]


def _check_sequence_arrays(data, frames: int, objects: int) -> None:
    h, w = 48, 64
    assert data["masks"].shape == (frames, objects, h, w) and data["masks"].dtype == bool
    assert data["logits"].shape == (frames, objects, h, w) and data["logits"].dtype == np.float32
    assert data["present"].shape == (frames, objects) and data["present"].dtype == bool
    assert data["scores"].shape == (frames, objects) and data["scores"].dtype == np.float32
    assert data["memory_frames"].shape == (frames, objects) and data["memory_frames"].dtype.kind == "i"
    assert data["frame_ms"].shape == (frames,) and data["frame_ms"].dtype == np.float64
    assert data["object_ids"].shape == (objects,)
    assert data["calibration"].shape == (frames,) and set(data["calibration"].tolist()) == {"reflectance"}
    assert data["wavelengths_nm"].shape == (24,)
    for absent in ("similarity", "spectral_angle_rad", "rgb", "frame"):
        assert absent not in data.files


def test_sequence_follows_moving_objects(sequence, tmp_path: Path, capsys) -> None:
    path, cam, frames = sequence
    x0, _ = cam.centre(0, 0)
    assert max(abs(cam.centre(0, t)[0] - x0) for t in range(FRAMES)) > 8  # the objects really move
    out = tmp_path / "seq.npz"
    assert run(str(path), *_sequence_clicks(cam), "--engine", "spectral", "--out", str(out)) == 0
    summary = json.loads(capsys.readouterr().out)
    with np.load(out) as data:
        _check_sequence_arrays(data, FRAMES, 2)
        masks, present, memory = data["masks"], data["present"], data["memory_frames"]
        assert data["object_ids"].tolist() == [1, 2]
        assert data["clicks"].shape == (2, 5) and data["clicks"][:, 0].tolist() == [0, LATE]
        assert np.all(data["frame_ms"] > 0)
        for t in range(FRAMES):
            for o in (0, 1):
                if o == 1 and t < LATE:
                    continue
                truth = frames[t].labels == o + 1
                iou = (masks[t, o] & truth).sum() / (masks[t, o] | truth).sum()
                assert iou >= 0.8, (t, o, iou)  # the spectral engine reaches 0.87..0.99 here
        # Object 2 does not exist before its first click: empty, absent, no memory, very negative logits.
        assert not masks[:LATE, 1].any() and not present[:LATE, 1].any() and not memory[:LATE, 1].any()
        assert np.all(data["logits"][:LATE, 1] == -1e4)
        assert present[:, 0].all() and present[LATE:, 1].all()
        assert np.all(memory[:, 0] >= 1) and np.all(memory[LATE:, 1] >= 1)
        assert np.all(masks.any(axis=(2, 3)) <= present)  # a mask with pixels is present
    assert summary["frames"] == FRAMES and summary["engine"] == "spectral"
    assert [o["frames_present"] for o in summary["objects"]] == [FRAMES, FRAMES - LATE]
    assert summary["objects"][1]["mean_area_px"] > 50 and summary["median_frame_ms"] > 0


def test_sequence_with_sam2_engine(sequence, tmp_path: Path, capsys) -> None:
    path, cam, _ = sequence
    out = tmp_path / "seq.npz"
    assert run(str(path), *_sequence_clicks(cam), "--engine", "rgb", *SAM2_FLAGS, "--out", str(out)) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == FRAMES
    with np.load(out) as data:
        _check_sequence_arrays(data, FRAMES, 2)
        masks, present = data["masks"], data["present"]
        assert np.all(masks.any(axis=(2, 3)) <= present)  # a mask with pixels is present
        assert not masks[:LATE, 1].any() and not present[:LATE, 1].any()
        assert not data["memory_frames"][:LATE, 1].any() and np.all(data["logits"][:LATE, 1] == -1e4)
        assert present[:, 0].any() or not masks[:, 0].any()
        assert np.all(data["frame_ms"] > 0)
        assert "masks are meaningless" in " ".join(data["notices"].tolist())


class _RecordingEngine:
    """Records what the sequence loop hands an engine: (frame id, object, the frame ids of its clicks)."""

    name, notices = "recording", ()

    def __init__(self) -> None:
        self.prepared: list[int] = []
        self.segmented: list[tuple[int, int, list[int]]] = []
        self.forgotten: list[str] = []

    def prepare(self, frame):
        self.prepared.append(frame.frame_id)
        return frame

    def segment(self, ctx, obj, memory):
        from samsa_stream.worker.engines import Segmentation

        self.segmented.append((ctx.frame_id, obj.object_id, [c.frame_id for c in obj.clicks]))
        memory.last_mask = np.ones(ctx.cube.shape[:2], dtype=bool)
        return Segmentation(mask=memory.last_mask, score=1.0, memory_frames=ctx.frame_id + 1)

    def forget(self, stream_id: str) -> None:
        self.forgotten.append(stream_id)


def test_sequence_applies_clicks_on_their_frames(monkeypatch) -> None:
    """Clicks join the prompt book when their frame arrives (frame id = index), before it is segmented; a
    frame with no object yet is not prepared; the stream is forgotten at the end."""
    from samsa_stream.commands.segment import segment_sequence
    from samsa_stream.settings import Settings
    from samsa_stream.worker import engines

    engine = _RecordingEngine()
    monkeypatch.setattr(engines, "make_engine", lambda worker: engine)
    _, frames = phantom_frames(bands=8, height=16, width=20, count=4, objects=1, stream_id="segment")
    clicks = [ClickSpec(5, 5, True, 2, 1), ClickSpec(6, 6, True, 1, 2), ClickSpec(7, 7, False, 2, 2)]
    result = segment_sequence(Settings(), iter(frames), clicks)
    assert engine.prepared == [1, 2, 3]
    assert engine.segmented == [(1, 2, [1]), (2, 1, [2]), (2, 2, [1, 2]), (3, 1, [2]), (3, 2, [1, 2])]
    assert engine.forgotten == ["segment"]
    assert result.object_ids.tolist() == [1, 2]
    assert result.present.tolist() == [[False, False], [False, True], [True, True], [True, True]]
    assert result.memory_frames.tolist() == [[0, 0], [0, 2], [3, 3], [4, 4]]
    assert result.frame_ms[0] == 0.0 and np.all(result.frame_ms[1:] > 0)


def test_frame_clicks_and_one_frame_captures(sequence, tmp_path: Path) -> None:
    """--frame K with FRAME:K clicks is the single-frame result; a one-frame capture is a single frame unless a
    click names a frame."""
    path, cam, frames = sequence
    x, y = cam.centre(0, 2)
    plain, framed = tmp_path / "plain.npz", tmp_path / "framed.npz"
    assert run(str(path), "--frame", "2", "--click", f"{x:.0f},{y:.0f}", "--engine", "spectral",
               "--out", str(plain)) == 0
    assert run(str(path), "--frame", "2", "--click", f"2:{x:.0f},{y:.0f}", "--engine", "spectral",
               "--out", str(framed)) == 0
    with np.load(plain) as a, np.load(framed) as b:
        assert a["masks"].shape == (1, 48, 64) and int(b["frame"]) == 2
        assert np.array_equal(a["masks"], b["masks"]) and np.array_equal(a["clicks"], b["clicks"])
    one = tmp_path / "one.npz"
    np.savez(one, cube=frames[2].cube, wavelengths_nm=frames[2].wavelengths_nm)
    assert run(str(one), "--click", f"{x:.0f},{y:.0f}", "--out", str(tmp_path / "single.npz")) == 0
    assert run(str(one), "--click", f"0:{x:.0f},{y:.0f}", "--out", str(tmp_path / "seq1.npz")) == 0
    with np.load(tmp_path / "single.npz") as single, np.load(tmp_path / "seq1.npz") as seq:
        assert single["masks"].shape == (1, 48, 64) and "present" not in single.files
        assert seq["masks"].shape == (1, 1, 48, 64) and seq["present"].shape == (1, 1)
        assert np.array_equal(seq["masks"][0], single["masks"])


def test_folder_of_captures_is_a_sequence(sequence, tmp_path: Path, capsys) -> None:
    """A folder of capture files is replayed in name order, as the ingest replays it: one frame per capture."""
    _, cam, frames = sequence
    folder = tmp_path / "recording"
    folder.mkdir()
    for t in (2, 0, 1):  # written out of order: the names decide
        np.savez(folder / f"frame_{t:03d}.npz", cube=frames[t].cube, wavelengths_nm=frames[t].wavelengths_nm)
    x, y = cam.centre(0, 1)
    out = tmp_path / "folder.npz"
    assert run(str(folder), "--click", f"1:{x:.0f},{y:.0f}", "--out", str(out)) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 3
    with np.load(out) as data:
        _check_sequence_arrays(data, 3, 1)
        assert data["present"][:, 0].tolist() == [False, True, True]
        for t in (1, 2):
            truth = frames[t].labels == 1
            assert (data["masks"][t, 0] & truth).sum() / (data["masks"][t, 0] | truth).sum() >= 0.8


@pytest.mark.parametrize("args, message", [
    (["--click", f"{FRAMES}:10,10"], f"click {FRAMES}:10,10 is on frame {FRAMES}, but .*sequence.npz holds "
                                     f"{FRAMES} frame\\(s\\) \\(0..{FRAMES - 1}\\)"),
    (["--click", "10,10", "--click", "2:64,10@2"], "click 2:64,10 is outside the 64x48 image \\(X is the column"),
    (["--click", "2:10,10", "--frame", "1"], "click 2:10,10 is on frame 2, but --frame 1 segments frame 1 only"),
    (["--click", "10,10", "--click", "1:10,10,0@2"], "object 2 does not exist yet: its first click must be positive"),
])
def test_bad_sequence_input_is_named(sequence, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    path, _, _ = sequence
    assert run(str(path), *args, "--out", str(tmp_path / "o.npz")) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("text, expected", [
    ("3:10,20", ClickSpec(10, 20, True, 1, 3)),
    ("0:10.5,20,0@2", ClickSpec(10.5, 20, False, 2, 0)),
    (" 12 :10,20", ClickSpec(10, 20, True, 1, 12)),
])
def test_frame_click_syntax(text: str, expected: ClickSpec) -> None:
    assert parse_click(text) == expected


@pytest.mark.parametrize("text, message", [
    ("x:10,20", "FRAME must be a frame index 0, 1, 2, ... before the ':', got 'x'"),
    ("-1:10,20", "FRAME must be a frame index"), ("1.5:10,20", "FRAME must be a frame index"),
    (":10,20", "FRAME must be a frame index"), ("2:", "must be X,Y\\[,LABEL\\]\\[@OBJECT\\] or FRAME:"),
    ("1:2:3,4", "must be X,Y"),
])
def test_bad_frame_click_syntax(text: str, message: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(CommandError, match=message):
        parse_click(text)
    with pytest.raises(SystemExit):
        run(str(tmp_path / "none.npz"), f"--click={text}", "--out", str(tmp_path / "o.npz"))
    assert re.search(message, capsys.readouterr().err)
