"""Damaged capture files: every read failure is a SourceError naming the file, and a replay goes on."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samsa_stream.ingest import formats
from samsa_stream.ingest.capture import Capture, SourceError
from samsa_stream.ingest.formats import open_captures, read_capture
from samsa_stream.ingest.formats.envi import write_envi
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources import ReplaySource
from samsa_stream.settings import IngestSettings

from .builders import write_helicoid, write_tivita

WL = np.array([500.0, 600.0, 700.0])


def _cube(value: float) -> np.ndarray:
    return np.full((2, 3, 3), value, np.float32)


def _damaged_recording(folder: Path) -> tuple[list[float], list[str]]:
    """Good captures of every format between damaged files; (the good values in order, the bad names)."""
    np.save(folder / "wavelengths_nm.npy", WL)  # shared by every .npy in the folder
    np.save(folder / "a_good.npy", _cube(0.1))
    (folder / "b_zero.npy").write_bytes(b"")
    write_envi(folder / "c_good.hdr", _cube(0.2), WL)
    np.save(folder / "d_truncated.npy", _cube(0.9))
    whole = (folder / "d_truncated.npy").read_bytes()
    (folder / "d_truncated.npy").write_bytes(whole[:len(whole) - 7])
    np.savez(folder / "e_good.npz", cube=_cube(0.3), wavelengths_nm=WL)
    (folder / "f_garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    write_tivita(folder / "g_good_SpecCube.dat", _cube(0.4))
    data = write_envi(folder / "h_truncated.hdr", _cube(0.9), WL)
    data.write_bytes(data.read_bytes()[:20])
    (folder / "i_short_SpecCube.dat").write_bytes(b"\x00\x00\x02")  # shorter than the 12-byte header
    np.savez(folder / "j_good.npz", cube=_cube(0.5), wavelengths_nm=WL)
    return [0.1, 0.2, 0.3, 0.4, 0.5], ["b_zero.npy", "d_truncated.npy", "f_garbage.npz", "h_truncated.img",
                                       "i_short_SpecCube.dat"]


@pytest.mark.parametrize("read", [
    lambda path: list(open_captures(path)),
    lambda path: list(ReplaySource(path).captures()),
], ids=["open_captures", "ReplaySource"])
def test_every_good_file_of_a_damaged_recording_is_played(tmp_path: Path, read: Callable[[Path], list]) -> None:
    good, bad = _damaged_recording(tmp_path)
    items = read(tmp_path)
    assert [float(c.cube[0, 0, 0]) for c in items if isinstance(c, Capture)] == pytest.approx(good)
    errors = [str(e) for e in items if isinstance(e, SourceError)]
    assert len(errors) == len(bad), errors
    for name, error in zip(bad, errors, strict=True):  # in name order, each once, each naming its file
        assert str(tmp_path / name) in error
    assert all(isinstance(item, Capture | SourceError) for item in items)


def test_a_zero_byte_npy_is_named_with_what_went_wrong(tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"")
    np.save(tmp_path / "x_wavelengths_nm.npy", WL)
    (error,) = list(open_captures(tmp_path / "x.npy"))
    assert isinstance(error, SourceError)
    assert f"{tmp_path / 'x.npy'}: not a readable .npy cube (No data left in file)" == str(error)
    with pytest.raises(SourceError, match="x.npy: not a readable .npy cube"):
        read_capture(tmp_path, 0)


def test_a_programming_error_in_a_reader_is_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.save(tmp_path / "x.npy", _cube(0.1))

    def broken(path: Path, options: object) -> list[Capture]:
        raise KeyError("a bug, not a bad file")

    monkeypatch.setitem(formats.READERS, ".npy", broken)
    with pytest.raises(KeyError, match="a bug"):
        list(open_captures(tmp_path / "x.npy"))


def test_read_capture_counts_bad_files_and_names_the_range(tmp_path: Path) -> None:
    good, bad = _damaged_recording(tmp_path)
    assert float(read_capture(tmp_path, 0).cube[0, 0, 0]) == pytest.approx(0.1)
    with pytest.raises(SourceError, match="b_zero.npy"):
        read_capture(tmp_path, 1)  # a bad file takes its place, so indexes match inspect's list
    assert float(read_capture(tmp_path, 9).cube[0, 0, 0]) == pytest.approx(0.5)
    with pytest.raises(SourceError, match=r"holds 10 capture\(s\) \(0..9\); there is no capture 10"):
        read_capture(tmp_path, 10)
    with pytest.raises(SourceError, match="capture index must be >= 0, got -1"):
        read_capture(tmp_path, -1)
    with pytest.raises(SourceError, match="no such file or folder"):
        read_capture(tmp_path / "nothing", 0)


# ---------------------------------------------------------------------------------------- fuzzing

FUZZ_WL = np.linspace(450.0, 900.0, 5)


def _fuzz_base(root: Path) -> dict[str, tuple[str, list[str]]]:
    """One small capture per format; {format: (what to open, the files it reads)}."""
    rng = np.random.default_rng(0)
    cube = rng.uniform(0.1, 0.9, (4, 6, 5)).astype(np.float32)
    counts = (cube * 4000).astype(np.uint16)
    write_envi(root / "e.hdr", cube, FUZZ_WL, interleave="bil")
    write_envi(root / "s.hdr", counts, FUZZ_WL, interleave="bip", byte_order="big", reflectance_scale_factor=4000,
               data_ignore_value=0)
    write_tivita(root / "t_SpecCube.dat", cube)
    np.save(root / "n.npy", cube)
    np.save(root / "n_wavelengths_nm.npy", FUZZ_WL)
    np.save(root / "n_labels.npy", np.zeros((4, 6), np.int32))
    np.savez(root / "z.npz", cube=cube, wavelengths_nm=FUZZ_WL, labels=np.zeros((4, 6), np.int32))
    np.savez_compressed(root / "c.npz", cubes=counts[None], wavelengths_nm=FUZZ_WL,
                        white=np.full((1, 6, 5), 4000, np.uint16), dark=np.zeros((1, 6, 5), np.uint16))
    write_helicoid(root / "h", counts, np.full((2, 6, 5), 4000, np.uint16), np.zeros((2, 6, 5), np.uint16), FUZZ_WL,
                   np.zeros((4, 6), np.int32))
    return {"envi": ("e.hdr", ["e.hdr", "e.img"]), "envi-scaled": ("s.hdr", ["s.hdr", "s.img"]),
            "tivita": ("t_SpecCube.dat", ["t_SpecCube.dat"]),
            "npy": ("n.npy", ["n.npy", "n_wavelengths_nm.npy", "n_labels.npy"]), "npz": ("z.npz", ["z.npz"]),
            "npz-compressed": ("c.npz", ["c.npz"]),
            "helicoid": ("h", ["h/raw.hdr", "h/raw", "h/whiteReference.hdr", "h/darkReference", "h/gtMap.hdr",
                               "h/gtMap"])}


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, list[str]]]]:
    root = tmp_path_factory.mktemp("fuzz-base")
    return root, _fuzz_base(root)


damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 7)), min_size=1, max_size=12)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["envi", "envi-scaled", "tivita", "npy", "npz", "npz-compressed", "helicoid"]),
       which=st.integers(0, 5), how=damage)
def test_damaged_captures_only_ever_give_source_errors(fuzz_base, kind: str, which: int, how: tuple) -> None:
    root, base = fuzz_base
    entry, files = base[kind]
    normalizer = Normalizer(IngestSettings(raw_counts="scale"))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "c"
        shutil.copytree(root, work)
        victim = work / files[which % len(files)]
        data = bytearray(victim.read_bytes())
        if how[0] == "truncate":
            data = data[:int(how[1] * len(data))]
        else:
            for where, bit in how[1]:
                if data:
                    data[min(int(where * len(data)), len(data) - 1)] ^= 1 << bit
        victim.write_bytes(bytes(data))
        for item in open_captures(work / entry):  # any other exception fails the test
            assert isinstance(item, Capture | SourceError)
            if isinstance(item, Capture):
                try:
                    frame = normalizer(item, "fuzz", 0, 0)
                except SourceError:
                    continue
                assert frame.cube.dtype == np.float32 and np.isfinite(frame.cube).all()
