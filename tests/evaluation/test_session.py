"""One object's session: the click protocol drives a real engine, one score per click of the budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.evaluation.baselines import AngleMapper
from samsa_stream.evaluation.clicks import SimulatedClick, next_click
from samsa_stream.evaluation.dataset import open_dataset
from samsa_stream.evaluation.run import EvalConfig, RowStore, evaluate
from samsa_stream.evaluation.scenes import make_scene
from samsa_stream.evaluation.session import run_session
from samsa_stream.parallel import Ranks
from samsa_stream.protocol import CubeFrame
from samsa_stream.settings import SpectralEngineSettings, load_settings
from samsa_stream.spectral.angles import reference_spectrum
from samsa_stream.worker.engines import Engine, FrameContext, ObjectMemory, Segmentation, make_engines
from samsa_stream.worker.engines.spectral import SpectralEngine
from samsa_stream.worker.prompts import TrackedObject
from tests.worker.engines.conftest import sam2_settings

H, W, BANDS = 32, 40, 12
WAVELENGTHS = np.linspace(450.0, 950.0, BANDS)
RADIUS = 2  # worker.spectral.reference_radius default

# Materials far apart in spectral angle (> 0.3 rad from each other), so a clean cube has exact answers.
BACKGROUND = np.linspace(0.2, 0.8, BANDS)
MATERIAL_A = np.linspace(0.8, 0.2, BANDS)
MATERIAL_B = 0.5 + 0.3 * np.sin(np.linspace(0.0, 3.0 * np.pi, BANDS))

ENGINES = {
    "spectral": lambda: SpectralEngine(SpectralEngineSettings()),
    "angle-mapper": lambda: AngleMapper(SpectralEngineSettings()),
}


def frame_of(cube: np.ndarray) -> CubeFrame:
    return CubeFrame(stream_id="eval", frame_id=0, capture_ns=0, cube=cube.astype(np.float32),
                     wavelengths_nm=WAVELENGTHS, rgb=np.zeros((*cube.shape[:2], 3), np.uint8)).validate()


def clean_square() -> tuple[CubeFrame, np.ndarray]:
    """Background with one 9 x 9 square of material A at rows 8..16, cols 10..18 (its centre: row 12, col 14)."""
    cube = np.broadcast_to(BACKGROUND, (H, W, BANDS)).copy()
    truth = np.zeros((H, W), dtype=bool)
    truth[8:17, 10:19] = True
    cube[truth] = MATERIAL_A
    return frame_of(cube), truth


def hard_object() -> tuple[CubeFrame, np.ndarray]:
    """An object of two materials in two parts, a look-alike of part one outside it, and noise: no
    engine here gets it right at once, so the session has to correct."""
    rng = np.random.default_rng(3)
    cube = np.broadcast_to(BACKGROUND, (H, W, BANDS)).copy()
    truth = np.zeros((H, W), dtype=bool)
    truth[4:14, 4:16] = True  # part one, material A
    truth[20:26, 24:34] = True  # part two, material B
    cube[4:14, 4:16] = MATERIAL_A
    cube[20:26, 24:34] = MATERIAL_B
    cube[22:28, 4:12] = MATERIAL_A  # not the object, but spectrally the same as part one
    cube += rng.normal(0.0, 0.01, cube.shape)
    return frame_of(np.clip(cube, 0.01, 1.0)), truth


def deepest(truth: np.ndarray) -> set[tuple[int, int]]:
    """The pixels of ``truth`` farthest (Euclidean) from the nearest pixel outside it or the image border."""
    padded = np.pad(truth, 1)
    outside = np.argwhere(~padded).astype(np.float64)
    inside = np.argwhere(padded).astype(np.float64)
    depth = np.sqrt(((inside[:, None, :] - outside[None, :, :]) ** 2).sum(axis=2)).min(axis=1)  # brute force
    best = np.isclose(depth, depth.max())
    return {(int(r) - 1, int(c) - 1) for r, c in inside[best]}


def plain_dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


@dataclass
class Call:
    clicks: list[tuple[float, float, bool, int, np.ndarray]]
    memory: int
    mask: np.ndarray


@dataclass
class Recording(Engine[FrameContext]):
    """Wraps an engine, or returns ``fixed`` masks, and records every call the session makes."""

    inner: Engine | None = None
    fixed: np.ndarray | None = None
    calls: list[Call] = field(default_factory=list)

    def prepare(self, frame: CubeFrame) -> FrameContext:
        return self.inner.prepare(frame) if self.inner else FrameContext(frame)

    def segment(self, ctx: FrameContext, obj: TrackedObject, memory: ObjectMemory) -> Segmentation:
        if self.inner is not None:
            result = self.inner.segment(ctx, obj, memory)
        else:
            result = Segmentation(np.array(self.fixed, dtype=bool), 1.0)
        clicks = [(c.x, c.y, c.positive, c.frame_id, c.reference.copy()) for c in obj.clicks]
        self.calls.append(Call(clicks, id(memory), np.asarray(result.mask, dtype=bool).copy()))
        return result


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_a_perfect_first_mask_stops_the_clicks_and_carries_its_score(name: str) -> None:
    frame, truth = clean_square()
    engine = ENGINES[name]()
    result = run_session(engine, engine.prepare(frame), frame, truth, budget=6, reference_radius=RADIUS)
    assert deepest(truth) == {(12, 14)}
    assert result.clicks == [SimulatedClick(12, 14, True)]  # the square's centre, its only deepest pixel
    assert result.dice == [1.0] * 6 and result.iou == [1.0] * 6
    assert len(result.seconds) == 1
    assert result.final_mask is not None and np.array_equal(result.final_mask, truth)


@pytest.mark.parametrize("name", sorted(ENGINES))
@pytest.mark.parametrize("budget", [1, 4, 9])
def test_session_follows_the_protocol_on_a_hard_object(name: str, budget: int) -> None:
    frame, truth = hard_object()
    engine = Recording(inner=ENGINES[name]())
    result = run_session(engine, engine.prepare(frame), frame, truth, budget=budget, reference_radius=RADIUS)

    assert len(result.dice) == budget and len(result.iou) == budget
    placed = len(result.clicks)
    assert 1 <= placed <= budget and len(result.seconds) == placed and len(engine.calls) == placed
    assert placed >= min(budget, 2)  # the object needs correcting, so the checks below see next clicks
    assert len({(c.row, c.col) for c in result.clicks}) == placed  # never the same pixel twice

    first = result.clicks[0]
    assert first.positive and (first.row, first.col) in deepest(truth)

    masks = [call.mask for call in engine.calls]
    for k, click in enumerate(result.clicks[1:], start=1):  # each next click corrects the mask before it
        assert click == next_click(truth, masks[k - 1], [(c.row, c.col) for c in result.clicks[:k]])
    for k, mask in enumerate(masks):
        assert result.dice[k] == pytest.approx(plain_dice(mask, truth))
        assert result.iou[k] == pytest.approx(int((mask & truth).sum()) / int((mask | truth).sum()))
    if placed < budget:  # stopped early: nothing left to click, the last scores carry on
        assert next_click(truth, masks[-1], [(c.row, c.col) for c in result.clicks]) is None
        assert result.dice[placed:] == [result.dice[placed - 1]] * (budget - placed)
    assert result.final_mask is not None and np.array_equal(result.final_mask, masks[-1])


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_the_engine_sees_clicks_as_live_one_memory_for_the_session(name: str) -> None:
    frame, truth = hard_object()
    engine = Recording(inner=ENGINES[name]())
    result = run_session(engine, engine.prepare(frame), frame, truth, budget=5, reference_radius=RADIUS)
    assert len({call.memory for call in engine.calls}) == 1  # one ObjectMemory kept across the clicks
    final = engine.calls[-1].clicks
    assert [(y, x, positive) for x, y, positive, _, _ in final] == \
        [(c.row, c.col, c.positive) for c in result.clicks]  # every click so far, in order, x = column
    for (x, y, _, frame_id, reference), call_count in zip(final, range(1, len(final) + 1), strict=True):
        assert frame_id == frame.frame_id and len(engine.calls[call_count - 1].clicks) == call_count
        assert np.array_equal(reference, reference_spectrum(frame.cube, x, y, RADIUS))


def test_an_engine_that_never_finds_the_object_gets_every_click_on_new_pixels() -> None:
    frame, truth = clean_square()
    engine = Recording(fixed=np.zeros_like(truth))
    result = run_session(engine, engine.prepare(frame), frame, truth, budget=12, reference_radius=RADIUS)
    assert len(result.clicks) == 12 and all(c.positive for c in result.clicks)
    assert len({(c.row, c.col) for c in result.clicks}) == 12
    assert all(truth[c.row, c.col] for c in result.clicks)
    assert result.dice == [0.0] * 12 and result.iou == [0.0] * 12


def test_session_stops_when_every_error_pixel_has_been_clicked() -> None:
    frame, truth = clean_square()
    mask = truth.copy()
    mask[0, 0] = True  # one false-alarm pixel the engine never removes
    engine = Recording(fixed=mask)
    result = run_session(engine, engine.prepare(frame), frame, truth, budget=5, reference_radius=RADIUS)
    assert result.clicks == [SimulatedClick(12, 14, True), SimulatedClick(0, 0, False)]
    expected = plain_dice(mask, truth)
    assert expected < 1.0 and result.dice == pytest.approx([expected] * 5)


# ------------------------------------------------------------------------------------------------ SAM2


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two labelled 64 x 64 phantom frames as node .npz files."""
    folder = tmp_path_factory.mktemp("phantom")
    for seed in range(2):
        scene = make_scene("phantom", seed, 64, 64, 16)
        np.savez(folder / f"frame-{seed}.npz", cube=scene.cube, wavelengths_nm=scene.wavelengths_nm,
                 labels=scene.labels)
    return folder


