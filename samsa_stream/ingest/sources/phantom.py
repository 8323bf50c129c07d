"""A synthetic hyperspectral camera: tissue-like objects with distinct smooth spectra moving
over a background under uneven illumination, with sensor noise. Deterministic per frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...settings import PhantomSettings
from ..capture import Capture
from .base import Source


@dataclass(frozen=True)
class TissueSpectrum:
    """r(lambda) = base + rise * sigmoid((lambda - edge) / width) - sum of Gaussian absorption dips."""

    name: str
    base: float
    rise: float
    edge_nm: float
    width_nm: float
    dips: tuple[tuple[float, float, float], ...] = ()  # (centre nm, depth, sigma nm)

    def variant(self, shift_nm: float) -> TissueSpectrum:
        """The same tissue in another state (e.g. oxygenation): its edge moved by ``shift_nm``."""
        return TissueSpectrum(self.name, self.base, self.rise, self.edge_nm + shift_nm, self.width_nm, self.dips)

    def sample(self, wavelengths_nm: np.ndarray) -> np.ndarray:
        wl = np.asarray(wavelengths_nm, dtype=np.float64)
        r = self.base + self.rise / (1.0 + np.exp(-(wl - self.edge_nm) / self.width_nm))
        for centre, depth, sigma in self.dips:
            r = r - depth * np.exp(-0.5 * ((wl - centre) / sigma) ** 2)
        return np.clip(r, 0.01, 0.99)


# Loosely shaped after tissue reflectance: oxygenated blood (dips at 542/576 nm, red edge),
# fat (bright, lipid dip near 930 nm), vessel (dark, late edge), nerve (bright, flat).
TISSUES: tuple[TissueSpectrum, ...] = (
    TissueSpectrum("background", 0.30, 0.15, 650.0, 60.0, ((480.0, 0.05, 40.0),)),
    TissueSpectrum("blood", 0.05, 0.55, 595.0, 8.0, ((542.0, 0.03, 10.0), (576.0, 0.03, 10.0), (760.0, 0.05, 15.0))),
    TissueSpectrum("fat", 0.55, 0.25, 520.0, 25.0, ((930.0, 0.15, 20.0),)),
    TissueSpectrum("vessel", 0.04, 0.30, 700.0, 30.0, ((560.0, 0.02, 20.0),)),
    TissueSpectrum("nerve", 0.70, 0.05, 500.0, 80.0, ((980.0, 0.05, 30.0),)),
    TissueSpectrum("muscle", 0.12, 0.35, 620.0, 15.0, ((760.0, 0.10, 12.0),)),
)


class PhantomCamera(Source):
    """Renders frame ``k`` identically on every call, so tests can recompute the ground truth."""

    name = "phantom"

    def __init__(self, settings: PhantomSettings, frames: int = 0) -> None:
        self.settings = settings
        self.limit = frames
        self.wavelengths_nm = np.linspace(settings.wavelength_min_nm, settings.wavelength_max_nm, settings.bands)
        self.spectra = np.stack([t.sample(self.wavelengths_nm) for t in TISSUES]).astype(np.float32)
        # Within-tissue variability: each object blends towards a shifted-edge variant of its tissue.
        self.variants = np.stack([t.variant(25.0).sample(self.wavelengths_nm) for t in TISSUES]).astype(np.float32)
        h, w = settings.height, settings.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        # Vignetting: reflectance scales by 0.6..1.0 across the field; spectral angles ignore it.
        r2 = ((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2
        self.shading = (1.0 - 0.8 * r2).astype(np.float32)
        self._grid = (yy, xx)
        rng = np.random.default_rng(settings.seed)
        n = settings.objects
        self.tissue_of_object = [1 + (i % (len(TISSUES) - 1)) for i in range(n)]
        short = min(h, w)
        self.radii = [(short * rng.uniform(0.12, 0.18), short * rng.uniform(0.16, 0.24)) for _ in range(n)]
        self.phases = rng.uniform(0, 2 * np.pi, size=n)

    def centre(self, obj: int, frame_index: int) -> tuple[float, float]:
        """(x, y) of object ``obj`` (0-based) on frame ``frame_index``: each moves along its own lane."""
        s = self.settings
        lane_y = s.height * (obj + 1) / (s.objects + 1)
        amplitude_x = s.width * 0.25
        period = max(2.0, 4 * amplitude_x / max(s.motion_px, 1e-6))  # frames for one full swing
        angle = 2 * np.pi * frame_index / period + self.phases[obj]
        drift_y = 0.15 * lane_y * np.sin(0.5 * angle) * (s.motion_px > 0)
        return s.width / 2 + amplitude_x * np.sin(angle), lane_y + drift_y

    def _coverage(self, obj: int, frame_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(fraction of each pixel covered by object ``obj``, its variant blend weight), both (H, W)."""
        yy, xx = self._grid
        cx, cy = self.centre(obj, frame_index)
        ry, rx = self.radii[obj]
        u, v = (xx - cx) / rx, (yy - cy) / ry
        # Partial volume: about one pixel of soft edge around the ellipse.
        cover = np.clip((1.0 - np.sqrt(u * u + v * v)) * min(rx, ry) + 0.5, 0.0, 1.0)
        blend = self.settings.variability * 0.5 * (1.0 + np.sin(3.0 * u + obj) * np.cos(2.0 * v))
        return cover.astype(np.float32), blend.astype(np.float32)

    def labels(self, frame_index: int) -> np.ndarray:
        """(H, W) int32 ground truth: 0 background, i+1 where object i covers at least half the pixel."""
        labels = np.zeros(self._grid[0].shape, dtype=np.int32)
        for obj in range(self.settings.objects):
            cover, _ = self._coverage(obj, frame_index)
            labels[cover >= 0.5] = obj + 1  # later objects on top
        return labels

    def render(self, frame_index: int) -> Capture:
        h, w = self._grid[0].shape
        cube = np.broadcast_to(self.spectra[0], (h, w, self.spectra.shape[1])).copy()
        labels = np.zeros((h, w), dtype=np.int32)
        for obj in range(self.settings.objects):
            cover, blend = self._coverage(obj, frame_index)
            tissue = self.tissue_of_object[obj]
            inside = cover > 0
            spectrum = (1.0 - blend[inside, None]) * self.spectra[tissue] + blend[inside, None] * self.variants[tissue]
            a = cover[inside, None]
            cube[inside] = (1.0 - a) * cube[inside] + a * spectrum
            labels[cover >= 0.5] = obj + 1
        cube *= self.shading[..., None]
        if self.settings.noise > 0:
            rng = np.random.default_rng([self.settings.seed, frame_index])
            cube += rng.normal(0.0, self.settings.noise, size=cube.shape).astype(np.float32)
        np.clip(cube, 0.0, 1.0, out=cube)
        return Capture(cube=cube, wavelengths_nm=self.wavelengths_nm, labels=labels,
                       metadata={"phantom_frame": frame_index, "tissues": [t.name for t in TISSUES]})

    def captures(self) -> Iterator[Capture]:
        k = 0
        while self.limit == 0 or k < self.limit:
            yield self.render(k)
            k += 1

    def describe(self) -> dict[str, object]:
        s = self.settings
        return {"source": "phantom", "shape": [s.height, s.width, s.bands], "seed": s.seed,
                "wavelength_range_nm": [s.wavelength_min_nm, s.wavelength_max_nm]}
