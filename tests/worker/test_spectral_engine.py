"""Region selection of the spectral engine: which connected regions carry the object."""

from __future__ import annotations

import numpy as np

from samsa_stream.worker.engines.spectral import select_regions


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


def test_negative_click_drops_its_region_even_if_the_anchor_touched_it() -> None:
    cand, a, b = blobs()
    np.testing.assert_array_equal(select_regions(cand, [], a | b, [(15, 20)], 1), a)


def test_without_any_anchor_the_largest_region_is_kept() -> None:
    cand, _, b = blobs()
    np.testing.assert_array_equal(select_regions(cand, [], None, [], 1), b)


def test_small_regions_are_dropped() -> None:
    cand, a, _ = blobs()
    assert not select_regions(cand, [(4, 4)], None, [], min_area=37).any()
    assert not select_regions(np.zeros((5, 5), bool), [(1, 1)], None, [], 1).any()
