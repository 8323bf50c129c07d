"""A synthetic hyperspectral camera: tissue-like objects with distinct smooth spectra moving
over a background under uneven illumination, with sensor noise. Deterministic per frame.

With ``away_every`` set, object 1 periodically slides out of the field of view across its nearest
image border and back, so trackers can be tested on an object that disappears and returns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...settings import PhantomSettings
from ..capture import Capture, SourceError
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


def ellipse_cover(u: np.ndarray, v: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """Fraction of each pixel covered by an ellipse of radii ``rx``, ``ry`` pixels, given each pixel
    centre's offset from the ellipse centre in radii (``u`` = dx / rx, ``v`` = dy / ry)."""
    # Partial volume: about one pixel of soft edge around the ellipse.
    return np.clip((1.0 - np.sqrt(u * u + v * v)) * min(rx, ry) + 0.5, 0.0, 1.0)


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
        self._noise: np.ndarray | None = None  # made on the first frame that needs it
        self._looped: dict[int, Capture] = {}  # loop_frames: the frames rendered once, read-only

    def _shown(self, frame_index: int) -> int:
        """The frame drawn for ``frame_index`` (with ``loop_frames`` the first frames repeat)."""
        n = self.settings.loop_frames
        return frame_index % n if n > 0 else frame_index

    def _noise_for(self, frame_index: int) -> np.ndarray:
        """Sensor noise (H, W, B) float32 of frame ``frame_index``. With ``noise_bank``: a window, at an offset
        drawn per frame, of one bank of Gaussian noise drawn once, so a full-size frame costs no new random
        numbers (drawing them takes 250-900 ms per 480 x 640 x 100 frame); each frame still gets
        independent-looking pixel noise."""
        s = self.settings
        shape = (s.height, s.width, s.bands)
        if not s.noise_bank:
            rng = np.random.default_rng([s.seed, frame_index])
            return rng.normal(0.0, s.noise, size=shape).astype(np.float32)
        size = s.height * s.width * s.bands
        if self._noise is None:
            bank = np.random.default_rng([s.seed, 1]).standard_normal(size + size // 2 + 1, dtype=np.float32)
            bank *= np.float32(s.noise)
            self._noise = bank
        start = int(np.random.default_rng([s.seed, frame_index]).integers(0, self._noise.size - size + 1))
        return self._noise[start:start + size].reshape(shape)

    def centre(self, obj: int, frame_index: int) -> tuple[float, float]:
        """(x, y) of object ``obj`` (0-based) on frame ``frame_index``: each moves along its own lane.

        During an excursion (``away_every``) object 0's centre lies towards or beyond an image border,
        possibly outside the image; ``visible`` says how much of the object is in view.
        """
        frame_index = self._shown(frame_index)
        x, y = self._lane_centre(obj, frame_index)
        away = self._excursion(frame_index) if obj == 0 else None
        if away is None:
            return x, y
        start, out = away
        tx, ty = self._exit_point(obj, start)
        return x + out * (tx - x), y + out * (ty - y)

    def _lane_centre(self, obj: int, frame_index: int) -> tuple[float, float]:
        s = self.settings
        lane_y = s.height * (obj + 1) / (s.objects + 1)
        amplitude_x = s.width * 0.25
        period = max(2.0, 4 * amplitude_x / max(s.motion_px, 1e-6))  # frames for one full swing
        angle = 2 * np.pi * frame_index / period + self.phases[obj]
        drift_y = 0.15 * lane_y * np.sin(0.5 * angle) * (s.motion_px > 0)
        return s.width / 2 + amplitude_x * np.sin(angle), lane_y + drift_y

    def _excursion(self, frame_index: int) -> tuple[int, float] | None:
        """(first frame of the excursion, how far out 0..1) if object 0 is away on this frame, else None.

        Excursions start on frames away_every, 2 * away_every, ... and last away_frames frames: about a
        third of them sliding out, the middle wholly out of view, the last third sliding back.
        """
        every, frames = self.settings.away_every, self.settings.away_frames
        if every <= 0 or frame_index < every or frame_index % every >= frames:
            return None
        step = frame_index % every
        ramp = frames // 3 + 1  # steps to go fully out; frames < 3 jump out and back at once
        return frame_index - step, min(1.0, (step + 1) / ramp, (frames - step) / ramp)

    def _exit_point(self, obj: int, start: int) -> tuple[float, float]:
        """Centre of object ``obj`` just wholly outside the image, across the border nearest to its
        lane centre on frame ``start`` (fixed for the whole excursion so it leaves and returns one way)."""
        s = self.settings
        x, y = self._lane_centre(obj, start)
        ry, rx = self.radii[obj]
        # Past the soft edge: ellipse_cover is 0 at every pixel centre once the margin is this wide.
        margin_x = 1.0 + 0.5 * rx / min(rx, ry)
        margin_y = 1.0 + 0.5 * ry / min(rx, ry)
        exits = ((x, (-rx - margin_x, y)), (s.width - 1 - x, (s.width - 1 + rx + margin_x, y)),
                 (y, (x, -ry - margin_y)), (s.height - 1 - y, (x, s.height - 1 + ry + margin_y)))
        return min(exits, key=lambda e: e[0])[1]

    def visible(self, obj: int, frame_index: int) -> float:
        """Fraction (0..1) of object ``obj``'s area that lies inside the image on frame ``frame_index``:
        1.0 wholly in view, 0.0 wholly out (away). Objects in front of it do not count as hiding it."""
        if not 0 <= obj < self.settings.objects:
            raise SourceError(f"phantom object {obj} does not exist (objects 0..{self.settings.objects - 1})")
        cx, cy = self.centre(obj, frame_index)
        ry, rx = self.radii[obj]
        # The whole ellipse on pixel centres aligned with the image's; the image is a window of it.
        xs = np.arange(np.floor(cx - rx) - 2, np.ceil(cx + rx) + 3, dtype=np.float32)
        ys = np.arange(np.floor(cy - ry) - 2, np.ceil(cy + ry) + 3, dtype=np.float32)
        cover = ellipse_cover((xs[None, :] - cx) / rx, (ys[:, None] - cy) / ry, rx, ry).astype(np.float64)
        in_view = ((xs >= 0) & (xs < self.settings.width))[None, :] & ((ys >= 0) & (ys < self.settings.height))[:, None]
        total = float(cover.sum())
        return float((cover * in_view).sum()) / total if total > 0 else 0.0

    def _coverage(self, obj: int, frame_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(fraction of each pixel covered by object ``obj``, its variant blend weight), both (H, W)."""
        yy, xx = self._grid
        cx, cy = self.centre(obj, frame_index)
        ry, rx = self.radii[obj]
        u, v = (xx - cx) / rx, (yy - cy) / ry
        cover = ellipse_cover(u, v, rx, ry)
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
        if self.settings.loop_frames > 0:
            shown = self._shown(frame_index)
            if shown not in self._looped:
                capture = self._render(shown)
                capture.cube.flags.writeable = False  # shared by every repeat
                if capture.labels is not None:
                    capture.labels.flags.writeable = False
                self._looped[shown] = capture
            kept = self._looped[shown]
            return Capture(cube=kept.cube, wavelengths_nm=kept.wavelengths_nm, labels=kept.labels,
                           metadata={**kept.metadata, "phantom_frame": frame_index})
        return self._render(frame_index)

    def _render(self, frame_index: int) -> Capture:
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
            cube += self._noise_for(frame_index)
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
        out: dict[str, object] = {"source": "phantom", "shape": [s.height, s.width, s.bands], "seed": s.seed,
                                  "wavelength_range_nm": [s.wavelength_min_nm, s.wavelength_max_nm]}
        if s.away_every > 0:
            out["away"] = {"every": s.away_every, "frames": s.away_frames}
        return out
