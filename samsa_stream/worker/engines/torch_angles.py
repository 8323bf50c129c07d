"""Spectral angles and similarity maps in torch, on the model's device (same maths as spectral/angles.py).

The SAM2 engines compute the maps next to the model so a GPU node has no per-frame CPU pass over
the cube. The definitions are the numpy functions' (float32, cosine clipped to [-1, 1], a zero
spectrum is pi/2 from everything, similarity 1 - theta / (pi/2) clipped to [0, 1]); the values
agree to float32 rounding, not bit for bit: summation order differs, arccos near 0 amplifies that
(angles agree to about 2e-3 rad), and spectra so small that their float32 squares underflow are
treated as zero here where numpy recomputes them in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...spectral import angles as host_angles
from ...spectral.angles import SpectralError
from .device import host_tensor

HALF_PI = math.pi / 2


def cube_to_device(cube: np.ndarray, device: torch.device, keep_half: bool = False) -> torch.Tensor:
    """(H, W, B) float16/float32 numpy cube -> tensor on ``device``: float32 (converted after the copy), or
    float16 kept as it is with ``keep_half`` (half the bytes to copy and hold; angles are float32 anyway)."""
    tensor = host_tensor(cube)
    tensor = tensor.to(device, non_blocking=True)
    return tensor if keep_half and tensor.dtype == torch.float16 else tensor.float()


CPU_BLOCK = 65536  # pixels per block on a CPU: fewer passes over memory than whole-array ops, few thread barriers
DEVICE_BLOCK = 2**20  # pixels per block on an accelerator: a 480 x 640 frame is one block


@dataclass
class PixelSpectra:
    """A frame's pixel spectra on the device, shared by every reference of every object.

    No normalized copy of the cube is made: the pixel norms are computed with the first angle map
    (in the same pass over the cube) and kept, so each further map is one more pass. A float16 cube
    stays float16; each block is taken to float32 before any arithmetic.
    """

    pixels: torch.Tensor  # (H*W, B) float32 or float16
    shape: tuple[int, int]
    inv_norm: torch.Tensor | None = None  # (H*W, 1) 1/|s(x)|, 0 for a zero spectrum (cosine 0: a right angle)
    host: host_angles.PixelSpectra | None = None  # on a CPU: the numpy maps, one fused pass per map over threads

    @classmethod
    def of(cls, cube: torch.Tensor, numpy_on_cpu: bool = True) -> PixelSpectra:
        """The spectra of ``cube`` (H, W, B). A CPU cube goes to the numpy maps unless ``numpy_on_cpu`` is
        false, which runs the torch loop an accelerator runs (so that path is tested on any machine)."""
        if cube.ndim != 3:
            raise SpectralError(f"cube must be H x W x B, got shape {tuple(cube.shape)}")
        shape = (int(cube.shape[0]), int(cube.shape[1]))
        if cube.device.type == "cpu" and numpy_on_cpu:  # shares the cube's memory; the spectral engine's maths
            return cls(cube.reshape(-1, cube.shape[-1]), shape, host=host_angles.PixelSpectra.of(cube.numpy()))
        pixels = cube.reshape(-1, cube.shape[-1])
        if pixels.dtype not in (torch.float16, torch.float32):
            pixels = pixels.float()
        return cls(pixels, shape)

    @property
    def bands(self) -> int:
        return int(self.pixels.shape[1])

    def angles(self, references: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Angles (H, W, K) to each of ``references`` (K, B), on the spectra's device."""
        if self.host is not None:
            if isinstance(references, torch.Tensor):
                references = references.detach().cpu().numpy()
            return torch.from_numpy(self.host.angles(references))
        refs = torch.as_tensor(np.atleast_2d(np.asarray(references, dtype=np.float32)), device=self.pixels.device)
        if refs.shape[1] != self.bands:
            raise SpectralError(f"references have {refs.shape[1]} bands, the cube has {self.bands}")
        ref_norm = torch.linalg.vector_norm(refs, dim=1, keepdim=True)
        if bool((ref_norm == 0).any()) or not bool(torch.isfinite(ref_norm).all()):
            raise SpectralError("a reference spectrum is zero or not finite: it has no spectral angle")
        directions = (refs / ref_norm).T.contiguous()  # a transposed view sends matmul down a slow path
        n = self.pixels.shape[0]
        block = DEVICE_BLOCK if self.pixels.device.type != "cpu" else CPU_BLOCK
        with_norms = self.inv_norm is None
        inv_norm = torch.empty(n, 1, device=self.pixels.device) if self.inv_norm is None else self.inv_norm
        theta = torch.empty(n, directions.shape[1], device=self.pixels.device)
        for start in range(0, n, block):
            pixels = self.pixels[start:start + block].float()
            if with_norms:
                norms = torch.linalg.vector_norm(pixels, dim=1, keepdim=True)
                inv_norm[start:start + block] = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
            cosine = (pixels @ directions).mul_(inv_norm[start:start + block]).clamp_(-1.0, 1.0)
            torch.arccos(cosine, out=theta[start:start + block])
        self.inv_norm = inv_norm
        return theta.reshape(self.shape[0], self.shape[1], -1)


def angle_to_similarity(theta: torch.Tensor) -> torch.Tensor:
    """0 rad -> 1, pi/2 rad and beyond -> 0, linear in between."""
    return (1.0 - theta / HALF_PI).clamp(0.0, 1.0)


def similarity_map(theta_pos: torch.Tensor, theta_neg: torch.Tensor | None = None) -> torch.Tensor:
    """Similarity (H, W) from angles to positive (H, W, P) and negative (H, W, N) references:
    best over positives, pushed down where a negative is closer: s = s_pos - max(0, s_neg - s_pos)."""
    s_pos = angle_to_similarity(theta_pos.amin(dim=2))
    if theta_neg is None or theta_neg.shape[2] == 0:
        return s_pos
    return combine_similarity(s_pos, angle_to_similarity(theta_neg.amin(dim=2)))


def combine_similarity(s_pos: torch.Tensor, s_neg: torch.Tensor | None) -> torch.Tensor:
    """Similarity to the positives pushed down by the margin where a negative is more similar."""
    if s_neg is None:
        return s_pos
    return (s_pos - (s_neg - s_pos).clamp(min=0.0)).clamp(0.0, 1.0)


def spectral_angles(cube: torch.Tensor, references: np.ndarray | torch.Tensor,
                    numpy_on_cpu: bool = True) -> torch.Tensor:
    """Angles (H, W, K) between every pixel of ``cube`` (H, W, B) and each reference (K, B)
    (``numpy_on_cpu`` as in ``PixelSpectra.of``)."""
    return PixelSpectra.of(cube, numpy_on_cpu).angles(references)
