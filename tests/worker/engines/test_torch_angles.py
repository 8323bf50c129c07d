"""The torch spectral-angle maps agree with the numpy reference implementation (spectral/angles.py) to
float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from samsa_stream.spectral import angles as np_angles
from samsa_stream.spectral.angles import SpectralError
from samsa_stream.worker.engines import torch_angles

# Reflectance-like values: exact zeros (dead pixels) or >= 2^-10; far below that float32 squares
# underflow and "zero spectrum" is a matter of summation order.
finite = st.one_of(st.just(0.0), st.floats(min_value=2.0 ** -10, max_value=10.0, width=32))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), bands=st.integers(1, 40), refs=st.integers(1, 4))
def test_angles_match_numpy(data: st.DataObject, bands: int, refs: int) -> None:
    cube = data.draw(arrays(np.float32, (5, 6, bands), elements=finite))
    references = data.draw(arrays(np.float32, (refs, bands), elements=st.floats(0.125, 10.0, width=32)))
    expected = np_angles.spectral_angles(cube, references)
    got = torch_angles.spectral_angles(torch.from_numpy(cube), references).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3)  # arccos near 0 amplifies float32 rounding
    assert got.dtype == np.float32 and got.shape == (5, 6, refs)


@settings(max_examples=30, deadline=None)
@given(theta_pos=arrays(np.float32, (4, 5, 2), elements=st.floats(0, 3.0, width=32)),
       theta_neg=arrays(np.float32, (4, 5, 3), elements=st.floats(0, 3.0, width=32)))
def test_similarity_matches_numpy(theta_pos: np.ndarray, theta_neg: np.ndarray) -> None:
    expected = np_angles.similarity_map(theta_pos, theta_neg)
    got = torch_angles.similarity_map(torch.from_numpy(theta_pos), torch.from_numpy(theta_neg)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(torch_angles.similarity_map(torch.from_numpy(theta_pos)).numpy(),
                               np_angles.similarity_map(theta_pos), rtol=0, atol=1e-6)


def test_zero_spectrum_is_a_right_angle_from_everything() -> None:
    cube = torch.zeros(2, 2, 5)
    cube[0, 0] = 1.0
    theta = torch_angles.spectral_angles(cube, np.ones((1, 5), dtype=np.float32))
    assert theta[0, 0, 0] == pytest.approx(0.0, abs=1e-3)
    assert torch.allclose(theta[1, 1, 0], torch.tensor(np.pi / 2, dtype=torch.float32))
    assert torch.isfinite(theta).all()


def test_bad_references_are_named() -> None:
    cube = torch.ones(2, 2, 4)
    with pytest.raises(SpectralError, match="references have 3 bands, the cube has 4"):
        torch_angles.spectral_angles(cube, np.ones((1, 3)))
    with pytest.raises(SpectralError, match="zero or not finite"):
        torch_angles.spectral_angles(cube, np.zeros((1, 4)))
    with pytest.raises(SpectralError, match="H x W x B"):
        torch_angles.spectral_angles(torch.ones(4, 4), np.ones((1, 4)))


def test_float16_cube_is_computed_in_float32() -> None:
    cube = np.random.default_rng(0).random((6, 7, 9)).astype(np.float16)
    tensor = torch_angles.cube_to_device(cube, torch.device("cpu"))
    assert tensor.dtype == torch.float32
    ref = cube[2, 3].astype(np.float32)[None]
    np.testing.assert_allclose(torch_angles.spectral_angles(tensor, ref).numpy(),
                               np_angles.spectral_angles(cube.astype(np.float32), ref), atol=2e-3)
