"""Labelled synthetic hyperspectral scenes for evaluation. Pure numpy, deterministic per seed.

Public HSI scenes with ground truth are not always at hand, so the evaluation can run on scenes
built to be hard in the ways real ones are:

- ``tiny``: 4-6 compact targets of 3-60 pixels (one or two of only 3-6 pixels), each of its own
  material and label value, on a background of 2-3 materials in large patches.
- ``scattered``: one or two materials, each in 3-8 separate parts of 2-30 pixels; one label value
  per material, so an object is either all of a material's parts or each part on its own.
- ``phantom``: frame ``seed`` of the phantom camera (``ingest.sources.phantom``) and its ground truth.

Realism of ``tiny`` and ``scattered``: at least one target material lies within 0.05-0.12 rad
spectral angle of a background material present in the scene (and is placed on it); target edges
are mixed linearly with the background; brightness varies smoothly across the field and from pixel
to pixel (spectral angles ignore it); Gaussian reflectance noise of sigma 0.005-0.01. Ground truth
marks a pixel as a target when the target covers most of it.

Label values are global: a material keeps its value in every scene (``TARGET_LABELS``), so class
names agree across a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..ingest.sources.phantom import TISSUES, PhantomCamera, TissueSpectrum
from . import EvaluationError

if TYPE_CHECKING:
    from ..settings import PhantomSettings

SCENE_KINDS = ("tiny", "scattered", "phantom")
WAVELENGTH_RANGE_NM = (450.0, 950.0)
MIN_SIZE = 16
MIN_BANDS = 3


@dataclass
class Scene:
    """A labelled hyperspectral image."""

    cube: np.ndarray  # (H, W, B) float32 reflectance in [0, 1]
    wavelengths_nm: np.ndarray  # (B,) float64, strictly increasing
    labels: np.ndarray  # (H, W) int32, 0 = background
    classes: dict[int, str]  # label value -> material name (never 0)


def _near(twin: TissueSpectrum, name: str, *extra: tuple[float, float, float]) -> TissueSpectrum:
    """A material that differs from ``twin`` only by extra absorption dips (negative depth: a bump)."""
    return TissueSpectrum(name, twin.base, twin.rise, twin.edge_nm, twin.width_nm, twin.dips + extra)


_GENERIC, _MUSCLE = TISSUES[0], TISSUES[5]
_FASCIA = TissueSpectrum("fascia", 0.48, 0.18, 580.0, 45.0, ((542.0, 0.03, 12.0), (576.0, 0.03, 12.0),
                                                            (970.0, 0.04, 30.0)))
BACKGROUNDS: tuple[TissueSpectrum, ...] = (_GENERIC, _MUSCLE, _FASCIA)
# The extra dips are sized so each near material is 0.07-0.10 rad from its twin on 450-950 nm.
TARGETS: tuple[TissueSpectrum, ...] = (
    *TISSUES[1:5],  # blood, fat, vessel, nerve
    _near(_MUSCLE, "tumour", (560.0, 0.08, 25.0), (760.0, -0.05, 14.0), (900.0, 0.04, 60.0)),
    _near(_GENERIC, "lymph node", (620.0, -0.057, 50.0), (880.0, 0.034, 50.0)),
    _near(_FASCIA, "ureter", (880.0, 0.155, 40.0), (520.0, -0.078, 30.0)),
    TissueSpectrum("bile duct", 0.25, 0.30, 560.0, 30.0, ((460.0, 0.08, 30.0), (680.0, 0.04, 40.0))),
)
TARGET_LABELS: dict[str, int] = {t.name: i + 1 for i, t in enumerate(TARGETS)}
NEAR_TWIN: dict[str, str] = {"tumour": _MUSCLE.name, "lymph node": _GENERIC.name, "ureter": _FASCIA.name}

_GAP = 2  # background pixels between two objects: each mixed edge pixel belongs to one object only


def make_scene(kind: str, seed: int, height: int = 64, width: int = 64, bands: int = 60, *,
               phantom: PhantomSettings | None = None) -> Scene:
    """The labelled scene of ``kind`` (one of ``SCENE_KINDS``) for ``seed``; the same arguments give
    the same scene. Wavelengths span 450-950 nm in ``bands`` steps.

    ``phantom``: the phantom camera's settings for kind "phantom" (objects, noise, wavelength range...;
    default: the built-in defaults with 450-950 nm); ``height``, ``width`` and ``bands`` replace its own.
    """
    if kind not in SCENE_KINDS:
        raise EvaluationError(f"unknown scene kind {kind!r}; expected one of {', '.join(SCENE_KINDS)}")
    for name, value, least in (("height", height, MIN_SIZE), ("width", width, MIN_SIZE), ("bands", bands, MIN_BANDS),
                               ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise EvaluationError(f"scene {name} must be an integer >= {least}, got {value!r}")
    if kind == "phantom":
        return _phantom_scene(int(seed), int(height), int(width), int(bands), phantom)
    rng = np.random.default_rng(int(seed))
    wavelengths = np.linspace(*WAVELENGTH_RANGE_NM, int(bands))
    builder = _Builder(rng, int(height), int(width), wavelengths)
    if kind == "tiny":
        builder.add_tiny_targets()
    else:
        builder.add_scattered_parts()
    return builder.finish()


def _phantom_scene(frame: int, height: int, width: int, bands: int, base: PhantomSettings | None) -> Scene:
    from ..settings import PhantomSettings

    fields = base.model_dump() if base is not None else {"wavelength_min_nm": WAVELENGTH_RANGE_NM[0],
                                                          "wavelength_max_nm": WAVELENGTH_RANGE_NM[1]}
    try:
        settings = PhantomSettings.model_validate({**fields, "height": height, "width": width, "bands": bands})
    except ValueError as exc:  # pydantic's ValidationError: a size the phantom camera does not support
        raise EvaluationError(f"phantom scene: {exc}") from exc
    camera = PhantomCamera(settings)
    capture = camera.render(frame)
    if capture.labels is None:  # the phantom always renders its ground truth
        raise EvaluationError("the phantom camera rendered no label map")
    classes = {obj + 1: TISSUES[tissue].name for obj, tissue in enumerate(camera.tissue_of_object)}
    return Scene(cube=np.asarray(capture.cube, dtype=np.float32),
                 wavelengths_nm=np.asarray(capture.wavelengths_nm, dtype=np.float64),
                 labels=np.asarray(capture.labels, dtype=np.int32), classes=classes)


class _Builder:
    """One scene under construction: the background, then objects placed one by one, then lighting and noise.

    The order of random draws is fixed, so a seed always gives the same scene."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, wavelengths: np.ndarray) -> None:
        self.rng = rng
        self.shape = (height, width)
        self.wavelengths = wavelengths
        self.labels = np.zeros(self.shape, dtype=np.int32)
        self.classes: dict[int, str] = {}
        self.taken = np.zeros(self.shape, dtype=bool)  # object pixels and their gap: no new object goes there
        self.jitter = rng.uniform(0.0, 0.35, self.shape)  # roughens blob outlines
        # Background: 2 or 3 materials in large patches (the largest of smooth random fields wins).
        count = int(rng.integers(2, len(BACKGROUNDS) + 1))
        self.backgrounds = [BACKGROUNDS[i] for i in sorted(rng.choice(len(BACKGROUNDS), count, replace=False))]
        fields = np.stack([_smooth_field(rng, self.shape, 0.6, 2.2) for _ in self.backgrounds])
        patch = np.argmax(fields, axis=0)
        # Patch borders blend over about one pixel, as materials meet in real scenes.
        self.abundance = np.stack([_box3((patch == k).astype(np.float64)) for k in range(count)])
        spectra = [self._material(m, rng.uniform(0.0, 0.25)) for m in self.backgrounds]
        self.cube = np.einsum("khw,kb->hwb", self.abundance, np.stack(spectra))

    def _material(self, material: TissueSpectrum, variation: float) -> np.ndarray:
        """The material's spectrum blended by ``variation`` towards a shifted-edge state of it."""
        shift = self.rng.uniform(-20.0, 20.0)
        return (1.0 - variation) * material.sample(self.wavelengths) + variation * material.variant(shift).sample(
            self.wavelengths)

    def _near_candidates(self) -> list[TissueSpectrum]:
        present = {m.name for m in self.backgrounds}
        return [t for t in TARGETS if NEAR_TWIN.get(t.name) in present]

    def add_tiny_targets(self) -> None:
        rng = self.rng
        count = int(rng.integers(4, 7))
        near = self._near_candidates()
        chosen = [near[i] for i in rng.choice(len(near), min(len(near), int(rng.integers(1, 3))), replace=False)]
        others = [t for t in TARGETS if t not in chosen]
        chosen += [others[i] for i in rng.choice(len(others), count - len(chosen), replace=False)]
        small = int(rng.integers(1, 3))  # targets of only 3-6 pixels
        cap = int(np.clip(0.15 * self.shape[0] * self.shape[1] / count, 8, 60))
        areas = [int(rng.integers(3, 7)) for _ in range(small)]
        areas += [int(round(np.exp(rng.uniform(np.log(7), np.log(cap))))) for _ in range(count - small)]
        order = np.argsort(areas)[::-1]  # the largest first, while there is room
        for index in order:
            material, area = chosen[index], areas[index]
            blob = self._place(area, 3, self._home_of(material))
            if blob is None:
                raise EvaluationError(f"no room for a {area}-pixel target in a {self.shape[0]}x{self.shape[1]} scene")
            self._paint(blob, material)

    def add_scattered_parts(self) -> None:
        rng = self.rng
        h, w = self.shape
        capacity = h * w // 60  # parts that fit with their gaps
        materials = int(rng.integers(1, 3)) if capacity >= 6 else 1
        near = self._near_candidates()
        pool = list(TARGETS)
        chosen: list[TissueSpectrum] = []
        if rng.uniform() < 0.5:  # half of the scenes scatter a material close to the background
            chosen.append(near[int(rng.integers(len(near)))])
        while len(chosen) < materials:
            pick = pool[int(rng.integers(len(pool)))]
            if pick not in chosen:
                chosen.append(pick)
        chosen = chosen[:materials]
        parts = [min(int(rng.integers(3, 9)), max(3, capacity // materials)) for _ in chosen]
        cap = int(np.clip(0.15 * h * w / sum(parts), 2, 30))
        for material, n in zip(chosen, parts, strict=True):
            placed = 0
            for _ in range(n):
                area = int(round(np.exp(rng.uniform(np.log(2), np.log(cap + 1))))) if cap > 2 else 2
                blob = self._place(min(area, cap), 2, self._home_of(material))
                if blob is None:
                    break
                self._paint(blob, material)
                placed += 1
            if placed < 3:
                raise EvaluationError(f"no room for 3 parts of {material.name} in a {h}x{w} scene")

    def _home_of(self, material: TissueSpectrum) -> np.ndarray | None:
        """Where a near material is placed: on its twin background material (the hard case)."""
        twin = NEAR_TWIN.get(material.name)
        for k, background in enumerate(self.backgrounds):
            if background.name == twin:
                return self.abundance[k] >= 0.5
        return None

    def _place(self, area: int, least: int, home: np.ndarray | None) -> np.ndarray | None:
        """A compact 4-connected blob of ``area`` pixels (at least ``least``) on free pixels, or None."""
        free = ~self.taken
        # Clearance: distance to the nearest taken pixel; centres with room for the whole blob come first.
        clearance = cv2.distanceTransform(free.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        need = np.sqrt(area / np.pi) + 1.0
        for attempt in range(12):
            pool = free & (clearance >= need) if attempt < 8 else free
            if home is not None and attempt < 4:
                pool = pool & home
            spots = np.flatnonzero(pool)
            if spots.size == 0:
                continue
            row, col = np.unravel_index(int(spots[int(self.rng.integers(spots.size))]), self.shape)
            blob = self._grow(int(row), int(col), area, free)
            if int(blob.sum()) >= least:
                return blob
        return None

    def _grow(self, row: int, col: int, area: int, free: np.ndarray) -> np.ndarray:
        """Grow from (row, col) one 4-neighbour at a time, always the one nearest an elliptical centre."""
        h, w = self.shape
        theta = self.rng.uniform(0.0, np.pi)
        stretch = self.rng.uniform(1.0, 2.2)
        cos, sin = np.cos(theta), np.sin(theta)
        blob = np.zeros(self.shape, dtype=bool)
        blob[row, col] = True
        frontier: set[tuple[int, int]] = set()

        def cost(p: tuple[int, int]) -> tuple[float, int, int]:
            u = (p[0] - row) * cos + (p[1] - col) * sin
            v = (p[1] - col) * cos - (p[0] - row) * sin
            return float(np.hypot(u, v * stretch) + self.jitter[p]), p[0], p[1]

        last = (row, col)
        for _ in range(area - 1):
            r0, c0 = last
            for r, c in ((r0 - 1, c0), (r0 + 1, c0), (r0, c0 - 1), (r0, c0 + 1)):
                if 0 <= r < h and 0 <= c < w and free[r, c] and not blob[r, c]:
                    frontier.add((r, c))
            if not frontier:
                break
            last = min(frontier, key=cost)
            frontier.discard(last)
            blob[last] = True
        return blob

    def _paint(self, blob: np.ndarray, material: TissueSpectrum) -> None:
        """Mix the material into the cube: pure inside, 65-95 % on its edge pixels, 10-35 % on the ring around it."""
        rng = self.rng
        spectrum = self._material(material, rng.uniform(0.0, 0.25))
        inner = cv2.erode(blob.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0).astype(bool)
        ring = cv2.dilate(blob.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~blob
        cover = np.zeros(self.shape)
        cover[blob] = rng.uniform(0.65, 0.95, int(blob.sum()))
        cover[inner] = 1.0
        cover[ring] = rng.uniform(0.10, 0.35, int(ring.sum()))
        mixed = cover > 0
        self.cube[mixed] = (1.0 - cover[mixed, None]) * self.cube[mixed] + cover[mixed, None] * spectrum
        value = TARGET_LABELS[material.name]
        self.labels[blob] = value
        self.classes[value] = material.name
        size = 2 * (_GAP + 1) + 1  # new objects keep _GAP free pixels between them and this one
        self.taken |= cv2.dilate(blob.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)

    def finish(self) -> Scene:
        """Lighting (smooth shading and per-pixel brightness), sensor noise, clipping to [0, 1]."""
        rng = self.rng
        shading = 0.75 + 0.3 * _smooth_field(rng, self.shape, 0.3, 1.0)
        brightness = shading * (1.0 + 0.03 * rng.standard_normal(self.shape))
        sigma = rng.uniform(0.005, 0.01)
        cube = self.cube * brightness[..., None] + rng.normal(0.0, sigma, self.cube.shape)
        return Scene(cube=np.clip(cube, 0.0, 1.0).astype(np.float32), wavelengths_nm=self.wavelengths,
                     labels=self.labels, classes=dict(sorted(self.classes.items())))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], low: float, high: float) -> np.ndarray:
    """A smooth random field in [0, 1]: a sum of waves of ``low``-``high`` cycles across the image."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    field = np.zeros(shape)
    for _ in range(6):
        cycles = rng.uniform(low, high)
        angle = rng.uniform(0.0, 2 * np.pi)
        phase = rng.uniform(0.0, 2 * np.pi)
        field += np.cos(2 * np.pi * cycles * (np.cos(angle) * xx / w + np.sin(angle) * yy / h) + phase)
    span = field.max() - field.min()
    return (field - field.min()) / span if span > 0 else np.zeros(shape)


def _box3(values: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3x3 neighbourhood (edges repeated): a one-pixel blend."""
    padded = np.pad(values, 1, mode="edge")
    h, w = values.shape
    total = np.zeros_like(values, dtype=np.float64)
    for r in range(3):
        for c in range(3):
            total += padded[r:r + h, c:c + w]
    return total / 9.0


__all__ = ["BACKGROUNDS", "SCENE_KINDS", "TARGETS", "TARGET_LABELS", "Scene", "make_scene"]
