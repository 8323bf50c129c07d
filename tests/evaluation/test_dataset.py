"""Labelled datasets: objects from label maps, label files, folders and manifests, built here in real formats."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import spectral.io.envi as spy_envi
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samsa_stream.evaluation import EvaluationError
from samsa_stream.evaluation.dataset import (
    EvalObject,
    ObjectRules,
    label_file_for,
    objects_of,
    open_dataset,
    read_label_file,
)
from samsa_stream.ingest.capture import SourceError
from samsa_stream.ingest.formats.envi import write_envi
from samsa_stream.ingest.normalize import bin_labels
from samsa_stream.settings import IngestSettings, Settings
from tests.ingest.builders import write_helicoid, write_tivita

WL = np.linspace(450.0, 700.0, 6)


def _cube(labels: np.ndarray, bands: int = 6) -> np.ndarray:
    """A reflectance cube whose spectrum encodes each pixel's label, so any misalignment shows."""
    base = np.linspace(0.2, 0.6, bands, dtype=np.float32)
    return (base[None, None, :] * (1 + 0.1 * labels[..., None])).astype(np.float32)


def _labels(h: int = 6, w: int = 8) -> np.ndarray:
    labels = np.zeros((h, w), np.int32)
    labels[0:2, 0:3] = 1
    labels[3:6, 4:8] = 2
    return labels


def _npz(path: Path, labels: np.ndarray | None, count: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cubes = np.stack([_cube(labels if labels is not None else _labels())] * count)
    members = {"cubes": cubes} if count > 1 else {"cube": cubes[0]}
    if labels is not None:
        members["labels"] = labels
    np.savez(path, wavelengths_nm=WL, **members)
    return path


def _envi(path: Path, labels: np.ndarray, label_file: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    spy_envi.save_image(str(path), _cube(labels), metadata={"wavelength": list(WL), "wavelength units": "nm"})
    if label_file is not None:
        cv2.imwrite(str(path.with_name(path.stem + "_labels.png")), label_file.astype(np.uint8))
    return path


# ------------------------------------------------------------------------------------------ objects


def _scene() -> np.ndarray:
    labels = np.zeros((6, 8), np.int32)
    labels[0:2, 0:2] = 1  # blob A
    labels[2, 2] = 1  # touches A at a corner: the same 8-connected component
    labels[4:6, 5:8] = 1  # blob B
    labels[0:3, 5:7] = 2
    labels[5, 0] = 3  # one pixel
    labels[3, 3] = 255  # unlabelled
    return labels


def test_components_and_classes() -> None:
    labels = _scene()
    rules = ObjectRules(skip=frozenset({0, 255}), classes={1: "tumour"})
    objects = objects_of(labels, rules)
    assert [(o.key, o.class_value, o.class_name, o.area) for o in objects] == [
        ("c1-k0", 1, "tumour", 5), ("c1-k1", 1, "tumour", 6), ("c2-k0", 2, "class 2", 6), ("c3-k0", 3, "class 3", 1)]
    assert objects[0].mask[2, 2] and objects[0].mask[0, 0] and not objects[0].mask[4, 5]
    classes = objects_of(labels, ObjectRules(mode="classes", skip=frozenset({0, 255})))
    assert [(o.key, o.area) for o in classes] == [("c1", 11), ("c2", 6), ("c3", 1)]
    np.testing.assert_array_equal(classes[0].mask, labels == 1)


def test_min_area_and_skip() -> None:
    labels = _scene()
    # Keys stay put when a smaller component before them is dropped.
    big = objects_of(labels, ObjectRules(min_area_px=6, skip=frozenset({0, 255})))
    assert [o.key for o in big] == ["c1-k1", "c2-k0"]
    assert [o.key for o in objects_of(labels, ObjectRules(mode="classes", min_area_px=7, skip=frozenset({0, 255})))] \
        == ["c1"]
    # Default skip is {0}: 255 is an object then; skipping 1 leaves the others.
    assert "c255-k0" in [o.key for o in objects_of(labels, ObjectRules())]
    assert [o.key for o in objects_of(labels, ObjectRules(skip=frozenset({0, 1, 255})))] == ["c2-k0", "c3-k0"]
    # An image with nothing left has no objects (and is still a valid image).
    assert objects_of(np.zeros((3, 3), np.int32), ObjectRules()) == []


def test_rules_are_checked_and_described() -> None:
    with pytest.raises(EvaluationError, match="object mode 'blobs'"):
        ObjectRules(mode="blobs")  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match="min_area_px"):
        ObjectRules(min_area_px=0)
    with pytest.raises(EvaluationError, match="skip"):
        ObjectRules(skip=frozenset({"x"}))  # type: ignore[arg-type]
    rules = ObjectRules(mode="classes", min_area_px=3, skip=[255, 0], classes={2: "vein"})  # type: ignore[arg-type]
    assert rules.skip == frozenset({0, 255})
    assert rules == ObjectRules(mode="classes", min_area_px=3, skip=frozenset({0, 255}), classes={2: "vein"})
    assert len({rules, ObjectRules(mode="classes", min_area_px=3, skip=frozenset({0, 255}), classes={2: "vein"})}) == 1
    assert rules.class_name(2) == "vein" and rules.class_name(7) == "class 7"
    assert rules.describe() == {"objects": "classes", "min_area_px": 3, "skip": [0, 255], "classes": {"2": "vein"}}
    with pytest.raises(EvaluationError, match=r"\(H, W\) integers"):
        objects_of(np.zeros((2, 2, 2), np.int32), rules)


@hsettings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int32, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 3)))
def test_components_partition_each_class(labels: np.ndarray) -> None:
    objects = objects_of(labels, ObjectRules())
    kernel = np.ones((3, 3), np.uint8)
    for value in range(1, 4):
        mine = [o for o in objects if o.class_value == value]
        assert [o.key for o in mine] == [f"c{value}-k{k}" for k in range(len(mine))]
        union = np.zeros(labels.shape, bool)
        firsts = []
        for obj in mine:
            assert not (union & obj.mask).any()  # disjoint
            union |= obj.mask
            firsts.append(int(np.flatnonzero(obj.mask.ravel())[0]))
            # Maximal: nothing of the same class touches it (8 neighbours) outside it.
            grown = cv2.dilate(obj.mask.astype(np.uint8), kernel).astype(bool)
            assert not (grown & (labels == value) & ~obj.mask).any()
        np.testing.assert_array_equal(union, labels == value)
        assert firsts == sorted(firsts)  # raster order of the first pixel
    classes = objects_of(labels, ObjectRules(mode="classes"))
    assert [o.class_value for o in classes] == sorted(set(np.unique(labels).tolist()) - {0})


