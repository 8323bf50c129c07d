"""What every SAM2 engine shares: one embedding per frame, objects followed across frames in the
worker, band-count independence, notices, engine selection."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from samsa_stream.protocol import ClickPrompt
from samsa_stream.settings import SettingsError, load_settings
from samsa_stream.worker.core import Worker
from samsa_stream.worker.engines import BUILDERS, EngineError, ObjectMemory, make_engine
from samsa_stream.worker.engines.decoder import DecoderEngine
from samsa_stream.worker.engines.prompt import PromptEngine
from samsa_stream.worker.engines.rgb import RgbEngine
from samsa_stream.worker.engines.sam2_engine import Sam2TrackMemory
from samsa_stream.worker.prompts import PromptError
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import IMAGE_SIZE, sam2_settings
from tests.worker.engines.test_rgb_fidelity import make_object

ENGINES = {"rgb": RgbEngine, "prompt": PromptEngine, "decoder": DecoderEngine}


def node_settings(engine: str):
    return load_settings(overrides={"worker": {"engine": engine, "random_weights": True, "image_size": IMAGE_SIZE,
                                               "device": "cpu", "frame_history": 2}})


def click(worker: Worker, object_id: int, x: float, y: float, positive: bool = True, frame_id: int | None = None):
    return worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=object_id, x=float(x), y=float(y),
                                            positive=positive, frame_id=frame_id))


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_one_embedding_per_frame_shared_by_objects_and_clicks(runner, name: str) -> None:
    cam, frames = phantom_frames(bands=16, height=60, width=84, count=2, objects=2)
    settings = node_settings(name)
    worker = Worker(settings, engine=ENGINES[name](runner, settings.worker))
    embeds, decodes = runner.embeds, runner.decodes
    worker.accept(frames[0])
    assert click(worker, 1, *cam.centre(0, 0)).ok
    worker.segment("cam0")
    assert click(worker, 2, *cam.centre(1, 0)).ok  # a second object on the unchanged frame
    worker.segment("cam0")
    assert click(worker, 1, 3.0, 3.0, positive=False).ok  # a correction on the unchanged frame
    result = worker.segment("cam0")
    assert runner.embeds - embeds == 1
    # Only an object whose clicks changed is decoded again: 1 (object 1), 1 (object 2), 1 (object 1).
    assert runner.decodes - decodes == 3
    assert [o.object_id for o in result.objects] == [1, 2]
    worker.accept(frames[1])
    worker.segment("cam0")
    assert runner.embeds - embeds == 2


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_objects_are_followed_by_memory_on_frames_after_the_click(runner, name: str) -> None:
    """The click makes frame 0 the object's conditioning frame; every later frame is segmented from
    memory (no click is applied again) and joins the recent window, at its real frame index."""
    cam, frames = phantom_frames(bands=16, height=60, width=84, count=10, motion_px=2.0)
    settings = node_settings(name)
    engine = ENGINES[name](runner, settings.worker)
    worker = Worker(settings, engine=engine)
    worker.accept(frames[0])
    assert click(worker, 1, *cam.centre(0, 0)).ok
    window = engine.tracker.memory_window
    for frame in frames[:3] + frames[5:]:  # frames 3 and 4 dropped
        worker.accept(frame)
        result = worker.segment("cam0")
        assert len(result.objects) == 1 and result.objects[0].mask.shape == (60, 84)
        assert any("masks are meaningless" in n for n in result.notices)
        kept = worker.streams["cam0"].memory[1].engine
        assert isinstance(kept, Sam2TrackMemory)
        track = kept.track
        assert list(track.cond) == [0] and track.last_frame == frame.frame_id
        assert max(track.recent, default=0) == frame.frame_id
        assert all(frame.frame_id - t <= window for t, e in track.recent.items() if e.maskmem_features is not None)
    assert 3 not in track.recent and 4 not in track.recent  # dropped frames leave a gap, not a shift


def test_band_count_and_wavelength_independence(runner) -> None:
    """The same weights run on a 16-band and an 826-band cube of the same scene; the similarity maps
    agree, and clicks taken on one camera's bands are used on the other's."""
    cam16, (f16,) = phantom_frames(bands=16, height=60, width=84, count=1)
    _, (f826,) = phantom_frames(bands=826, height=60, width=84, count=1)
    x, y = cam16.centre(0, 0)
    for cls in (PromptEngine, DecoderEngine):
        engine = cls(runner, sam2_settings(engine=cls.name))
        maps = []
        for frame in (f16, f826):
            obj = make_object(f16, [(x, y, True)])  # references on the 16-band grid for both cubes
            seg = engine.segment(engine.prepare(frame), obj, ObjectMemory())
            assert seg.mask.shape == (60, 84) and np.isfinite(seg.logits).all()
            maps.append(seg.similarity)
        assert np.abs(maps[0] - maps[1]).mean() < 0.02
        assert maps[0][int(y), int(x)] > 0.95 and maps[1][int(y), int(x)] > 0.95


def test_references_outside_the_cubes_wavelengths_are_refused(runner) -> None:
    _, (frame,) = phantom_frames(bands=16, height=60, width=84, count=1)
    obj = make_object(frame, [(20.0, 20.0, True)])
    obj.clicks[0].wavelengths_nm = np.linspace(1100, 1700, 16)  # a SWIR reference on a VNIR cube
    engine = PromptEngine(runner, sam2_settings(engine="prompt"))
    with pytest.raises(PromptError, match=r"click reference covers 1100-1700 nm; the frame's bands \(450-950 nm\)"):
        engine.segment(engine.prepare(frame), obj, ObjectMemory())


def test_make_engine_builds_sam2_engines_only_with_weights() -> None:
    fallback = make_engine(sam2_settings(random_weights=False))
    assert fallback.name == "spectral" and any("needs a SAM2 checkpoint" in n for n in fallback.notices)
    for name, cls in ENGINES.items():
        engine = make_engine(sam2_settings(engine=name))
        assert type(engine) is cls
        assert any(n.startswith("masks are meaningless") and "random weights (seed 7)" in n for n in engine.notices)


def test_unknown_engine_is_named() -> None:
    with pytest.raises(SettingsError, match=r"worker.engine: .*engine 'sam3' is not available "
                                            r"\(available: decoder, prompt, rgb, spectral\)"):
        load_settings(overrides={"worker": {"engine": "sam3"}})


def test_the_registry_is_the_one_list_of_engines(monkeypatch) -> None:
    monkeypatch.setitem(BUILDERS, "sam3", lambda settings, model: RgbEngine(model.runner(), settings))
    assert load_settings(overrides={"worker": {"engine": "sam3"}}).worker.engine == "sam3"
    monkeypatch.delitem(BUILDERS, "prompt")
    with pytest.raises(SettingsError, match=r"available: decoder, rgb, sam3, spectral"):
        load_settings(overrides={"worker": {"engine": "prompt"}})


def test_engine_missing_from_the_registry_is_named(monkeypatch) -> None:
    settings = sam2_settings(engine="prompt")  # checked while the engine was registered
    monkeypatch.delitem(BUILDERS, "prompt")
    with pytest.raises(EngineError, match=r"engine 'prompt' is not available \(available: decoder, rgb, spectral\)"):
        make_engine(settings)


def test_spectral_worker_starts_without_torch() -> None:
    code = ("import sys; from samsa_stream.settings import load_settings; from samsa_stream.worker.core import Worker; "
            "Worker(load_settings()); sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
