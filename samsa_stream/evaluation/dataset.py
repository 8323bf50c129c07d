"""Labelled hyperspectral datasets for evaluation and adapter training (docs/evaluation.md, Datasets).

A dataset is a capture file, a folder of captures, or a manifest (TOML or JSON) that lists cubes and
label files. ``open_dataset`` lists its labelled images cheaply (``ImageEntry``: no cube is held);
``Dataset.load`` reads one image and normalizes it exactly as the ingest does, with its label map at
the frame's resolution and the objects to segment (``objects_of``: one per class, or one per
8-connected component of each class).

Labels come from the capture itself (node ``.npz``, ``.npy`` with ``<stem>_labels.npy``, HELICoiD
``gtMap``), from a label file beside the cube (``<stem>_labels.png|.tif|.tiff|.bmp|.npy|.hdr``), or
from the file a manifest names (which wins over both).
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from numpy.lib import format as npy_format

from ..ingest.capture import READ_ERRORS, SourceError
from ..ingest.formats import ReadOptions, capture_files, read_capture, read_entry
from ..ingest.formats.envi import read_envi
from ..ingest.formats.helicoid import LABELS as HELICOID_LABELS
from ..ingest.formats.helicoid import is_helicoid_folder
from ..ingest.formats.npy import NUMPY_READ_ERRORS
from ..ingest.formats.tivita import read_tivita_cube
from . import EvaluationError

if TYPE_CHECKING:
    from ..ingest.normalize import Normalizer
    from ..protocol import CubeFrame
    from ..settings import Settings

log = logging.getLogger(__name__)

ObjectMode = Literal["components", "classes"]
OBJECT_MODES: tuple[ObjectMode, ...] = ("components", "classes")

MANIFEST_FORMAT = "samsa-stream/eval-dataset"
MANIFEST_VERSION = 1
MANIFEST_SUFFIXES = (".toml", ".json")
MANIFEST_STEM = "manifest"  # a folder holding manifest.toml / manifest.json stands for that manifest
MANIFEST_KEYS = ("format", "version", "name", "objects", "min_area_px", "skip", "classes", "images")
IMAGE_KEYS = ("cube", "labels", "frame")

LABELS_SUFFIX = "_labels"
IMAGE_LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
# The label file beside a cube: the first of these that exists (documented order).
LABEL_SUFFIXES = (*IMAGE_LABEL_SUFFIXES, ".npy", ".hdr")

STREAM_ID = "eval"  # stream id of the frames a dataset delivers


# ------------------------------------------------------------------------------------------ objects


@dataclass(frozen=True)
class ObjectRules:
    """What counts as an object in a label map.

    ``mode``: "components" (each 8-connected region of one label value) or "classes" (all pixels of
    one label value). Objects smaller than ``min_area_px`` pixels (at the frame's resolution) and
    label values in ``skip`` are left out. ``classes`` names label values ("class N" when absent).
    """

    mode: ObjectMode = "components"
    min_area_px: int = 1
    skip: frozenset[int] = frozenset({0})
    classes: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in OBJECT_MODES:
            raise EvaluationError(f"object mode {self.mode!r} is not one of {', '.join(OBJECT_MODES)}")
        if isinstance(self.min_area_px, bool) or not isinstance(self.min_area_px, int | np.integer) \
                or self.min_area_px < 1:
            raise EvaluationError(f"min_area_px must be an integer >= 1, got {self.min_area_px!r}")
        # Normalized so that any iterable / mapping given by a caller compares and describes alike.
        object.__setattr__(self, "min_area_px", int(self.min_area_px))
        object.__setattr__(self, "skip", frozenset(_label_value(v, "skip") for v in self.skip))
        object.__setattr__(self, "classes", MappingProxyType(
            {_label_value(k, "classes"): str(v) for k, v in sorted(self.classes.items())}))

    def __hash__(self) -> int:  # classes is a mapping, so the generated hash would fail
        return hash((self.mode, self.min_area_px, self.skip, tuple(self.classes.items())))

    def class_name(self, value: int) -> str:
        """The name of label ``value``: from ``classes``, else "class VALUE"."""
        return self.classes.get(value, f"class {value}")

    def describe(self) -> dict[str, Any]:
        """JSON-ready, with the manifest's key names (so it can be written back into a manifest)."""
        return {"objects": self.mode, "min_area_px": self.min_area_px, "skip": sorted(self.skip),
                "classes": {str(k): v for k, v in sorted(self.classes.items())}}


def _label_value(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise EvaluationError(f"{what}: label values are integers, got {value!r}")
    return int(value)


@dataclass
class EvalObject:
    """One object to segment: a region of one label value.

    ``key`` is unique within its image and stable: "c3" (class 3, classes mode) or "c3-k2"
    (component 2 of class 3, components mode; components are numbered from 0 in the raster order
    of their first pixel, counting those dropped for size, so keys do not move with ``min_area_px``).
    """

    key: str
    class_value: int
    class_name: str
    mask: np.ndarray  # (H, W) bool

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def objects_of(labels: np.ndarray, rules: ObjectRules) -> list[EvalObject]:
    """The objects of an (H, W) integer label map under ``rules``, sorted by (class value, component).

    Classes mode: one object per label value present (not skipped) with >= ``min_area_px`` pixels.
    Components mode: one object per 8-connected component of each such value with >= ``min_area_px``
    pixels. Label values not in ``skip`` but too small give no object.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise EvaluationError(f"a label map is (H, W) integers, got shape {labels.shape} dtype {labels.dtype}")
    objects: list[EvalObject] = []
    for value in (int(v) for v in np.unique(labels)):
        if value in rules.skip:
            continue
        mask = labels == value
        name = rules.class_name(value)
        if rules.mode == "components":
            objects.extend(_components(mask, value, name, rules.min_area_px))
        elif np.count_nonzero(mask) >= rules.min_area_px:
            objects.append(EvalObject(f"c{value}", value, name, mask))
    return objects


def _components(mask: np.ndarray, value: int, name: str, min_area_px: int) -> list[EvalObject]:
    """The 8-connected components of ``mask`` in raster order of their first pixel."""
    import cv2

    count, regions, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    width = mask.shape[1]
    first: list[tuple[int, int]] = []  # (raster index of the first pixel, cv2 label)
    for label in range(1, count):
        top = int(stats[label, cv2.CC_STAT_TOP])
        column = int(np.argmax(regions[top] == label))  # the first row of a region holds its first pixel
        first.append((top * width + column, label))
    objects = []
    for k, (_, label) in enumerate(sorted(first)):
        if stats[label, cv2.CC_STAT_AREA] < min_area_px:
            continue
        x, y, w, h = (int(stats[label, i]) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                       cv2.CC_STAT_HEIGHT))
        component = np.zeros(mask.shape, dtype=bool)
        component[y:y + h, x:x + w] = regions[y:y + h, x:x + w] == label  # only the bounding box is compared
        objects.append(EvalObject(f"c{value}-k{k}", value, name, component))
    return objects


# -------------------------------------------------------------------------------------- label files


def read_label_file(path: Path) -> np.ndarray:
    """An (H, W) int32 label map from a label file.

    ``.png``/``.tif``/``.tiff``/``.bmp``: read unchanged (8 or 16 bit); one channel, or three equal
    channels. ``.npy``: an (H, W) integer array. ``.hdr``: an ENVI image with one band. Float data
    must hold whole numbers. EvaluationError naming the file otherwise.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_LABEL_SUFFIXES:
        import cv2

        try:
            data = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        except OSError as exc:
            raise EvaluationError(f"{path}: label file cannot be read ({exc.strerror or exc})") from None
        if data is None:
            raise EvaluationError(f"{path}: not a readable {suffix[1:]} image")
    elif suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except NUMPY_READ_ERRORS as exc:
            raise EvaluationError(f"{path}: not a readable .npy label map ({exc or type(exc).__name__})") from None
    elif suffix == ".hdr":
        try:
            image = read_envi(path)
            data = np.asarray(image.cube)
        except SourceError as exc:
            raise EvaluationError(f"ENVI label image: {exc}") from None
        except READ_ERRORS as exc:
            raise EvaluationError(f"{path}: ENVI label image cannot be read ({exc})") from None
        if data.shape[2] != 1:
            raise EvaluationError(f"{path}: an ENVI label image has one band, this one has {data.shape[2]}")
    else:
        raise EvaluationError(f"{path}: no label reader for '{suffix}' files (known: {', '.join(LABEL_SUFFIXES)})")
    return _as_label_map(data, path)


def _as_label_map(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    elif data.ndim == 3 and data.shape[2] == 3:
        if not (np.array_equal(data[..., 0], data[..., 1]) and np.array_equal(data[..., 0], data[..., 2])):
            raise EvaluationError(f"{path}: a colour image is not a label map (its 3 channels differ); write "
                                  "the label values into one channel, or three equal ones")
        data = data[..., 0]
    if data.ndim != 2:
        raise EvaluationError(f"{path}: a label map is H x W (one channel, or three equal ones), got shape "
                              f"{data.shape}")
    if data.dtype.kind == "b":
        return data.astype(np.int32)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise EvaluationError(f"{path}: label values must be whole numbers, the {data.dtype} map holds others")
    elif data.dtype.kind not in "iu":
        raise EvaluationError(f"{path}: label map dtype {data.dtype} is not an integer type")
    info = np.iinfo(np.int32)
    if data.size and (data.min() < info.min or data.max() > info.max):
        raise EvaluationError(f"{path}: label values {data.min()}..{data.max()} do not fit int32")
    return data.astype(np.int32)


def label_file_for(cube: Path) -> Path | None:
    """The label file beside a cube by convention, ``<stem>_labels`` + the first of LABEL_SUFFIXES that
    exists (``x.img.hdr`` also finds ``x_labels.*``); None when there is none."""
    stems = [cube.stem]
    if PurePath(cube.stem).suffix:
        stems.append(PurePath(cube.stem).stem)
    for stem in stems:
        for suffix in LABEL_SUFFIXES:
            candidate = cube.with_name(stem + LABELS_SUFFIX + suffix)
            if candidate.is_file():
                return candidate
    return None


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


def _check_label_shape(labels_path: Path, labels: tuple[int, ...], cube: Path, shape: tuple[int, ...]) -> None:
    if tuple(labels) != tuple(shape):
        raise EvaluationError(f"{labels_path}: label map is {_shape_text(labels)} (H x W), the cube {cube} is "
                              f"{_shape_text(shape)} as the node reads it; a label map must match it pixel for "
                              "pixel (TIVITA: 480 x 640, the upright image)")


# ------------------------------------------------------------------------------- captures, cheaply


@dataclass(frozen=True)
class _Held:
    """What listing learns of one capture without keeping its cube."""

    labelled: bool  # carries its own label map
    shape: tuple[int, int]  # (H, W) as read, before binning


def _probe(path: Path, options: ReadOptions) -> list[_Held]:
    """The captures of one capture file or HELICoiD folder, in file order; SourceError naming ``path``
    when it cannot be read. Reads headers where the format allows, so no cube is read whole."""
    try:
        return _probe_unchecked(path, options)
    except SourceError:
        raise
    except READ_ERRORS as exc:
        raise SourceError(f"{path}: cannot be read ({exc or type(exc).__name__})") from exc


def _probe_unchecked(path: Path, options: ReadOptions) -> list[_Held]:
    folder = path if path.is_dir() else path.parent if path.name == "raw.hdr" else None
    if folder is not None and is_helicoid_folder(folder):
        raw = read_envi(folder / "raw.hdr")
        return [_Held((folder / f"{HELICOID_LABELS}.hdr").is_file(), _hw(raw.cube.shape))]
    suffix = path.suffix.lower()
    if suffix == ".hdr":
        return [_Held(False, _hw(read_envi(path).cube.shape))]
    if suffix == ".dat":  # ENVI data when its header lies beside it (as the reader decides), else TIVITA
        if any(h.is_file() for h in (path.with_suffix(".hdr"), path.with_name(path.name + ".hdr"))):
            return [_Held(False, _hw(read_envi(path).cube.shape))]
        return [_Held(False, _hw(read_tivita_cube(path).shape))]
    if suffix == ".npz":
        held = _probe_npz(path)
        if held is not None:
            return held
    # Any other reader (or an unusual archive): read each capture once; the reader memory-maps what it can.
    return [_Held(c.labels is not None, _hw(c.cube.shape)) for c in read_entry(path, options)]


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    return int(shape[0]), int(shape[1])


def _probe_npz(path: Path) -> list[_Held] | None:
    """A node ``.npz`` from its members' headers, without decompressing the cubes; None when the
    archive is not laid out as usual (the reader then reads it and says what is wrong)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy") for name in archive.namelist()}
            key = "cubes" if "cubes" in members else "cube" if "cube" in members else None
            if key is None:
                return None
            with archive.open(key + ".npy") as fh:
                version = npy_format.read_magic(fh)
                if version == (1, 0):
                    shape = npy_format.read_array_header_1_0(fh)[0]
                elif version == (2, 0):
                    shape = npy_format.read_array_header_2_0(fh)[0]
                else:
                    return None
    except NUMPY_READ_ERRORS:
        return None
    labelled = "labels" in members
    if key == "cubes" and len(shape) == 4:
        return [_Held(labelled, _hw(shape[1:3]))] * int(shape[0])
    if key == "cube" and len(shape) == 3:
        return [_Held(labelled, _hw(shape))]
    return None


# ------------------------------------------------------------------------------------------ dataset


@dataclass(frozen=True)
class ImageEntry:
    """One labelled image of a dataset, as listed (no cube held).

    ``index`` is the capture's place within ``path`` (as ``read_capture`` counts); ``labels_path`` is
    the label file used, or None when the capture carries its own labels.
    """

    name: str
    path: Path
    index: int
    labels_path: Path | None


@dataclass
class LabelledImage:
    """One loaded image: the normalized frame (``frame.labels`` set), its label map and its objects."""

    name: str
    frame: CubeFrame
    labels: np.ndarray  # (H, W) int32 at the frame's resolution
    objects: list[EvalObject]


@dataclass
class Dataset:
    """The labelled images of a dataset, listed in a stable order; ``load`` reads one at a time.

    ``skipped_unlabelled`` counts captures found without labels; ``unreadable`` keeps (path, error)
    for each file that could not be listed (folders go on past them).
    """

    name: str
    root: Path
    rules: ObjectRules
    entries: list[ImageEntry]
    skipped_unlabelled: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    settings: Settings | None = None  # None = the defaults
    _normalizer: Normalizer | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def _settings(self) -> Settings:
        if self.settings is None:
            from ..settings import Settings

            self.settings = Settings()
        return self.settings

    def load(self, i: int) -> LabelledImage:
        """Image ``i``: read, given its label map and normalized as the ingest does (frame id ``i``,
        stream "eval"). SourceError when the capture cannot be read or used; EvaluationError when its
        label file does not fit it."""
        from ..ingest.normalize import Normalizer

        entry = self.entries[i]
        settings = self._settings()
        capture = read_capture(entry.path, entry.index, ReadOptions.from_settings(settings.ingest))
        if entry.labels_path is not None:
            labels = read_label_file(entry.labels_path)
            _check_label_shape(entry.labels_path, labels.shape, entry.path, capture.cube.shape[:2])
            capture = replace(capture, labels=labels)
        elif capture.labels is None:
            raise SourceError(f"{entry.path}: capture {entry.index} carries no label map any more")
        if self._normalizer is None:  # built once: it loads any session white/dark references
            self._normalizer = Normalizer(settings.ingest)
        frame = self._normalizer(capture, STREAM_ID, i, capture.timestamp_ns or 0)
        labels = cast(np.ndarray, frame.labels)  # the capture had labels, so the normalizer kept them (binned)
        return LabelledImage(name=entry.name, frame=frame, labels=labels, objects=objects_of(labels, self.rules))

    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, root, images (name, path, capture index, label file), rules,
        skipped_unlabelled and unreadable (path, error)."""
        return {
            "name": self.name, "root": str(self.root),
            "images": [{"name": e.name, "path": str(e.path), "index": e.index,
                        "labels": None if e.labels_path is None else str(e.labels_path)} for e in self.entries],
            "rules": self.rules.describe(), "skipped_unlabelled": self.skipped_unlabelled,
            "unreadable": [{"path": p, "error": err} for p, err in self.unreadable],
        }


def open_dataset(path: Path, settings: Settings, *, mode: ObjectMode | None = None, min_area_px: int | None = None,
                 skip: Iterable[int] | None = None) -> Dataset:
    """The labelled dataset at ``path``: a manifest (``.toml``/``.json``), a folder holding a manifest
    (``manifest.toml`` or ``manifest.json``: the folder means its manifest), a folder (every capture below
    it that has labels), or one capture file or HELICoiD folder.

    ``mode``, ``min_area_px`` and ``skip`` (from command-line flags) override the manifest's values;
    unset, they default as ObjectRules does. Raises EvaluationError naming the file, key or problem.
    """
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path}: no such file or folder")
    options = ReadOptions.from_settings(settings.ingest)
    if path.is_dir():
        path = next((path / f"{MANIFEST_STEM}{suffix}" for suffix in MANIFEST_SUFFIXES
                     if (path / f"{MANIFEST_STEM}{suffix}").is_file()), path)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        manifest = _read_manifest(path)
        rules = ObjectRules(mode=mode or manifest.mode,
                            min_area_px=manifest.min_area_px if min_area_px is None else min_area_px,
                            skip=manifest.skip if skip is None else frozenset(skip), classes=manifest.classes)
        entries, unreadable = _list_manifest(path, manifest, options)
        if not entries:
            raise EvaluationError(f"{path}: no image of the manifest can be read: "
                                  + "; ".join(err for _, err in unreadable[:3]))
        return Dataset(name=manifest.name or path.stem, root=path.parent, rules=rules, entries=entries,
                       unreadable=unreadable, settings=settings)
    rules = ObjectRules(mode=mode or "components", min_area_px=1 if min_area_px is None else min_area_px,
                        skip=frozenset({0}) if skip is None else frozenset(skip))
    if path.is_dir() and not is_helicoid_folder(path):
        try:
            files = capture_files(path)
        except OSError as exc:
            raise EvaluationError(f"{path}: cannot be listed ({exc.strerror or exc})") from None
        if not files:
            raise EvaluationError(f"{path}: folder holds no capture files")
        root, name = path, path.name
    else:
        files, root, name = [path], path.parent, path.name if path.is_dir() else path.stem
    entries, unlabelled, unreadable = _list_found(root, files, options)
    if not entries:
        reasons = [f"{unlabelled} capture(s) without labels"] if unlabelled else []
        reasons += [err for _, err in unreadable[:3]]
        raise EvaluationError(f"{path}: no capture with labels ({'; '.join(reasons)}); labels come with the "
                              f"capture or from a file <stem>{LABELS_SUFFIX}{{{','.join(LABEL_SUFFIXES)}}} beside it")
    return Dataset(name=name, root=root, rules=rules, entries=entries, skipped_unlabelled=unlabelled,
                   unreadable=unreadable, settings=settings)


def _name(path: Path, root: Path, index: int, count: int) -> str:
    """Path relative to the root (``/``-separated), with ``#index`` when the file holds several captures."""
    relative = PurePath(os.path.relpath(path, root)).as_posix()
    return f"{relative}#{index}" if count > 1 else relative


def _list_found(root: Path, files: list[Path],
                options: ReadOptions) -> tuple[list[ImageEntry], int, list[tuple[str, str]]]:
    """Entries for captures found in a folder: those with labels; the rest counted, bad files kept aside."""
    entries: list[ImageEntry] = []
    unlabelled = 0
    unreadable: list[tuple[str, str]] = []
    for path in files:
        try:
            held = _probe(path, options)
            labels_path = None if path.is_dir() else label_file_for(path)
            if labels_path is not None and not all(h.labelled for h in held):
                label_shape = read_label_file(labels_path).shape
                for h in held:
                    if not h.labelled:
                        _check_label_shape(labels_path, label_shape, path, h.shape)
        except (SourceError, EvaluationError) as exc:
            log.warning("skipped: %s", exc)
            unreadable.append((str(path), str(exc)))
            continue
        for index, h in enumerate(held):
            if h.labelled or labels_path is not None:
                entries.append(ImageEntry(_name(path, root, index, len(held)), path, index,
                                          None if h.labelled else labels_path))
            else:
                unlabelled += 1
    return entries, unlabelled, unreadable


# ----------------------------------------------------------------------------------------- manifest


@dataclass
class _ManifestImage:
    where: str  # "images[3]", for messages
    cube: Path  # relative to the manifest
    labels: Path | None
    frame: int | None


@dataclass
class _Manifest:
    name: str | None
    mode: ObjectMode
    min_area_px: int
    skip: frozenset[int]
    classes: dict[int, str]
    images: list[_ManifestImage]


def _read_manifest(path: Path) -> _Manifest:
    """Parse and check a manifest; EvaluationError naming the file and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: manifest cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise EvaluationError(f"{path}: not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: a manifest is a table of keys ({', '.join(MANIFEST_KEYS)}), "
                              f"got a {type(data).__name__}")
    where = str(path)
    _no_unknown(data, MANIFEST_KEYS, where, "")
    if data.get("format") is not None and data["format"] != MANIFEST_FORMAT:
        raise EvaluationError(f"{where}: 'format' is {data['format']!r}; a dataset manifest says {MANIFEST_FORMAT!r}")
    version = _get(data, "version", int, where, MANIFEST_VERSION)
    if version != MANIFEST_VERSION:
        raise EvaluationError(f"{where}: 'version' is {version}; this node reads version {MANIFEST_VERSION}")
    name = _get(data, "name", str, where, None)
    mode = _get(data, "objects", str, where, "components")
    if mode not in OBJECT_MODES:
        raise EvaluationError(f"{where}: 'objects' is {mode!r}; expected one of {', '.join(OBJECT_MODES)}")
    min_area = _get(data, "min_area_px", int, where, 1)
    if min_area < 1:
        raise EvaluationError(f"{where}: 'min_area_px' must be >= 1, got {min_area}")
    skip = _get(data, "skip", list, where, [0])
    for value in skip:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EvaluationError(f"{where}: 'skip' holds label values (integers), got {value!r}")
    classes: dict[int, str] = {}
    for key, value in _get(data, "classes", dict, where, {}).items():
        try:
            number = int(key)
        except ValueError:
            raise EvaluationError(f"{where}: 'classes' key {key!r} is not a label value (an integer)") from None
        if not isinstance(value, str):
            raise EvaluationError(f"{where}: 'classes' name of {key} must be a string, got {value!r}")
        classes[number] = value
    images = _get(data, "images", list, where, None)
    if not images:
        raise EvaluationError(f"{where}: 'images' is missing or empty; list the cubes as [[images]] cube = ...")
    return _Manifest(name=name, mode=cast(ObjectMode, mode), min_area_px=min_area, skip=frozenset(skip),
                     classes=classes, images=[_manifest_image(item, f"images[{i}]", where)
                                              for i, item in enumerate(images)])


def _manifest_image(item: Any, key: str, where: str) -> _ManifestImage:
    if not isinstance(item, dict):
        raise EvaluationError(f"{where}: '{key}' must be a table with 'cube' (and 'labels', 'frame'), got {item!r}")
    _no_unknown(item, IMAGE_KEYS, where, f"{key}.")
    cube = _get(item, "cube", str, where, None, prefix=f"{key}.")
    if not cube:
        raise EvaluationError(f"{where}: '{key}.cube' is missing; each image names its cube file")
    labels = _get(item, "labels", str, where, None, prefix=f"{key}.")
    frame = _get(item, "frame", int, where, None, prefix=f"{key}.")
    if frame is not None and frame < 0:
        raise EvaluationError(f"{where}: '{key}.frame' must be >= 0, got {frame}")
    return _ManifestImage(where=key, cube=Path(cube), labels=None if labels is None else Path(labels), frame=frame)


def _no_unknown(data: dict[str, Any], known: tuple[str, ...], where: str, prefix: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise EvaluationError(f"{where}: unknown key(s) {', '.join(repr(prefix + k) for k in unknown)} "
                              f"(known: {', '.join(prefix + k for k in known)})")


def _get(data: dict[str, Any], key: str, kind: type, where: str, default: Any, prefix: str = "") -> Any:
    """``data[key]`` checked to be a ``kind`` (None counts as absent); ``default`` when absent."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {int: "an integer", str: "a string", list: "a list", dict: "a table"}
        raise EvaluationError(f"{where}: '{prefix}{key}' must be {names[kind]}, got {value!r}")
    return value


def _list_manifest(manifest_path: Path, manifest: _Manifest,
                   options: ReadOptions) -> tuple[list[ImageEntry], list[tuple[str, str]]]:
    """Entries for a manifest's images in its order. What the manifest names must exist and fit; a file
    that exists but cannot be read is kept aside, so one damaged cube does not stop an evaluation."""
    root = manifest_path.parent
    where = str(manifest_path)
    entries: list[ImageEntry] = []
    unreadable: list[tuple[str, str]] = []
    seen: set[str] = set()
    for image in manifest.images:
        cube = Path(os.path.normpath(root / image.cube))
        if not cube.exists():
            raise EvaluationError(f"{where}: '{image.where}.cube' {image.cube}: no such file ({cube})")
        labels_path = None
        if image.labels is not None:
            labels_path = Path(os.path.normpath(root / image.labels))
            if not labels_path.is_file():
                raise EvaluationError(f"{where}: '{image.where}.labels' {image.labels}: no such file ({labels_path})")
        try:
            held = _probe(cube, options)
        except SourceError as exc:
            log.warning("skipped: %s", exc)
            unreadable.append((str(cube), str(exc)))
            continue
        if image.frame is not None and image.frame >= len(held):
            raise EvaluationError(f"{where}: '{image.where}.frame' is {image.frame}, but {image.cube} holds "
                                  f"{len(held)} capture(s) (0..{len(held) - 1})")
        indices = range(len(held)) if image.frame is None else [image.frame]
        found = None  # the label file beside the cube, for captures without labels of their own
        if labels_path is None and not all(held[k].labelled for k in indices):
            found = None if cube.is_dir() else label_file_for(cube)
            if found is None:
                raise EvaluationError(f"{where}: {image.cube} carries no labels and '{image.where}.labels' is not "
                                      f"given (nor is a {cube.stem}{LABELS_SUFFIX}.* file beside it)")
        try:
            label_shape = {p: read_label_file(p).shape for p in (labels_path, found) if p is not None}
            for k in indices:
                used = labels_path or (None if held[k].labelled else found)
                if used is not None:
                    _check_label_shape(used, label_shape[used], cube, held[k].shape)
        except EvaluationError as exc:
            raise EvaluationError(f"{where}: '{image.where}': {exc}") from None
        for k in indices:
            used = labels_path or (None if held[k].labelled else found)
            name = _name(cube, root, k, len(held))
            if name in seen:
                raise EvaluationError(f"{where}: '{image.where}' lists {name} a second time")
            seen.add(name)
            entries.append(ImageEntry(name, cube, k, used))
    return entries, unreadable


__all__ = ["LABEL_SUFFIXES", "MANIFEST_FORMAT", "MANIFEST_VERSION", "OBJECT_MODES", "Dataset", "EvalObject",
           "ImageEntry", "LabelledImage", "ObjectMode", "ObjectRules", "label_file_for", "objects_of",
           "open_dataset", "read_label_file"]