# -------------------------------------------------------------------------------------- label files


def test_label_file_formats(tmp_path: Path) -> None:
    labels = _labels().astype(np.uint16)
    labels[0, 0] = 300
    cv2.imwrite(str(tmp_path / "a.png"), labels)  # 16-bit png
    cv2.imwrite(str(tmp_path / "b.tif"), labels)
    cv2.imwrite(str(tmp_path / "c.bmp"), np.repeat(_labels().astype(np.uint8)[..., None], 3, axis=2))
    np.save(tmp_path / "d.npy", labels.astype(np.int64))
    write_envi(tmp_path / "e.hdr", labels[..., None])
    for name in ("a.png", "b.tif", "d.npy", "e.hdr"):
        got = read_label_file(tmp_path / name)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, labels, err_msg=name)
    np.testing.assert_array_equal(read_label_file(tmp_path / "c.bmp"), _labels())


def test_label_files_that_are_not_label_maps(tmp_path: Path) -> None:
    colour = np.zeros((4, 5, 3), np.uint8)
    colour[..., 2] = 9
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    write_envi(tmp_path / "two.hdr", np.zeros((4, 5, 2), np.uint8))
    np.save(tmp_path / "frac.npy", np.full((4, 5), 0.5))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "x.jpg").write_bytes(b"")
    cases = {"colour.png": "channels differ", "two.hdr": "one band", "frac.npy": "whole numbers",
             "bad.png": "not a readable png", "x.jpg": "no label reader for '.jpg'", "gone.png": "cannot be read"}
    for name, message in cases.items():
        with pytest.raises(EvaluationError, match=message) as error:
            read_label_file(tmp_path / name)
        assert name in str(error.value)


def test_label_file_convention(tmp_path: Path) -> None:
    cube = tmp_path / "x.img.hdr"
    assert label_file_for(cube) is None
    (tmp_path / "x_labels.npy").write_bytes(b"")
    assert label_file_for(cube) == tmp_path / "x_labels.npy"
    (tmp_path / "x.img_labels.png").write_bytes(b"")
    assert label_file_for(cube) == tmp_path / "x.img_labels.png"  # the full stem first, png before npy


