"""The spectral engine: which connected regions carry the object, and its masks on hand-made cubes."""

from __future__ import annotations

import numpy as np

from samsa_stream.protocol import CubeFrame
from samsa_stream.settings import SpectralEngineSettings
from samsa_stream.spectral.angles import PixelSpectra, reference_spectrum
from samsa_stream.worker.engines import ObjectMemory
from samsa_stream.worker.engines.spectral import SpectralEngine, cut_towards, select_regions
from samsa_stream.worker.prompts import Click, TrackedObject


def blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cand = np.zeros((20, 30), bool)
    a = np.zeros_like(cand)
    a[2:8, 2:8] = True
    b = np.zeros_like(cand)
    b[10:18, 15:28] = True  # the larger one
    return cand | a | b, a, b


def test_keeps_the_region_under_a_click() -> None:
    cand, a, _ = blobs()
    np.testing.assert_array_equal(select_regions(cand, [(4, 4)], None, [], 1), a)


def test_anchor_from_last_frame_keeps_every_region_it_touches() -> None:
    cand, a, b = blobs()
    anchor = np.zeros_like(cand)
    anchor[5, 5] = anchor[12, 20] = True
    np.testing.assert_array_equal(select_regions(cand, [], anchor, [], 1), a | b)


def test_a_region_holding_a_negative_click_and_no_positive_is_dropped_even_if_the_anchor_touched_it() -> None:
    cand, a, b = blobs()
    np.testing.assert_array_equal(select_regions(cand, [], a | b, [(15, 20)], 1), a)


def test_without_any_anchor_the_largest_region_is_kept() -> None:
    cand, _, b = blobs()
    np.testing.assert_array_equal(select_regions(cand, [], None, [], 1), b)


def test_small_regions_are_dropped_unless_they_hold_a_click() -> None:
    cand, a, b = blobs()
    anchor = a | b
    np.testing.assert_array_equal(select_regions(cand, [], anchor, [], min_area=37), b)  # a has 36 pixels
    np.testing.assert_array_equal(select_regions(cand, [(4, 4)], None, [], min_area=37), a)
    assert not select_regions(np.zeros((5, 5), bool), [], None, [], 1).any()


def test_positives_on_two_regions_keep_every_similar_region() -> None:
    cand, a, b = blobs()
    c = np.zeros_like(cand)
    c[15:19, 2:6] = True
    d = np.zeros_like(cand)
    d[0:2, 25:27] = True  # 4 pixels
    cand |= c | d
    np.testing.assert_array_equal(select_regions(cand, [(4, 4)], None, [], 4), a)
    np.testing.assert_array_equal(select_regions(cand, [(4, 4), (12, 20)], None, [], 4), a | b | c | d)
    np.testing.assert_array_equal(select_regions(cand, [(4, 4), (12, 20)], None, [(16, 3)], 4), a | b | d)
    np.testing.assert_array_equal(select_regions(cand, [(4, 4), (12, 20)], None, [], 5), a | b | c)


def test_a_negative_click_inside_the_clicked_region_cuts_the_pixels_nearer_to_it() -> None:
    cand = np.zeros((10, 30), bool)
    cand[2:8, 2:28] = True
    mask = select_regions(cand, [(5, 4)], None, [(5, 24)], 1)
    assert mask[5, 4] and mask[5, 13] and not mask[5, 15] and not mask[5, 24]
    np.testing.assert_array_equal(mask, cut_towards(cand, [(5, 4)], [(5, 24)]))


# -- the engine on hand-made cubes -------------------------------------------------------------------


BANDS = np.linspace(450.0, 950.0, 40)


def material(edge_nm: float, base: float, rise: float) -> np.ndarray:
    return (base + rise / (1.0 + np.exp(-(BANDS - edge_nm) / 30.0))).astype(np.float32)


def scene(h: int = 40, w: int = 50, noise: float = 0.004, seed: int = 0) -> np.ndarray:
    """A background material with per-pixel brightness variation and sensor noise."""
    rng = np.random.default_rng(seed)
    cube = np.broadcast_to(material(650.0, 0.25, 0.25), (h, w, BANDS.size)).copy()
    cube *= rng.uniform(0.8, 1.2, size=(h, w, 1)).astype(np.float32)
    return cube


