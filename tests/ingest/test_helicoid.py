"""HELICoiD-style capture folders: raw + white/dark references (+ gtMap) -> calibrated reflectance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samsa_stream.ingest.formats import capture_files, open_captures
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources import SourceError
from samsa_stream.settings import IngestSettings

from .builders import write_helicoid

WL = np.array([420.0, 560.0, 710.0])


def _capture_folder(folder: Path, labels: bool = True) -> tuple[Path, np.ndarray]:
    """Raw counts made from a known reflectance with per-column white/dark levels."""
    rng = np.random.default_rng(3)
    reflectance = np.round(rng.uniform(0, 1, (4, 5, 3)), 2)
    dark = np.broadcast_to(np.arange(5)[:, None] * 10 + 100, (5, 3))  # per detector column
    white = dark + 1000
    raw = np.round(dark + reflectance * 1000).astype(np.uint16)
    # Two white/dark lines with +-2 noise that cancels in the line average.
    white_lines = np.stack([white - 2, white + 2]).astype(np.uint16)
    dark_lines = np.stack([dark + 2, dark - 2]).astype(np.uint16)
    gt = np.arange(20).reshape(4, 5) % 3 if labels else None
    write_helicoid(folder, raw, white_lines, dark_lines, WL, gt)
    return folder, reflectance


def test_folder_calibrates_with_its_references(tmp_path: Path) -> None:
    folder, reflectance = _capture_folder(tmp_path / "004-02")
    (capture,) = list(open_captures(folder))
    assert capture.calibration == "raw" and capture.metadata["format"] == "helicoid"
    frame = Normalizer(IngestSettings())(capture, "s", 0, 0)
    np.testing.assert_allclose(frame.cube, reflectance, atol=1e-6)
    np.testing.assert_array_equal(frame.labels, np.arange(20).reshape(4, 5) % 3)
    assert frame.source["calibrated_with"] == "capture white/dark references"


def test_white_panel_reflectance_setting(tmp_path: Path) -> None:
    folder, reflectance = _capture_folder(tmp_path / "c")
    (capture,) = list(open_captures(folder))
    frame = Normalizer(IngestSettings(white_reflectance=0.5))(capture, "s", 0, 0)
    np.testing.assert_allclose(frame.cube, reflectance * 0.5, atol=1e-6)


def test_raw_header_inside_the_folder_reads_the_whole_capture(tmp_path: Path) -> None:
    folder, _ = _capture_folder(tmp_path / "c", labels=False)
    (capture,) = list(open_captures(folder / "raw.hdr"))
    assert capture.white is not None and capture.dark is not None and capture.labels is None


def test_a_recording_of_capture_folders_replays_in_name_order(tmp_path: Path) -> None:
    for name in ("020-01", "008-02", "008-01"):
        _capture_folder(tmp_path / "db" / name)
    assert [p.name for p in capture_files(tmp_path / "db")] == ["008-01", "008-02", "020-01"]
    assert len([c for c in open_captures(tmp_path / "db") if not isinstance(c, SourceError)]) == 3


def test_missing_reference_and_mismatched_label_map(tmp_path: Path) -> None:
    folder, _ = _capture_folder(tmp_path / "c")
    (folder / "darkReference.hdr").unlink()
    (error,) = list(open_captures(folder))
    assert "HELICoiD capture without darkReference.hdr" in str(error) and str(folder) in str(error)
    folder, _ = _capture_folder(tmp_path / "d")
    write_helicoid(folder, np.zeros((4, 5, 3), np.uint16), np.ones((1, 5, 3), np.uint16),
                   np.zeros((1, 5, 3), np.uint16), WL, labels=np.zeros((2, 2)))
    (error,) = list(open_captures(folder))
    assert "gtMap.hdr: label map is (2, 2, 1), expected 4 x 5 x 1" in str(error)


def test_reference_with_other_width_is_refused(tmp_path: Path) -> None:
    folder = write_helicoid(tmp_path / "c", np.zeros((4, 5, 3), np.uint16), np.ones((2, 6, 3), np.uint16),
                            np.zeros((2, 5, 3), np.uint16), WL)
    (error,) = list(open_captures(folder))
    assert "whiteReference.hdr: 6 samples x 3 bands, the raw cube has 5 x 3" in str(error)