# ------------------------------------------------------------------------------ formats and loading


def test_npz_with_labels(tmp_path: Path) -> None:
    labels = _labels()
    path = _npz(tmp_path / "rec.npz", labels, count=2)
    dataset = open_dataset(path, Settings())
    assert [e.name for e in dataset.entries] == ["rec.npz#0", "rec.npz#1"]
    assert all(e.labels_path is None for e in dataset.entries) and dataset.root == tmp_path
    image = dataset.load(1)
    assert image.name == "rec.npz#1" and image.frame.frame_id == 1
    np.testing.assert_array_equal(image.labels, labels)
    assert image.labels.dtype == np.int32 and image.frame.labels is image.labels
    np.testing.assert_allclose(image.frame.cube, _cube(labels))
    assert [o.key for o in image.objects] == ["c1-k0", "c2-k0"]


def test_npy_with_labels_npy(tmp_path: Path) -> None:
    labels = _labels()
    np.save(tmp_path / "x.npy", _cube(labels))
    np.save(tmp_path / "x_wavelengths_nm.npy", WL)
    np.save(tmp_path / "x_labels.npy", labels.astype(np.uint8))
    dataset = open_dataset(tmp_path, Settings())
    assert [(e.name, e.labels_path) for e in dataset.entries] == [("x.npy", None)]
    np.testing.assert_array_equal(dataset.load(0).labels, labels)


def test_envi_with_label_png(tmp_path: Path) -> None:
    labels = _labels()
    path = _envi(tmp_path / "scene.hdr", labels, labels)
    dataset = open_dataset(path, Settings())
    (entry,) = dataset.entries
    assert entry.name == "scene.hdr" and entry.labels_path == tmp_path / "scene_labels.png"
    image = dataset.load(0)
    np.testing.assert_array_equal(image.labels, labels)
    np.testing.assert_allclose(image.frame.cube, _cube(labels))


def test_tivita_label_png_is_upright(tmp_path: Path) -> None:
    labels = np.zeros((4, 6), np.int32)
    labels[0, 1:4] = 1  # top row: the stored y axis is flipped, so a wrong orientation would move it
    labels[1:4, 5] = 2  # right column
    image = np.linspace(0.2, 0.6, 5, dtype=np.float32)[None, None] * (1 + 0.1 * labels[..., None])
    cube = write_tivita(tmp_path / "a_SpecCube.dat", image.astype(np.float32))
    cv2.imwrite(str(tmp_path / "a_SpecCube_labels.png"), labels.astype(np.uint8))
    dataset = open_dataset(cube, Settings())
    loaded = dataset.load(0)
    np.testing.assert_array_equal(loaded.labels, labels)
    np.testing.assert_allclose(loaded.frame.cube, image, rtol=1e-6)
    # A label map in the stored orientation (W x H) is refused, naming both shapes.
    cv2.imwrite(str(tmp_path / "a_SpecCube_labels.png"), np.rot90(labels, -1).astype(np.uint8))
    with pytest.raises(EvaluationError, match="6 x 4.*4 x 6"):
        dataset.load(0)  # changed after listing: caught on loading
    with pytest.raises(EvaluationError, match="6 x 4.*4 x 6"):
        open_dataset(cube, Settings())


def test_helicoid_folder_with_gtmap(tmp_path: Path) -> None:
    wl = np.array([420.0, 560.0, 710.0])
    dark = np.full((1, 5, 3), 100, np.uint16)
    white = np.full((1, 5, 3), 1100, np.uint16)
    raw = np.full((4, 5, 3), 600, np.uint16)
    gt = np.zeros((4, 5), np.uint8)
    gt[1:3, 1:4] = 2
    write_helicoid(tmp_path / "brain" / "004-02", raw, white, dark, wl, gt)
    write_helicoid(tmp_path / "brain" / "005-01", raw, white, dark, wl)  # no gtMap
    single = open_dataset(tmp_path / "brain" / "004-02", Settings())
    assert [e.name for e in single.entries] == ["004-02"] and single.root == tmp_path / "brain"
    image = single.load(0)
    np.testing.assert_array_equal(image.labels, gt)
    np.testing.assert_allclose(image.frame.cube, 0.5)  # calibrated with its references
    folder = open_dataset(tmp_path / "brain", Settings())
    assert [e.name for e in folder.entries] == ["004-02"] and folder.skipped_unlabelled == 1