def noisy(cube: np.ndarray, noise: float = 0.004, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(cube + rng.normal(0, noise, cube.shape).astype(np.float32), 0.001, 1.0)


def frame_of(cube: np.ndarray) -> CubeFrame:
    rgb = np.zeros((*cube.shape[:2], 3), np.uint8)
    return CubeFrame(stream_id="cam", frame_id=0, capture_ns=0, cube=cube, wavelengths_nm=BANDS, rgb=rgb)


def clicked(frame: CubeFrame, clicks: list[tuple[int, int, bool]]) -> TrackedObject:
    obj = TrackedObject(1, "target", (255, 0, 0))
    for row, col, positive in clicks:
        ref = reference_spectrum(frame.cube, col, row, 2)
        obj.clicks.append(Click(float(col), float(row), positive, frame.frame_id, ref, BANDS))
    return obj


def run(frame: CubeFrame, clicks: list[tuple[int, int, bool]], **knobs: object) -> np.ndarray:
    engine = SpectralEngine(SpectralEngineSettings(**knobs))
    return engine.segment(engine.prepare(frame), clicked(frame, clicks), ObjectMemory()).mask


def test_a_positive_click_on_a_three_pixel_target_gives_a_mask_holding_it() -> None:
    cube = scene()
    target = [(20, 20), (20, 21), (21, 20)]
    for p in target:
        cube[p] = material(560.0, 0.08, 0.45) * cube[p].mean() / 0.3  # another material, similar brightness
    frame = frame_of(noisy(cube))
    for click in target:
        mask = run(frame, [(*click, True)])
        assert mask[click], f"click {click} is not in its own mask"
        assert all(mask[p] for p in target) and mask.sum() <= 6


def test_a_target_close_in_angle_to_its_background_does_not_flood_it() -> None:
    cube = scene()
    near = material(690.0, 0.25, 0.25)  # 0.067 rad from the background: inside the 0.10 rad threshold
    cube[10:14, 30:34] = near * cube[10:14, 30:34].mean(axis=2, keepdims=True) / near.mean()
    frame = frame_of(noisy(cube))
    theta = PixelSpectra.of(frame.cube).angles(near[None])[..., 0]
    assert np.median(theta) < SpectralEngineSettings().threshold_rad  # the global threshold alone would flood
    mask = run(frame, [(12, 32, True)])
    truth = np.zeros(mask.shape, bool)
    truth[10:14, 30:34] = True
    assert mask[12, 32] and (mask & truth).sum() >= 12 and (mask & ~truth).sum() <= 4


def test_a_negative_click_on_a_leak_keeps_the_positive_clicks_pixels() -> None:
    cube = scene(seed=2)
    organ = material(600.0, 0.10, 0.40)
    cousin = material(625.0, 0.10, 0.40)  # close to the organ's spectrum, touching it
    cube[5:35, 5:25] = organ
    cube[5:35, 25:45] = cousin
    frame = frame_of(noisy(cube, seed=3))
    first = run(frame, [(20, 10, True)], threshold_rad=0.2)
    assert first[20, 40], "the leak this test needs did not happen"
    clicks = [(20, 10, True), (8, 20, True), (20, 40, False)]
    mask = run(frame, clicks, threshold_rad=0.2)
    for row, col, positive in clicks:
        assert mask[row, col] == positive
    assert mask[5:35, 5:25].mean() > 0.95 and mask[5:35, 27:45].mean() < 0.05


def test_the_noise_estimate_widens_the_threshold_for_dark_noisy_pixels() -> None:
    cube = scene()
    dark = material(650.0, 0.06, -0.04)  # dark and falling: far from the background's shape
    cube[10:30, 10:30] = dark
    frame = frame_of(noisy(cube, noise=0.006))
    truth = np.zeros(cube.shape[:2], bool)
    truth[10:30, 10:30] = True
    fixed = run(frame, [(20, 20, True)], noise_factor=0.0)
    adaptive = run(frame, [(20, 20, True)])
    assert (fixed & truth).sum() < 0.5 * truth.sum() < (adaptive & truth).sum()
    assert (adaptive & ~truth).sum() <= 8


def test_a_target_between_a_close_and_a_far_material_is_cut_from_the_close_one() -> None:
    """The implicit negative is the close material the threshold would take in, not a blend with the far one."""
    cube = scene()
    far = material(560.0, 0.08, 0.45)
    cube[:, 32:] = far * cube[:, 32:].mean(axis=2, keepdims=True) / far.mean()
    near = material(690.0, 0.25, 0.25)  # 0.067 rad from the background on the left
    cube[18:21, 29:32] = near * cube[18:21, 29:32].mean(axis=2, keepdims=True) / near.mean()
    frame = frame_of(noisy(cube))
    truth = np.zeros(cube.shape[:2], bool)
    truth[18:21, 29:32] = True
    mask = run(frame, [(19, 30, True)])
    assert mask[19, 30] and (mask & truth).sum() >= 7 and (mask & ~truth).sum() <= 4


def test_an_object_that_left_the_view_is_found_again_elsewhere_by_its_spectrum_but_not_from_a_speck() -> None:
    target = material(560.0, 0.08, 0.45)

    def frame_with(square: tuple[int, int] | None, speck: tuple[int, int] | None, frame_id: int) -> CubeFrame:
        cube = scene(seed=frame_id)
        if square is not None:
            row, col = square
            cube[row:row + 8, col:col + 8] = target
        if speck is not None:
            cube[speck] = target  # one pixel of the object's spectrum: not the object
        frame = frame_of(noisy(cube, seed=10 + frame_id))
        return CubeFrame(stream_id="cam", frame_id=frame_id, capture_ns=0, cube=frame.cube, wavelengths_nm=BANDS,
                         rgb=frame.rgb)

    engine = SpectralEngine(SpectralEngineSettings(), click_window=1)
    first = frame_with((5, 5), None, 0)
    obj = clicked(first, [(9, 9, True)])
    memory = ObjectMemory()
    assert engine.segment(engine.prepare(first), obj, memory).mask[5:13, 5:13].all()
    assert engine.segment(engine.prepare(frame_with((6, 6), None, 1)), obj, memory).mask[6:14, 6:14].all()
    for k in range(2, 5):  # away (past the click window): nothing shown, even with a speck of its spectrum
        assert not engine.segment(engine.prepare(frame_with(None, (30, 40), k)), obj, memory).mask.any()
    back = engine.segment(engine.prepare(frame_with((25, 30), None, 5)), obj, memory).mask
    truth = np.zeros(back.shape, bool)
    truth[25:33, 30:38] = True
    assert (back & truth).sum() >= 60 and (back & ~truth).sum() <= 4