@pytest.mark.usefixtures("one_torch_thread")
def test_sam2_engines_run_sessions_on_one_embedding_per_image(phantom_dataset: Path, tmp_path: Path) -> None:
    settings = load_settings(overrides={"worker": sam2_settings().model_dump(mode="json")})
    dataset = open_dataset(phantom_dataset, settings)
    engines = make_engines(["rgb", "prompt", "decoder"], settings.worker)
    runners = {engine.runner for engine in engines.values()}  # type: ignore[attr-defined]
    assert len(runners) == 1  # one shared model
    runner = runners.pop()
    config = EvalConfig(tuple(engines), 3, dataset.describe(), {})
    store = RowStore(tmp_path)
    store.prepare(config, leader=True)
    embeds, decodes = runner.embeds, runner.decodes

    ran = evaluate(dataset, engines, config, store, Ranks(), RADIUS)

    assert runner.embeds - embeds == len(dataset) == 2  # rgb, prompt and decoder share each image's embedding
    rows = [r for r in store.merged() if r["kind"] == "object"]
    objects = sum(len(dataset.load(i).objects) for i in range(len(dataset)))
    assert objects > 0 and ran == len(rows) == 3 * objects
    assert {r["method"] for r in rows} == {"rgb", "prompt", "decoder"}
    for r in rows:
        assert "error" not in r, r.get("error")
        assert len(r["dice"]) == len(r["iou"]) == 3 and 1 <= len(r["clicks"]) <= 3
        assert len(r["click_ms"]) == len(r["clicks"]) and r["clicks"][0][2] == 1
        assert len({(row, col) for row, col, _ in r["clicks"]}) == len(r["clicks"])
    assert runner.decodes - decodes == sum(len(r["clicks"]) for r in rows)  # one decode per placed click