def test_folder_skips_unlabelled_and_unreadable(tmp_path: Path) -> None:
    labels = _labels()
    _npz(tmp_path / "a" / "one.npz", labels)
    _npz(tmp_path / "a" / "two.npz", None, count=3)  # three captures without labels
    _envi(tmp_path / "b" / "scene.hdr", labels, labels)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    dataset = open_dataset(tmp_path, Settings(), min_area_px=7)
    assert [e.name for e in dataset.entries] == ["a/one.npz", "b/scene.hdr"]
    assert dataset.skipped_unlabelled == 3 and len(dataset) == 2
    ((bad, error),) = dataset.unreadable
    assert bad.endswith("broken.npz") and "broken.npz" in error
    described = json.loads(json.dumps(dataset.describe()))
    assert described["name"] == tmp_path.name and described["skipped_unlabelled"] == 3
    assert [i["name"] for i in described["images"]] == ["a/one.npz", "b/scene.hdr"]
    assert described["images"][1]["labels"].endswith("scene_labels.png")
    assert described["rules"] == {"objects": "components", "min_area_px": 7, "skip": [0], "classes": {}}
    assert described["unreadable"][0]["path"] == bad
    assert [o.key for o in dataset.load(1).objects] == ["c2-k0"]  # class 1 (6 px) is below 7 px


def test_folder_without_labels(tmp_path: Path) -> None:
    _npz(tmp_path / "one.npz", None)
    _npz(tmp_path / "two.npz", None)
    with pytest.raises(EvaluationError, match=r"no capture with labels \(2 capture\(s\) without labels"):
        open_dataset(tmp_path, Settings())
    with pytest.raises(EvaluationError, match="no such file"):
        open_dataset(tmp_path / "nothing", Settings())


def test_spatial_binning_keeps_labels_aligned(tmp_path: Path) -> None:
    labels = np.zeros((8, 10), np.int32)
    labels[0:4, 2:6] = 1
    labels[6:8, 0:10] = 2
    labels[0, 8] = 3  # one pixel off the block centres (row 1, column 9 of its block): binning drops it
    path = _envi(tmp_path / "scene.hdr", labels, labels)
    settings = Settings(ingest=IngestSettings(spatial_binning=2))
    image = open_dataset(path, settings).load(0)
    assert image.labels.shape == image.frame.cube.shape[:2] == (4, 5)
    np.testing.assert_array_equal(image.labels, bin_labels(labels, 2))
    # Where the binned label is 1 or 2, the binned cube holds that label's spectrum (the blocks are pure).
    for value in (1, 2):
        np.testing.assert_allclose(image.frame.cube[image.labels == value],
                                   _cube(np.full((1, 1), value))[0, 0][None].repeat((image.labels == value).sum(), 0),
                                   rtol=1e-6)
    assert [o.key for o in image.objects] == ["c1-k0", "c2-k0"]


def test_load_raises_source_error_for_a_capture_it_cannot_use(tmp_path: Path) -> None:
    labels = _labels()
    np.savez(tmp_path / "raw.npz", cube=np.ones((6, 8, 6), np.uint16), wavelengths_nm=WL, labels=labels)
    dataset = open_dataset(tmp_path / "raw.npz", Settings())
    with pytest.raises(SourceError, match="no white/dark references"):
        dataset.load(0)
    path = _npz(tmp_path / "ok.npz", labels)
    dataset = open_dataset(path, Settings())
    path.write_bytes(path.read_bytes()[:100])  # damaged after listing
    with pytest.raises(SourceError, match="ok.npz"):
        dataset.load(0)


# ----------------------------------------------------------------------------------------- manifests


TOML = """
format = "samsa-stream/eval-dataset"
version = 1
name = "brain-sample"
objects = "classes"
min_area_px = 10
skip = [0, 255]
[classes]
1 = "tumour"
2 = "healthy"
[[images]]
cube = "p01/cube.hdr"
labels = "p01/gt.png"
[[images]]
cube = "rec.npz"
frame = 1
[[images]]
cube = "p02/scene.hdr"
"""


def _manifest_tree(root: Path) -> None:
    labels = _labels()
    _envi(root / "p01" / "cube.hdr", labels)
    cv2.imwrite(str(root / "p01" / "gt.png"), labels.astype(np.uint8))
    _npz(root / "rec.npz", labels, count=3)
    _envi(root / "p02" / "scene.hdr", labels, labels)  # its label file by convention


def test_toml_manifest(tmp_path: Path) -> None:
    _manifest_tree(tmp_path)
    (tmp_path / "set.toml").write_text(TOML)
    dataset = open_dataset(tmp_path / "set.toml", Settings())
    assert dataset.name == "brain-sample" and dataset.root == tmp_path
    assert [(e.name, e.index) for e in dataset.entries] == [("p01/cube.hdr", 0), ("rec.npz#1", 1),
                                                            ("p02/scene.hdr", 0)]
    assert dataset.entries[0].labels_path == tmp_path / "p01" / "gt.png"
    assert dataset.entries[1].labels_path is None
    assert dataset.entries[2].labels_path == tmp_path / "p02" / "scene_labels.png"
    assert dataset.rules == ObjectRules(mode="classes", min_area_px=10, skip=frozenset({0, 255}),
                                        classes={1: "tumour", 2: "healthy"})
    image = dataset.load(0)
    assert [(o.key, o.class_name) for o in image.objects] == [("c2", "healthy")]  # class 1 has 6 px < 10
    np.testing.assert_array_equal(dataset.load(1).labels, _labels())
    # Command-line values beat the manifest's; the class names stay.
    overridden = open_dataset(tmp_path / "set.toml", Settings(), mode="components", min_area_px=1, skip=[])
    assert overridden.rules == ObjectRules(mode="components", min_area_px=1, skip=frozenset(),
                                           classes={1: "tumour", 2: "healthy"})
    assert [o.key for o in overridden.load(0).objects] == ["c0-k0", "c1-k0", "c2-k0"]


def test_json_manifest_as_written_elsewhere(tmp_path: Path) -> None:
    _npz(tmp_path / "tiny-0000.npz", _labels())
    (tmp_path / "tiny.json").write_text(
        '{"format": "samsa-stream/eval-dataset", "version": 1, "name": "tiny", "objects": "classes", '
        '"min_area_px": 1, "skip": [0], "classes": {"1": "blood"}, "images": [{"cube": "tiny-0000.npz", '
        '"labels": null}]}')
    dataset = open_dataset(tmp_path / "tiny.json", Settings())
    assert dataset.name == "tiny" and [(e.name, e.labels_path) for e in dataset.entries] == [("tiny-0000.npz", None)]
    assert [(o.key, o.class_name) for o in dataset.load(0).objects] == [("c1", "blood"), ("c2", "class 2")]


def test_manifest_may_point_outside_its_folder(tmp_path: Path) -> None:
    _npz(tmp_path / "data" / "x.npz", _labels())
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "m.toml").write_text('[[images]]\ncube = "../data/x.npz"\n')
    dataset = open_dataset(tmp_path / "sets" / "m.toml", Settings())
    assert dataset.name == "m" and [e.name for e in dataset.entries] == ["../data/x.npz"]
    assert dataset.rules == ObjectRules()
    np.testing.assert_array_equal(dataset.load(0).labels, _labels())


@pytest.mark.parametrize(("text", "message"), [
    ('colour = 1\n[[images]]\ncube = "rec.npz"', "unknown key.*'colour'"),
    ('[[images]]\ncube = "rec.npz"\nbogus = 2', r"'images\[0\].bogus'"),
    ('objects = "blobs"\n[[images]]\ncube = "rec.npz"', "'objects' is 'blobs'"),
    ('min_area_px = "10"\n[[images]]\ncube = "rec.npz"', "'min_area_px' must be an integer"),
    ('min_area_px = 0\n[[images]]\ncube = "rec.npz"', "'min_area_px' must be >= 1"),
    ('skip = [0, "x"]\n[[images]]\ncube = "rec.npz"', "'skip' holds label values"),
    ('[classes]\nfoo = "a"\n[[images]]\ncube = "rec.npz"', "'classes' key 'foo'"),
    ('format = "other"\n[[images]]\ncube = "rec.npz"', "'format' is 'other'"),
    ('version = 2\n[[images]]\ncube = "rec.npz"', "'version' is 2"),
    ('name = "x"', "'images' is missing"),
    ('[[images]]\ncube = "gone.npz"', r"'images\[0\].cube' gone.npz: no such file"),
    ('[[images]]\ncube = "rec.npz"\nlabels = "gt.png"', r"'images\[0\].labels' gt.png: no such file"),
    ('[[images]]\ncube = "rec.npz"\nframe = 3', r"'images\[0\].frame' is 3, but rec.npz holds 3 capture"),
    ('[[images]]\ncube = "rec.npz"\nframe = -1', "must be >= 0"),
    ('[[images]]\ncube = "plain.npz"', "plain.npz carries no labels"),
    ('[[images]]\ncube = "rec.npz"\nlabels = "wrong.png"', "wrong.png: label map is 3 x 4.*is 6 x 8"),
    ('[[images]]\ncube = "rec.npz"\n[[images]]\ncube = "rec.npz"\nframe = 2', r"lists rec.npz#2 a second time"),
    ('[[images]]\nlabels = "wrong.png"', r"'images\[0\].cube' is missing"),
    ('images = "rec.npz"', "'images' must be a list"),
    ("[[images", "not valid TOML"),
])
def test_manifest_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    _npz(tmp_path / "rec.npz", _labels(), count=3)
    _npz(tmp_path / "plain.npz", None)
    cv2.imwrite(str(tmp_path / "wrong.png"), np.zeros((3, 4), np.uint8))
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(EvaluationError, match=message) as error:
        open_dataset(tmp_path / "m.toml", Settings())
    assert "m.toml" in str(error.value)


def test_json_manifest_errors(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(EvaluationError, match="a manifest is a table"):
        open_dataset(tmp_path / "a.json", Settings())
    (tmp_path / "b.json").write_text('{"images": [{"cube": 3}]}')
    with pytest.raises(EvaluationError, match=r"'images\[0\].cube' must be a string"):
        open_dataset(tmp_path / "b.json", Settings())
    (tmp_path / "c.json").write_text('{"classes": {"1": 5}, "images": [{"cube": "x.npz"}]}')
    with pytest.raises(EvaluationError, match="'classes' name of 1 must be a string"):
        open_dataset(tmp_path / "c.json", Settings())
    (tmp_path / "d.json").write_text("{")
    with pytest.raises(EvaluationError, match="not valid JSON"):
        open_dataset(tmp_path / "d.json", Settings())


def test_manifest_keeps_going_past_a_damaged_cube(tmp_path: Path) -> None:
    _npz(tmp_path / "ok.npz", _labels())
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    (tmp_path / "m.json").write_text(json.dumps({"images": [{"cube": "bad.npz"}, {"cube": "ok.npz"}]}))
    dataset = open_dataset(tmp_path / "m.json", Settings())
    assert [e.name for e in dataset.entries] == ["ok.npz"]
    assert dataset.describe()["unreadable"][0]["path"].endswith("bad.npz")


def test_eval_object_area() -> None:
    mask = np.zeros((3, 3), bool)
    mask[0, :2] = True
    assert EvalObject("c1", 1, "class 1", mask).area == 2


def test_manifest_label_file_wins_and_null_is_absent(tmp_path: Path) -> None:
    _npz(tmp_path / "x.npz", _labels())
    other = np.full((6, 8), 4, np.uint8)
    cv2.imwrite(str(tmp_path / "other.tif"), other)
    (tmp_path / "m.json").write_text(json.dumps({
        "format": None, "version": None, "name": None, "objects": None, "skip": None, "classes": None,
        "images": [{"cube": "x.npz", "labels": "other.tif", "frame": None}, {"cube": "x.npz", "frame": 0}]}))
    with pytest.raises(EvaluationError, match="lists x.npz a second time"):
        open_dataset(tmp_path / "m.json", Settings())
    (tmp_path / "m.json").write_text(json.dumps({
        "format": None, "version": None, "name": None, "objects": None, "skip": None, "classes": None,
        "images": [{"cube": "x.npz", "labels": "other.tif", "frame": None}]}))
    dataset = open_dataset(tmp_path / "m.json", Settings())
    assert dataset.name == "m" and dataset.rules == ObjectRules()
    image = dataset.load(0)
    np.testing.assert_array_equal(image.labels, other)
    assert [o.key for o in image.objects] == ["c4-k0"]


def test_a_folder_holding_a_manifest_means_its_manifest(tmp_path: Path) -> None:
    labels = np.zeros((8, 9), np.int32)
    labels[2:5, 2:5] = 4
    np.savez(tmp_path / "a.npz", cube=np.full((8, 9, 5), 0.3, np.float32), wavelengths_nm=np.arange(5) * 10.0 + 500,
             labels=labels)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"name": "ward", "objects": "classes", "classes": {"4": "tumour"}, "images": [{"cube": "a.npz"}]}))
    dataset = open_dataset(tmp_path, Settings())
    assert dataset.name == "ward" and dataset.rules.mode == "classes"
    assert [o.class_name for o in dataset.load(0).objects] == ["tumour"]
